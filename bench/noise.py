"""A noisy tenant and a crowd of slow clients, meant to run in their own process (stdlib + uvloop).

    python -m bench.noise --port P --key K --model M --duration 20 [--slow 500] [--big 2] [--bombs 1]
                          [--nested 1]

- `--slow N` connections that trickle a request's headers one byte at a time (slowloris), reconnecting
  whenever the server closes them;
- `--big N` loops sending 30 MB /v1/predict bodies (a plausible-looking batch far over the model's
  limits) and 30 MB KServe v2 JSON bodies;
- `--bombs N` loops sending a 1 MB gzip body that inflates to 1 GiB;
- `--nested N` loops sending 240 KiB KServe v2 JSON bodies of 13k nested one-value rows
  (`[[[[[[[[0.5]]]]]]]]`, a shape the model refuses): small enough to be checked on the event loop by
  size, but 100k lists to parse.
The loops send back to back, as a client library would: each waits for its answer, and for as long as a
Retry-After says (a flood that ignores it is what rate limits, CP_TENANT_RATE_LIMIT, are for).
Prints one JSON object: the answers each kind got, by status, and how many slow connections the
server closed.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import time
from collections import Counter
from typing import Any

import uvloop

SLOW_HEAD = b"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: noisy\r\nX-Padding: "


def _predict_body(size: int) -> bytes:
    row = "[0.5,-1.0,2.0,0.25],"
    rows = size // len(row)
    return ('{"inputs":{"x":[' + row * (rows - 1) + row[:-1] + "]}}").encode()


def _v2_body(size: int) -> bytes:
    values = size // 4
    return b'{"inputs":[{"name":"x","shape":[%d,4],"datatype":"FP32","data":[%s0]}]}' % (
        values // 4,
        b"0," * (values - 1),
    )


def _nested_body(size: int) -> bytes:
    row = b"[[[[[[[[0.5]]]]]]]],"
    rows = size // len(row)
    return b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[%s]}]}' % (row * rows)[:-1]


def _bomb() -> bytes:
    out = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # 64 MiB of zeros -> ~64 KB
    return out * 16  # concatenated gzip members: ~1 MB that inflates to 1 GiB


async def _exchange(port: int, head: bytes, body: bytes, answers: Counter[str], kind: str) -> float:
    """One request; the Retry-After it was answered with (0 if none)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        answers[f"{kind}:connect-failed"] += 1
        return 1.0
    try:
        writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body))
        writer.write(body)
        drain = asyncio.ensure_future(writer.drain())
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=60)
        drain.cancel()
        answers[f"{kind}:{answer.split(b' ')[1].decode()}"] += 1
        for line in answer.lower().split(b"\r\n"):
            if line.startswith(b"retry-after:"):
                return float(line.split(b":")[1])
        return 0.0
    except (OSError, RuntimeError, TimeoutError, IndexError, asyncio.IncompleteReadError):
        answers[f"{kind}:closed-or-error"] += 1
        return 0.0
    finally:
        writer.close()


async def _sender(
    port: int, kind: str, head: bytes, body: bytes, answers: Counter[str], until: float
) -> None:
    while time.monotonic() < until:  # back to back, but waiting as long as Retry-After says
        await asyncio.sleep(await _exchange(port, head, body, answers, kind))


async def _slow_client(port: int, model: str, closed: Counter[str], until: float) -> None:
    head = SLOW_HEAD.replace(b"{model}", model.encode())
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        try:
            writer.write(head)
            while time.monotonic() < until and not reader.at_eof():
                writer.write(b"a")
                await writer.drain()
                try:
                    await asyncio.wait_for(reader.read(65536), timeout=1.0)
                except TimeoutError:
                    continue
            closed["by-server"] += 1 if reader.at_eof() else 0
        except (OSError, RuntimeError):  # reset, or written to after the server closed
            closed["by-server"] += 1
        finally:
            writer.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """All the noise at once, for `args.duration` seconds."""
    until = time.monotonic() + args.duration
    answers: Counter[str] = Counter()
    closed: Counter[str] = Counter()
    auth = f"Authorization: Bearer {args.key}\r\n".encode()
    predict = b"POST /v1/predict/%s HTTP/1.1\r\nHost: noisy\r\nContent-Type: application/json\r\n%s" % (
        args.model.encode(),
        auth,
    )
    infer = b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: noisy\r\nContent-Type: application/json\r\n%s" % (
        args.model.encode(),
        auth,
    )
    big_predict, big_v2, bomb = _predict_body(30 << 20), _v2_body(30 << 20), _bomb()
    nested = _nested_body(240 << 10)
    tasks = [_slow_client(args.port, args.model, closed, until) for _ in range(args.slow)]
    for _ in range(args.big):
        tasks.append(_sender(args.port, "predict-30MB", predict, big_predict, answers, until))
        tasks.append(_sender(args.port, "v2-30MB", infer, big_v2, answers, until))
    for _ in range(args.bombs):
        tasks.append(
            _sender(args.port, "gzip-bomb", infer + b"Content-Encoding: gzip\r\n", bomb, answers, until)
        )
    for _ in range(args.nested):
        tasks.append(_sender(args.port, "nested-240KB", infer, nested, answers, until))
    await asyncio.gather(*tasks)
    return {"answers": dict(sorted(answers.items())), "slow_closed_by_server": closed["by-server"]}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, make noise, print what came back."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--big", type=int, default=1)
    parser.add_argument("--bombs", type=int, default=1)
    parser.add_argument("--nested", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(uvloop.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
