"""Tenants: the unit of isolation."""
