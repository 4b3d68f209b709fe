"""Model residency: a memory budget per Triton instance, measured sizes, on-demand loads, eviction."""
