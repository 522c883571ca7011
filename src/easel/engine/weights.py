"""Which weights made an image: the sha256 of a model's (or a LoRA's) weight files (docs/provenance.md,
"The receipt").

A local folder's hash is sha256 over its weight files in sorted path order, each as its path relative to
the folder, a NUL, then its bytes; a single file's is its bytes'. A hub id is hashed in its local snapshot
(the files the worker loaded), or not at all when none is on this machine. Hashing gigabytes takes
seconds, so a hash is computed once per worker and cached on disk by path, sizes and modification times
(`<data_dir>/cache/weights.json`): a changed file is hashed again. The worker does it when a job
completes, never on an API request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from easel.domain.catalog import Catalog
from easel.domain.generation import ImageFile
from easel.domain.spec import GenerationSpec

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".gguf", ".onnx")
CHUNK = 1 << 20
_LOCK = threading.Lock()


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)


def _signature(root: Path, files: list[Path]) -> list[list[object]]:
    out: list[list[object]] = []
    for f in files:
        st = f.stat()
        out.append([f.relative_to(root).as_posix() if root.is_dir() else f.name, st.st_size, st.st_mtime_ns])
    return out


def _hash(root: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in files:
        if root.is_dir():
            digest.update(f.relative_to(root).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def local_path(source: str, revision: str | None = None) -> Path | None:
    """A source's files on this machine: the path itself, or a hub id's local snapshot (None: neither)."""
    path = Path(source)
    if path.exists():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, revision=revision, local_files_only=True))
    except Exception:  # not a hub id, or not downloaded here
        return None


def weights_sha256(source: str, cache_dir: Path, revision: str | None = None) -> str | None:
    """The sha256 of a model's weight files (None when they are not on this machine or hold none)."""
    root = local_path(source, revision)
    if root is None:
        return None
    files = _files(root)
    if not files:
        return None
    signature = _signature(root, files)
    cache = cache_dir / "weights.json"
    key = str(root.resolve())
    with _LOCK:
        try:
            known = json.loads(cache.read_text())
        except (OSError, ValueError):
            known = {}
        entry = known.get(key)
        if isinstance(entry, dict) and entry.get("signature") == signature:
            return str(entry["sha256"])
        digest = _hash(root, files)
        known[key] = {"signature": signature, "sha256": digest}
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, cache)
    log.info("hashed the weights of %s: %s", source, digest)
    return digest


def versions() -> dict[str, str | None]:
    """The versions of the libraries that decide a picture's bytes (read from the installed metadata,
    without importing them)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in ("easel", "torch", "diffusers", "transformers", "pillow", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def receipt(
    catalog: Catalog, spec: GenerationSpec, generation_id: str, outputs: Sequence[ImageFile], cache_dir: Path
) -> dict[str, Any]:
    """The reproducibility receipt of a job a worker of ours ran (docs/provenance.md): what `easel replay`
    needs to make the same bytes again, and the hashes to tell whether it did."""
    from easel.engine.sources import model_source, resolve_source

    entry = catalog.resolve(spec.model)
    loras = []
    for ref in spec.loras:
        lora = catalog.loras[ref.name]
        loras.append(
            {
                "name": lora.name,
                "scale": lora.scale if ref.scale is None else ref.scale,
                "sha256": weights_sha256(resolve_source(catalog, lora.source), cache_dir),
            }
        )
    return {
        "version": 1,
        "generationId": generation_id,
        "model": entry.name,
        "source": entry.source,
        "revision": entry.revision,
        "family": entry.family,
        "weightsSha256": weights_sha256(model_source(catalog, entry), cache_dir, entry.revision),
        "loras": loras,
        "scheduler": entry.options.get("scheduler"),
        "seed": spec.seed,
        "parameters": spec.model_dump(mode="json"),
        "versions": versions(),
        "outputs": [
            {
                "index": o.index,
                "seed": o.seed,
                "sha256": o.sha256,
                "mime": o.mime,
                "width": o.width,
                "height": o.height,
            }
            for o in outputs
        ],
    }
