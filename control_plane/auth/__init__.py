"""Authentication (API keys, admin token) and role checks."""
