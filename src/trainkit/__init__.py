"""trainkit: a config-driven PyTorch training CLI. Importing it has no side effects and does not import torch."""

__version__ = "0.1.0"
