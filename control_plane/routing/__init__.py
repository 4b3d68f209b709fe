"""Tenant + model + alias -> Triton model name, held in memory and refreshed on registry changes."""
