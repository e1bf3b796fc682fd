"""The generic engine: device, precision, the fit/evaluate loop and checkpoints. Imports nothing heavy here."""
