"""Backends turn a BatchRequest into PIL images."""

from __future__ import annotations

from easel.engine.backends.base import Backend


def make_backend(kind: str, device: str = "auto") -> Backend:
    """The backend named in a catalog entry."""
    if kind == "diffusers":
        from easel.engine.backends.diffusers import DiffusersBackend

        return DiffusersBackend(device=device)
    raise ValueError(f"unknown backend {kind!r}; known: diffusers")
