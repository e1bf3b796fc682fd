"""trainkit's version, in a module of its own so the engine, checkpoints and exports can name it without importing
the package root (which imports the Python API, above everything else)."""

__version__ = "0.1.0"
