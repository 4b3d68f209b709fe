"""The inference data plane: KServe v2 HTTP and gRPC proxies in front of Triton."""
