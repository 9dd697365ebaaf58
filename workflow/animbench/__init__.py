"""animbench: a reproducible benchmark for unsupervised image animation."""

__version__ = "0.1.0"
