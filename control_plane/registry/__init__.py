"""Registry of models and versions: creation, upload, detail, deletion, aliases."""
