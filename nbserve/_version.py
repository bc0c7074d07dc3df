"""The one place the version is written (the package and its build both read it)."""

__version__ = "0.1.0"
