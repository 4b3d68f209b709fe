"""Control plane for a fleet of NVIDIA Triton Inference Servers."""

__version__ = "0.1.0"
