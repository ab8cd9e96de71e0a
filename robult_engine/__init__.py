"""Robult engine: the method, baselines and ablations, datasets, training, evaluation (PyTorch only, no Qt)."""
__version__ = "0.1.0"
