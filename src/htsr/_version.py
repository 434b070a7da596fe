"""The package version (one home: ``htsr.__version__``, the CLI and report metadata read it)."""

__version__ = "0.1.0"
