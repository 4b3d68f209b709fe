"""Audit trail of every management change."""
