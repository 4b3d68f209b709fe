"""Model signatures, Triton config.pbtxt generation (through Triton's protobuf) and artifact checks."""
