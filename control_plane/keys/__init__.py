"""API keys: random secrets stored hashed, looked up by prefix."""
