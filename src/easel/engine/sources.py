"""Where a catalog entry's model lives: a local file or folder, or a hub id (the engine's file look-up)."""

from __future__ import annotations

from pathlib import Path

from easel.domain.catalog import Catalog, ModelEntry


def model_source(catalog: Catalog, entry: ModelEntry) -> str:
    """An existing path (relative to the catalog's folder) resolves to it; anything else is a hub id."""
    candidate = Path(entry.source).expanduser()
    if not candidate.is_absolute():
        candidate = Path(catalog.base_dir) / candidate
    return str(candidate) if candidate.exists() else entry.source
