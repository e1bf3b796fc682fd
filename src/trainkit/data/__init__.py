"""Readers for each data format, and the batch loader. They return tensors and metadata, nothing else."""
