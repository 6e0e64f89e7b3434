"""The model repository: models by name and version, their states, loading and reloading."""
