"""Single source of the runtime version (kept in step with export/pyproject.toml)."""

__version__ = "0.1.0"
