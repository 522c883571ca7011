"""The loaded-model cache of a worker: bounded by the bytes of the weights, least recently used out first.

Each loaded pipeline counts the bytes of its modules' weights (`pipeline_bytes`, measured once loaded).
Before a load, the cache makes room for the new pipeline's *estimated* bytes (`estimate_bytes`: read from
the headers of the safetensors files it will load, at the dtype it loads them in), unloading the least
recently used pipelines until the estimate fits the budget, so a GPU never holds the old models and the
new one at once when they do not fit together. Once loaded, the measured bytes decide: more old
pipelines go if the estimate was short. A pipeline larger than the whole budget still loads, alone,
with a warning. An optional count cap (EASEL_MAX_LOADED_MODELS) applies on top.

The budget (EASEL_MODEL_MEMORY, `budget_bytes`): bytes, a share of the device's memory, or auto: 80 % of
a GPU's memory (the rest is for activations: lower it when large batches run out of memory), 50 % of the
RAM on a CPU worker.

Nothing here imports torch at import time.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextlib import suppress
from pathlib import Path
from typing import Generic, TypeVar

from easel.domain.catalog import SINGLE_FILE_SUFFIXES
from easel.domain.model_options import DiffusersOptions
from easel.engine.devices import device_memory
from easel.settings import parse_memory

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

AUTO_SHARE_ACCELERATOR = 0.8
AUTO_SHARE_CPU = 0.5


def budget_bytes(
    model_memory: str, device: str, memory: Callable[[str], int | None] = device_memory
) -> int | None:
    """The cache's budget in bytes for EASEL_MODEL_MEMORY on `device`; None (no byte bound, only the
    count cap) when it is a share of a memory that cannot be told."""
    parsed = parse_memory(model_memory)
    if isinstance(parsed, int):
        return parsed
    share = parsed
    if share is None:
        share = AUTO_SHARE_CPU if device == "cpu" else AUTO_SHARE_ACCELERATOR
    total = memory(device)
    if total is None:
        log.warning(
            "the memory of %s cannot be told: the model cache has no byte budget; set EASEL_MODEL_MEMORY",
            device,
        )
        return None
    return int(total * share)


class PipelineCache(Generic[K, V]):
    """Loaded values (pipelines) by key, least recently used first, each with its bytes.

    `items` is the ordered mapping itself (least recently used first); `sizes` the bytes of each. The
    cache does not load or free anything: `make_room` and `put` return what they evicted, for the caller
    to release."""

    def __init__(self, budget: int | None, max_count: int | None = None) -> None:
        self.budget = budget
        self.max_count = max_count
        self.items: OrderedDict[K, V] = OrderedDict()
        self.sizes: dict[K, int] = {}

    @property
    def used(self) -> int:
        return sum(self.sizes.values())

    def get(self, key: K) -> V | None:
        """The value, now the most recently used; None when it is not loaded."""
        if key not in self.items:
            return None
        self.items.move_to_end(key)
        return self.items[key]

    def pop(self, key: K) -> V | None:
        self.sizes.pop(key, None)
        return self.items.pop(key, None)

    def _over(self, incoming: int, count: int) -> bool:
        over_bytes = self.budget is not None and self.used + incoming > self.budget
        over_count = self.max_count is not None and count > self.max_count
        return over_bytes or over_count

    def make_room(self, incoming: int | None) -> list[tuple[K, V]]:
        """Evict least recently used values until one more of `incoming` bytes (None: unknown, 0) fits
        the budget and the count cap. Returns the evicted (key, value) pairs, oldest first."""
        evicted = []
        while self.items and self._over(incoming or 0, len(self.items) + 1):
            key, value = self.items.popitem(last=False)
            self.sizes.pop(key, None)
            evicted.append((key, value))
        return evicted

    def put(self, key: K, value: V, size: int) -> list[tuple[K, V]]:
        """Add a value of `size` bytes as the most recently used, evicting others (least recently used
        first) until it fits; a value larger than the budget stays alone. Returns the evicted pairs."""
        self.pop(key)
        evicted = self.make_room(size)
        self.items[key] = value
        self.sizes[key] = size
        if self.budget is not None and size > self.budget:
            log.warning(
                "model %s needs %.2f GB, more than the model cache's budget of %.2f GB "
                "(EASEL_MODEL_MEMORY): it is loaded alone",
                key,
                size / 1e9,
                self.budget / 1e9,
            )
        return evicted


# -- estimates before loading ------------------------------------------------------------------------

_FLOAT_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_SIZES = _FLOAT_DTYPES | {"I64": 8, "U64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2, "I8": 1, "U8": 1}
_SIZES |= {"BOOL": 1}


def itemsize(dtype: str, device: str) -> int:
    """Bytes per floating weight of an options dtype on `device` (auto: fp16 on CUDA, else fp32)."""
    if dtype == "auto":
        return 2 if device.startswith("cuda") else 4
    return 4 if dtype == "fp32" else 2


def safetensors_bytes(path: Path, float_size: int) -> int:
    """The bytes a .safetensors file's tensors take once loaded with floating weights of `float_size`
    bytes (its header only is read: 8 bytes of length, then JSON)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        numel = math.prod(info["shape"])
        total += numel * (float_size if info["dtype"] in _FLOAT_DTYPES else _SIZES.get(info["dtype"], 4))
    return total


def folder_bytes(folder: Path, variant: str | None, float_size: int) -> int:
    """The bytes of the weights a diffusers pipeline folder loads (the files of engine/hub.plan_files:
    one set per component, of `variant`); a `.bin` file counts its size on disk."""
    from easel.engine.hub import plan_files

    index = json.loads((folder / "model_index.json").read_text())
    names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    total = 0
    for name in plan_files(names, index, variant):
        if name.endswith(".safetensors"):
            total += safetensors_bytes(folder / name, float_size)
        elif name.endswith(".bin"):
            total += (folder / name).stat().st_size
    return total


def estimate_bytes(source: str, revision: str | None, options: DiffusersOptions, device: str) -> int | None:
    """What a pipeline will take once loaded, from its files, without loading it; None when that cannot
    be told (a hub id not in the local cache, files of another kind). A single-file checkpoint counts the
    file and the weights its config folder holds (FLUX.1's encoders and VAE)."""
    from easel.engine.hub import HubError
    from easel.engine.sources import cached_snapshot

    size = itemsize(options.effective_dtype, device)
    path = Path(source)
    try:
        if path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES:
            if path.suffix.lower() != ".safetensors":
                return path.stat().st_size
            total = safetensors_bytes(path, size)
            config = Path(options.config) if options.config else None
            if config is not None and (config / "model_index.json").is_file():
                with suppress(HubError):  # a folder of configs only: nothing more to count
                    total += folder_bytes(config, options.variant, size)
            return total
        folder = path if path.is_dir() else cached_snapshot(source, revision)
        if folder is None:
            return None
        return folder_bytes(folder, options.variant, size)
    except (OSError, ValueError, KeyError, TypeError, struct.error, HubError) as e:
        log.debug("no estimate of %s: %s", source, e)
        return None


def describe(size: int | None) -> str:
    return "unknown size" if size is None else f"{size / 1e9:.2f} GB"
