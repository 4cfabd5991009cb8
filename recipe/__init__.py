"""cotrecipe: distil chain-of-thought into a small model with the three-stage BRIDGE curriculum."""

__version__ = "0.1.0"
