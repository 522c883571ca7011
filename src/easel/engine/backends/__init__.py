"""Backends turn a BatchRequest into PIL images; a catalog entry names its backend (`backend = "..."`).

The registry maps a backend name to a factory that builds it from the Settings. Factories import their
backend class when called, so this module (and a process that only checks a catalog) never imports
torch or diffusers.
"""

from __future__ import annotations

from collections.abc import Callable

from easel.domain.catalog import Catalog
from easel.engine.backends.base import Backend
from easel.settings import Settings

BackendFactory = Callable[[Settings], Backend]


def _diffusers(settings: Settings) -> Backend:
    from easel.engine.backends.diffusers import DiffusersBackend

    return DiffusersBackend(settings)


_FACTORIES: dict[str, BackendFactory] = {"diffusers": _diffusers}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make `name` a backend a catalog entry can name; `factory(settings)` builds it (lazily: import
    heavy modules inside the factory). A name is registered once."""
    if name in _FACTORIES:
        raise ValueError(f"backend {name!r} is already registered")
    _FACTORIES[name] = factory


def backend_names() -> list[str]:
    """The registered backend names, sorted."""
    return sorted(_FACTORIES)


def make_backend(name: str, settings: Settings) -> Backend:
    """The backend named in a catalog entry, built from the settings."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(backend_names())} (and upstream)")
    return factory(settings)


def check_catalog(catalog: Catalog) -> None:
    """Fail at start, naming the entry, when a catalog entry names a backend that is not registered."""
    for entry in catalog.models.values():
        if entry.backend not in _FACTORIES and not entry.is_upstream:  # the gateway serves "upstream"
            raise ValueError(
                f"catalog entry {entry.name!r}: unknown backend {entry.backend!r}; "
                f"known: {', '.join(backend_names())}"
            )
