"""The backend contract. A worker hands a backend one batch of compatible images and gets PIL images,
and, between batches, asks it to load or unload a model (the admin's load / unload requests) and what
it holds loaded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from PIL.Image import Image as PILImage

from easel.domain.catalog import ModelEntry
from easel.domain.families import Task

# Called after every denoising step with (step, total); returning False stops the batch.
StepCallback = Callable[[int, int], bool]


class PreviewHook(Protocol):
    """Previews of a batch in progress (the worker's): the backend asks `wanted(step, total)` after each
    step and, when it is, makes one picture per item of the current estimate of the final image (the
    model's prediction of the clean image where the scheduler keeps it, else the current latents),
    decoded at the model's native size, and hands them to `deliver`. Cheap when never wanted."""

    def wanted(self, step: int, total: int) -> bool: ...

    def deliver(self, step: int, total: int, images: list[PILImage]) -> None: ...


class Interrupted(Exception):
    """The batch was stopped by its step callback (every job in it was canceled or lost)."""


class ModelUnavailable(Exception):
    """The model cannot be loaded here (not downloaded, offline, bad path); the message says what to do."""


@dataclass(frozen=True)
class ImageTask:
    """One image to make."""

    prompt: str
    negative_prompt: str | None
    seed: int
    source: PILImage | None = None
    mask: PILImage | None = None


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter of a batch: its catalog name, where its weights are (a resolved local path or a
    hub id, and the file in it), and the scale it runs at."""

    name: str
    source: str
    weight_name: str | None
    scale: float


@dataclass(frozen=True)
class BatchRequest:
    """Images that share model, task, size and sampler settings: one pipeline call."""

    model: ModelEntry
    source: str  # resolved local path or hub id
    task: Task
    width: int
    height: int
    steps: int
    guidance: float
    strength: float | None
    items: list[ImageTask] = field(default_factory=list)
    loras: tuple[Adapter, ...] = ()  # applied to every image of the batch (part of the batch key)


@dataclass(frozen=True)
class Loaded:
    """A model a backend holds in memory: the source it was loaded from, since when, and how many bytes
    its weights take where that is cheap to know (None otherwise)."""

    source: str
    since: datetime
    memory_bytes: int | None = None


class Backend(Protocol):
    def generate(
        self, request: BatchRequest, on_step: StepCallback, previews: PreviewHook | None = None
    ) -> list[PILImage]:
        """One image per item, in order, at exactly (width, height); `previews` when a job asked for
        them (a backend that cannot make any ignores it, and the jobs' streams carry none)."""

    def load(self, model: ModelEntry) -> None:
        """Load the model into the backend's cache now (nothing to do when it is there). `model` is the
        entry as the worker hands it over: `source` and the paths in `options` resolved."""

    def unload(self, model: ModelEntry) -> bool:
        """Drop the model (the pipeline of its source) and free its memory; False if it was not loaded."""

    def loaded(self) -> list[Loaded]:
        """What the backend holds loaded now."""
