"""azbai's version, importable by every layer (``azbai.__version__`` re-exports it)."""

__version__ = "0.1.0"
