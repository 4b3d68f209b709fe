"""The Triton fleet this control plane drives."""
