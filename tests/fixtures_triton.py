"""Fixtures around the real bundled Triton server (filled in with the Triton process manager)."""
