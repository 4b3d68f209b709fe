"""Registry database: typed models, engine/session factory, migrations."""
