"""The trajx version, importable by every sub-package without importing the package's facade."""

__version__ = "0.1.0"
