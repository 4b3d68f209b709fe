"""What C++ protobuf (libprotobuf, the parser Triton uses) reads from ModelInferRequest messages.

Run by Debian's /usr/bin/python3 with its python3-protobuf in the cpp backend (not the project's venv,
whose protobuf is upb). Reads JSON lines from stdin: first {"files": [hex FileDescriptorProto, ...]},
then {"message": hex} each; writes one JSON line per message: what the parser read, or its error.
"""

import json
import os
import sys

os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "cpp"

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal import api_implementation

SHARED_MEMORY = {"shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"}


def main() -> None:
    if api_implementation.Type() != "cpp":
        raise SystemExit(f"protobuf runs the {api_implementation.Type()} backend here, not cpp")
    lines = iter(sys.stdin)
    pool = descriptor_pool.DescriptorPool()
    for file in json.loads(next(lines))["files"]:
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(bytes.fromhex(file)))
    request_type = pool.FindMessageTypeByName("inference.ModelInferRequest")
    cls = message_factory.MessageFactory(pool).GetPrototype(request_type)
    for line in lines:
        data = bytes.fromhex(json.loads(line)["message"])
        try:
            msg = cls.FromString(data)
        except Exception as exc:  # any refusal: Triton would refuse the request
            print(json.dumps({"error": str(exc) or type(exc).__name__}), flush=True)
            continue
        keys = set(msg.parameters)
        for tensor in list(msg.inputs) + list(msg.outputs):
            keys |= set(tensor.parameters)
        print(
            json.dumps(
                {
                    "name": msg.model_name,
                    "version": msg.model_version,
                    "inputs": [tensor.name for tensor in msg.inputs],
                    "shared_memory": sorted(keys & SHARED_MEMORY),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
