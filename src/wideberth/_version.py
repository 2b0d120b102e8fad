"""The one version string of wideberth (read by pyproject.toml and recorded in checkpoints)."""

__version__ = "0.1.0"
