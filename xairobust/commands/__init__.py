"""CLI commands beyond `train`: each module defines ``register(group)`` and is loaded automatically."""
