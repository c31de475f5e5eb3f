"""The pipeline stages as Python functions on run directories (the CLI and batch call these)."""
