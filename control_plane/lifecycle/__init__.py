"""Model version lifecycle: promotion and rollback, keep-warm, canary traffic and shadow mirroring."""
