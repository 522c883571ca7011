"""Easel: a self-hosted image-generation API server."""

__version__ = "0.1.0"
