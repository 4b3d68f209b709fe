// gRPC calls made by grpc-js (Node's own HTTP/2, not gRPC's C core) against the data plane's gRPC port.
// Messages are serialized by the Python test (tritonclient's protos) and passed through as bytes, so what
// this checks is grpc-js's framing, flow control, metadata, deadlines and cancellation against ours.
//
// stdin: {"target": "host:port", "steps": [{"id", "method", "body" (base64), "metadata": {k: v},
//          "repeat" (calls at once, default 1), "deadline_ms", "cancel_after_ms"}]}
// stdout: {"<id>": [{"code", "details", "body" (base64 or null), "trailers": {k: v}}, ...]}
// Steps run one after the other, on one channel; a step's repeated calls run at the same time.
"use strict";

const grpc = require("@grpc/grpc-js");

function readStdin() {
  return new Promise((resolve) => {
    const chunks = [];
    process.stdin.on("data", (chunk) => chunks.push(chunk));
    process.stdin.on("end", () => resolve(JSON.parse(Buffer.concat(chunks).toString("utf8"))));
  });
}

function call(client, step) {
  return new Promise((resolve) => {
    const metadata = new grpc.Metadata();
    for (const [key, value] of Object.entries(step.metadata || {})) metadata.set(key, value);
    const options = {};
    if (step.deadline_ms) options.deadline = new Date(Date.now() + step.deadline_ms);
    let trailers = {};
    const pending = client.makeUnaryRequest(
      step.method,
      (body) => body,
      (bytes) => bytes,
      Buffer.from(step.body, "base64"),
      metadata,
      options,
      (error, response) => {
        const outcome = error
          ? { code: error.code, details: error.details, body: null }
          : { code: 0, details: "", body: response.toString("base64") };
        setImmediate(() => resolve({ ...outcome, trailers }));
      },
    );
    pending.on("status", (status) => {
      trailers = Object.fromEntries(
        Object.entries(status.metadata.getMap()).map(([k, v]) => [k, String(v)]),
      );
    });
    if (step.cancel_after_ms) setTimeout(() => pending.cancel(), step.cancel_after_ms);
  });
}

async function main() {
  const plan = await readStdin();
  const client = new grpc.Client(plan.target, grpc.credentials.createInsecure(), {
    "grpc.max_receive_message_length": -1,
    "grpc.max_send_message_length": -1,
  });
  const report = {};
  for (const step of plan.steps) {
    const calls = Array.from({ length: step.repeat || 1 }, () => call(client, step));
    report[step.id] = await Promise.all(calls);
  }
  client.close();
  process.stdout.write(JSON.stringify(report));
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error));
  process.exit(1);
});
