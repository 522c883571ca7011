"""LoRA adapters per batch, through diffusers' PEFT integration.

A pipeline loads an adapter once (`load_lora_weights(..., adapter_name=...)`) and keeps the last few it
used; each batch activates exactly its own set with its scales (`set_adapters`), and a batch without
LoRAs runs with every adapter disabled, so nothing of one batch's adapters leaks into the next. The
pipelines derived for image-to-image and inpainting (`from_pipe`) share the base pipeline's modules, so
activating on the base pipeline is activating on them.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from easel.engine.backends.base import Adapter, ModelUnavailable

log = logging.getLogger(__name__)


def adapter_name(name: str) -> str:
    """A PEFT adapter name for a catalog name (module-dict keys hold no dots)."""
    return "easel_" + re.sub(r"[^0-9A-Za-z_]", "_", name)


class Adapters:
    """The adapters loaded into each pipeline, least recently used first; at most `keep` per pipeline
    stay loaded (more are unloaded with `delete_adapters`)."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._loaded: dict[int, OrderedDict[str, Adapter]] = {}
        self._lock = threading.Lock()

    def loaded(self, pipe: Any) -> list[str]:
        """The catalog names of the adapters loaded into `pipe`, least recently used first."""
        return list(self._loaded.get(id(pipe), {}))

    def apply(self, pipe: Any, wanted: Sequence[Adapter]) -> None:
        """Make `wanted` (and only it) active on `pipe`, at its scales."""
        with self._lock:
            loaded = self._loaded.setdefault(id(pipe), OrderedDict())
            if not wanted:
                if loaded:
                    pipe.disable_lora()
                return
            for adapter in wanted:
                if adapter.name in loaded and loaded[adapter.name].source == adapter.source:
                    loaded.move_to_end(adapter.name)
                    continue
                if adapter.name in loaded:  # the catalog points the name at other weights now
                    pipe.delete_adapters(adapter_name(adapter.name))
                    del loaded[adapter.name]
                self._load(pipe, adapter)
                loaded[adapter.name] = adapter
            names = {a.name for a in wanted}
            for old in [n for n in loaded if n not in names][: max(0, len(loaded) - self.keep)]:
                pipe.delete_adapters(adapter_name(old))
                del loaded[old]
            pipe.enable_lora()
            pipe.set_adapters(
                [adapter_name(a.name) for a in wanted], adapter_weights=[a.scale for a in wanted]
            )

    @staticmethod
    def _load(pipe: Any, adapter: Adapter) -> None:
        log.info("loading LoRA %s from %s", adapter.name, adapter.source)
        path = Path(adapter.source)
        kwargs: dict[str, Any] = {"adapter_name": adapter_name(adapter.name)}
        if adapter.weight_name:
            kwargs["weight_name"] = adapter.weight_name
        source: Any = adapter.source
        if path.is_file():  # a single .safetensors file: its folder and its name
            source, kwargs["weight_name"] = str(path.parent), path.name
        try:
            pipe.load_lora_weights(source, **kwargs)
        except (OSError, ValueError) as e:
            raise ModelUnavailable(f"cannot load LoRA {adapter.name!r} from {adapter.source!r}: {e}") from e
