"""Data: the CAMUS reader, the built-in echo phantom, export to PNG, datasets for training."""
