"""Model loaders, one module per format, each implementing the contract in ``base.py``."""
