"""LoRA adapters per batch, through diffusers' PEFT integration.

A pipeline loads an adapter once (`load_lora_weights(..., adapter_name=...)`) and keeps the last few it
used (`keep`, least recently used unloaded first with `delete_adapters`); each batch activates exactly
its own set with its scales (`set_adapters`), and a batch without LoRAs runs with every adapter disabled
(`disable_lora`), so nothing of one batch's adapters leaks into the next. The pipelines derived for
image-to-image and inpainting (`from_pipe`) share the base pipeline's modules, so activating on the base
pipeline is activating on them.

Adapter names are stable and unique per (catalog name, weights): `easel_<name>_<hash>`, the hash of the
name, the resolved source and the file name, so a catalog that points a name at other weights loads
them under a new name instead of reusing the old ones. What is loaded is tracked per live pipeline
object (a weak mapping: a pipeline dropped from the model cache takes its record with it, and a new
pipeline never inherits an old one's record through a reused `id()`), and checked against the adapters
the pipeline really holds before each batch.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from easel.engine.backends.base import Adapter, ModelUnavailable

log = logging.getLogger(__name__)

_LORA_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def adapter_name(adapter: Adapter) -> str:
    """The PEFT adapter name of a LoRA: its catalog name made a module-dict key (no dots), plus a hash
    of the name and where its weights are, so two names that sanitise alike, or one name pointed at
    other weights, never share an adapter."""
    ident = "\0".join((adapter.name, adapter.source, adapter.weight_name or ""))
    digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
    return f"easel_{re.sub(r'[^0-9A-Za-z_]', '_', adapter.name)[:48]}_{digest}"


def _present(pipe: Any) -> set[str]:
    """The adapter names the pipeline's modules hold (none for a pipeline without diffusers' LoRA
    loader: PixArt-Σ, custom pipelines)."""
    if not hasattr(pipe, "get_list_adapters"):
        return set()
    return {name for names in pipe.get_list_adapters().values() for name in names}


def _looks_local(source: str) -> bool:
    """A source that names a file or folder (not a hub id `owner/name`)."""
    return (
        source.startswith(("/", "./", "../", "~")) or source.endswith(_LORA_SUFFIXES) or source.count("/") > 1
    )


class Adapters:
    """The adapters loaded into each pipeline, least recently used first; at most `keep` per pipeline
    stay loaded (more are unloaded with `delete_adapters`, never one the current batch uses)."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._loaded: weakref.WeakKeyDictionary[Any, OrderedDict[str, Adapter]] = weakref.WeakKeyDictionary()
        # Held while a batch runs with its adapters (`active`): another thread's batch on the same
        # pipeline cannot switch them mid-call.
        self._lock = threading.RLock()

    def loaded(self, pipe: Any) -> list[str]:
        """The catalog names of the adapters loaded into `pipe`, least recently used first."""
        return [a.name for a in self._loaded.get(pipe, {}).values()]

    @contextmanager
    def active(self, pipe: Any, wanted: Sequence[Adapter]) -> Iterator[None]:
        """`wanted` (and only it) active on `pipe` for the duration of the block (one pipeline call)."""
        with self._lock:
            self.apply(pipe, wanted)
            yield

    def apply(self, pipe: Any, wanted: Sequence[Adapter]) -> None:
        """Make `wanted` (and only it) active on `pipe`, at its scales. ModelUnavailable when a LoRA's
        weights cannot be loaded (a missing file, a hub id not downloaded, weights for another family)."""
        with self._lock:
            loaded = self._loaded.setdefault(pipe, OrderedDict())
            if not wanted and not loaded:  # never had one: nothing to ask the pipeline
                return
            present = _present(pipe)
            for gone in [k for k in loaded if k not in present]:  # unloaded by someone else
                del loaded[gone]
            if not wanted:
                if present:
                    pipe.disable_lora()
                return
            keys = [adapter_name(a) for a in wanted]
            for key, adapter in zip(keys, wanted, strict=True):
                if key in loaded:
                    loaded.move_to_end(key)
                    continue
                if key not in present:  # (one present already has these weights: the name says so)
                    self._load(pipe, adapter, key)
                loaded[key] = adapter
            for old in [k for k in loaded if k not in keys][: max(0, len(loaded) - self.keep)]:
                log.info("unloading LoRA %s", loaded[old].name)
                pipe.delete_adapters(old)
                del loaded[old]
            pipe.enable_lora()
            pipe.set_adapters(keys, adapter_weights=[a.scale for a in wanted])

    @staticmethod
    def _load(pipe: Any, adapter: Adapter, key: str) -> None:
        log.info("loading LoRA %s from %s", adapter.name, adapter.source)
        where = f"LoRA {adapter.name!r} ({adapter.source})"
        path = Path(adapter.source).expanduser()
        kwargs: dict[str, Any] = {"adapter_name": key}
        if adapter.weight_name:
            kwargs["weight_name"] = adapter.weight_name
        source: Any = adapter.source
        if path.is_file():  # a single weights file: its folder and its name
            source, kwargs["weight_name"] = str(path.parent), path.name
        elif not path.is_dir() and _looks_local(adapter.source):
            raise ModelUnavailable(
                f"{where} cannot be loaded: no such file or folder; fix its catalog source"
            )
        try:
            pipe.load_lora_weights(source, **kwargs)
        except Exception as e:
            with suppress(Exception):  # whatever part of it was injected
                pipe.delete_adapters(key)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            hint = (
                ""
                if path.exists()
                else "; if it is a Hugging Face hub id, download it first (`hf download "
                f"{adapter.source}`) or point its catalog source at a local .safetensors file"
            )
            raise ModelUnavailable(f"{where} cannot be loaded: {first}{hint}") from e
        if key not in _present(pipe):  # diffusers loads nothing from weights for other layers
            raise ModelUnavailable(
                f"{where} cannot be loaded: its weights match no layer of this model "
                "(is it for another model family?)"
            )
