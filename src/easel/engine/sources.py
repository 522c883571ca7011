"""Where a catalog entry's model lives (a local file or folder, or a hub id) and what family it is.

Nothing here imports torch or diffusers: the catalog is loaded (and families told) by processes that
never load a model (`easel serve --no-worker`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from easel.domain.catalog import Catalog, ModelEntry
from easel.domain.families import family_for_pipeline

log = logging.getLogger(__name__)


def local_source(base_dir: str, source: str) -> Path | None:
    """The existing file or folder a source names (relative to `base_dir`), None for a hub id."""
    candidate = Path(source).expanduser()
    if not candidate.is_absolute():
        candidate = Path(base_dir) / candidate
    return candidate if candidate.exists() else None


def resolve_source(catalog: Catalog, source: str) -> str:
    """An existing path (relative to the catalog's folder) resolves to it; anything else is a hub id."""
    path = local_source(catalog.base_dir, source)
    return source if path is None else str(path)


def model_source(catalog: Catalog, entry: ModelEntry) -> str:
    """Where the entry's model is: its resolved local path, or its hub id."""
    return resolve_source(catalog, entry.source)


def model_options(catalog: Catalog, entry: ModelEntry) -> dict[str, Any]:
    """The entry's backend options with the paths in them resolved like its source: `config` (the
    diffusers folder a single-file checkpoint takes its configs from) relative to the catalog's folder."""
    config = entry.options.get("config")
    if not isinstance(config, str):
        return entry.options
    return entry.options | {"config": resolve_source(catalog, config)}


def resolved_entry(catalog: Catalog, entry: ModelEntry) -> ModelEntry:
    """The entry as a backend receives it: `options` resolved (model_options); the entry itself when
    nothing in them is a path."""
    options = model_options(catalog, entry)
    return entry if options is entry.options else entry.model_copy(update={"options": options})


def _json(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _cached(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """A file of a hub repository at `revision` (default: main) already in the local Hugging Face cache
    (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # the engine extra is not installed: nothing is cached either
        return None
    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except ValueError:  # not a valid repository id
        return None
    return Path(found) if isinstance(found, str) else None


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The folder of a hub repository's snapshot at `revision` in the local Hugging Face cache, when its
    model_index.json is there (`easel models pull` put it there); None otherwise. No network."""
    index = _cached(repo_id, "model_index.json", revision)
    return None if index is None else index.parent


def family_of_folder(index: dict[str, Any] | None, transformer_config: dict[str, Any] | None) -> str | None:
    """The family a pipeline's model_index.json (and transformer/config.json) tell."""
    if index is None or not isinstance(index.get("_class_name"), str):
        return None
    embeds = None if transformer_config is None else transformer_config.get("guidance_embeds")
    return family_for_pipeline(
        index["_class_name"], guidance_embeds=embeds if isinstance(embeds, bool) else None
    )


def folder_family(folder: Path) -> str | None:
    """The family of the diffusers pipeline saved in `folder` (its model_index.json and
    transformer/config.json), None when they cannot tell."""
    return family_of_folder(_json(folder / "model_index.json"), _json(folder / "transformer" / "config.json"))


def detect_family(entry: ModelEntry, base_dir: str) -> str | None:
    """The family of a diffusers entry from its files: a local folder's model_index.json, or the same
    file of a hub repository already in the local cache (at the entry's `revision`). None when they cannot
    tell (a single-file checkpoint, a hub id not downloaded, an unknown pipeline): set `family` then."""
    if entry.backend != "diffusers":
        return None
    path = local_source(base_dir, entry.source)
    if path is not None:
        return folder_family(path) if path.is_dir() else None
    index = _json(_cached(entry.source, "model_index.json", entry.revision))
    if index is None:
        return None
    return family_of_folder(index, _json(_cached(entry.source, "transformer/config.json", entry.revision)))
