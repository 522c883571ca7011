"""`GenerationSpec`: the one canonical request every dialect translates into.

A dialect fills in what its client said (`GenerationSpec(...)`, with unresolved conveniences such as
`size="1792x1024"` or `aspect_ratio` + `image_size`); `resolve()` checks it against the model's catalog
entry and returns a complete spec (canonical model name, width, height, steps, guidance, seed), which
is what gets stored and what a worker runs. Resolution is pure and deterministic: the seed of a request
that names none is drawn by the service and handed in. Errors name the canonical fields (`aspect_ratio`,
`source_image_ids`); each dialect renames them to its own wire names when it renders the error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from easel.domain.catalog import Catalog, ModelEntry
from easel.domain.errors import ValidationFailed
from easel.domain.families import Guidance, Task
from easel.domain.inputs import ImageInput, Role, count
from easel.domain.scheduling import Priority, check_seconds
from easel.domain.sizes import (
    ASPECT_RATIOS,
    SIZE_PRESETS,
    aspect_label,
    closest_aspect_ratio,
    dims_for,
    parse_wxh,
)

MAX_SEED = 2**32 - 1
MAX_LORAS = 4  # LoRA adapters per request
MAX_PREVIEWS = 8  # previews per job at most (OpenAI's partial_images: 0 to 3)
MAX_BATCH_KEY = 400  # characters (the generations.batch_key column)
# Control characters a prompt may hold: tab and line breaks (a browser form sends CRLF).
_ALLOWED_CONTROLS = frozenset("\t\n\r")


def text_problem(text: str) -> str | None:
    """Why `text` cannot be a prompt, or None: a lone surrogate (not Unicode that can be stored or
    encoded) or a control character other than tab and line breaks."""
    if text.isascii() and text.isprintable():
        return None
    for ch in text:
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            return "must be valid Unicode (it holds a lone surrogate)"
        if (code < 0x20 or 0x7F <= code < 0xA0) and ch not in _ALLOWED_CONTROLS:
            return f"must not hold control characters (U+{code:04X}); only tab and newlines are allowed"
    return None


class OutputFormat(StrEnum):
    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"

    @property
    def mime(self) -> str:
        return f"image/{self.value}"


class LoraRef(BaseModel):
    """A LoRA adapter a request applies: a catalog name and a scale (None: the catalog's default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    scale: float | None = None


class GenerationSpec(BaseModel):
    """What to make. Field names are the canonical ones; `fields` maps them to the wire names for errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    negative_prompt: str | None = None
    model: str | None = None
    task: Task = Task.TEXT_TO_IMAGE
    # Size: explicit width+height, or `size` ("WxH" | "auto"), or aspect_ratio + image_size preset.
    width: int | None = None
    height: int | None = None
    size: str | None = None
    aspect_ratio: str | None = None
    image_size: str | None = None
    n: int = 1
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    loras: list[LoraRef] = Field(default_factory=list)
    style: str | None = None
    quality: str | None = None
    source_image_ids: list[str] = Field(default_factory=list)
    mask_image_id: str | None = None
    original_prompt: str | None = None
    enhance: bool = False
    enhance_template: str | None = None
    output_format: OutputFormat = OutputFormat.PNG
    output_compression: int | None = None
    folder: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    webhook_url: str | None = None
    priority: int = 0  # a class (domain/scheduling.py); resolve() maps other integers
    # The time by which the job must have started (else it ends canceled, deadline_exceeded), given as
    # an absolute time or as seconds from its creation; the service keeps the earlier of the two, as
    # `deadline`, and clears `cancel_after`.
    deadline: datetime | None = None
    cancel_after: float | None = None
    record_parameters: bool = True  # write prompt, seed, steps... into the image files
    # The provenance label (the IPTC digital source type in XMP; docs/provenance.md), set from
    # EASEL_PROVENANCE_LABEL when the job is created.
    provenance_label: bool = True
    # The content policy (domain/policy.py): OpenAI's `moderation` level, and the rules that flagged
    # this job (action "flag": allowed and marked).
    moderation: Literal["low", "auto"] = "auto"
    policy_flags: list[str] = Field(default_factory=list)
    # Previews: how many pictures of the work in progress its streams get, evenly spaced over the steps
    # (transient: published to event streams, never stored; docs/api/native.md, "Previews").
    previews: int = 0
    # Size: the model's aspect ratio closest to the source image's (Wix), set once the source is decoded.
    match_source_aspect: bool = False

    def resolve(
        self, catalog: Catalog, *, seed: int | None = None, inputs: Sequence[ImageInput] = ()
    ) -> GenerationSpec:
        """Check against the catalog and fill every default. `seed` is used when the spec names none;
        `inputs` are the image inputs still to be imported (they count as source / mask images)."""
        fail = ValidationFailed.for_field
        chosen_seed = self.seed if self.seed is not None else seed
        if chosen_seed is None:
            raise ValueError("resolve() needs a seed when the spec has none (the service draws it)")
        for name, text in (("prompt", self.prompt), ("negative_prompt", self.negative_prompt)):
            problem = None if text is None else text_problem(text)
            if problem:
                raise fail(name, problem)
        entry = catalog.resolve(self.model)
        prompt = self.prompt.strip()
        if not prompt:
            raise fail("prompt", "must not be empty")
        if len(self.prompt) > entry.max_prompt_length:
            raise fail("prompt", f"must be at most {entry.max_prompt_length} characters")
        if self.task not in entry.tasks:
            allowed = ", ".join(t.value for t in entry.tasks)
            raise fail("task", f"model {entry.name} does not support {self.task.value}; allowed: {allowed}")
        if not 1 <= self.n <= entry.max_n:
            raise fail("n", f"must be between 1 and {entry.max_n} for model {entry.name}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise fail("seed", f"must be between 0 and {MAX_SEED}")
        if self.steps is not None and not 1 <= self.steps <= 200:
            raise fail("steps", "must be between 1 and 200")
        if self.guidance is not None and not 0 <= self.guidance <= 50:
            raise fail("guidance", "must be between 0 and 50")
        if self.strength is not None and not 0 < self.strength <= 1:
            raise fail("strength", "must be greater than 0 and at most 1")
        if self.output_compression is not None and not 0 <= self.output_compression <= 100:
            raise fail("output_compression", "must be between 0 and 100")
        if not 0 <= self.previews <= MAX_PREVIEWS:
            raise fail("previews", f"must be between 0 and {MAX_PREVIEWS}")
        if self.cancel_after is not None:
            try:
                check_seconds(self.cancel_after)
            except ValueError as e:
                raise fail("cancel_after", str(e)) from None
        if self.deadline is not None and self.deadline.tzinfo is None:
            raise fail("deadline", "must carry a time zone (e.g. 2026-01-02T03:04:05Z)")
        sources = len(self.source_image_ids) + count(inputs, Role.SOURCE)
        masks = (self.mask_image_id is not None) + count(inputs, Role.MASK)
        if self.task in (Task.IMAGE_TO_IMAGE, Task.INPAINT, Task.VARIATION) and not sources:
            raise fail("source_image_ids", f"{self.task.value} needs a source image")
        if masks > 1:
            raise fail("mask_image_id", "one mask at most")
        if self.task is Task.INPAINT and not masks:
            raise fail("mask_image_id", "inpaint needs a mask")
        styles, qualities = catalog.styles_of(entry), catalog.qualities_of(entry)
        if self.style is not None and self.style not in styles:
            allowed = ", ".join(sorted(styles)) or "none"
            raise fail("style", f"unknown style {self.style!r} for model {entry.name}; allowed: {allowed}")
        if self.quality is not None and self.quality not in qualities:
            allowed = ", ".join(sorted(qualities)) or "none"
            raise fail(
                "quality", f"unknown quality {self.quality!r} for model {entry.name}; allowed: {allowed}"
            )

        if self.negative_prompt and not entry.takes_negative_prompt:
            raise fail(
                "negative_prompt",
                f"model {entry.name} ({_label(entry)}) does not take a negative prompt"
                + ("; the catalog can enable true CFG (true_cfg_scale)" if _true_cfg_family(entry) else ""),
            )
        if self.guidance is not None and entry.guidance_kind is Guidance.NONE:
            raise fail("guidance", f"model {entry.name} ({_label(entry)}) takes no guidance scale")
        loras = self._resolve_loras(catalog, entry, fail)
        width, height, aspect = self._resolve_size(entry, fail)
        strength = self.strength
        if self.task in (Task.IMAGE_TO_IMAGE, Task.INPAINT, Task.VARIATION) and strength is None:
            strength = entry.defaults.strength

        # Presets fill in only what the client did not set explicitly.
        steps, guidance, negative = self.steps, self.guidance, self.negative_prompt
        styled = prompt
        if self.quality is not None:
            q = qualities[self.quality]
            if steps is None and (q.steps or q.steps_multiplier):
                steps = q.steps or max(1, min(200, round(entry.defaults.steps * (q.steps_multiplier or 1))))
            guidance = q.guidance if guidance is None else guidance
        if self.style is not None:
            st = styles[self.style]
            styled = f"{prompt}, {st.prompt_suffix}" if st.prompt_suffix else prompt
            if st.negative_prompt:
                negative = f"{negative}, {st.negative_prompt}" if negative else st.negative_prompt
            guidance = st.guidance if guidance is None else guidance
        # A preset's negative prompt and guidance apply as far as the model's family can use them.
        if not entry.takes_negative_prompt:
            negative = None
        if entry.guidance_kind is Guidance.NONE:
            guidance = 0.0
        for ref in loras:
            lora = catalog.loras[ref.name]
            missing = [w for w in lora.trigger_words if w.lower() not in styled.lower()]
            styled = ", ".join([styled, *missing])
        return self.model_copy(
            update={
                "prompt": styled,
                "negative_prompt": negative,
                "original_prompt": self.original_prompt or prompt,
                "model": entry.name,
                "width": width,
                "height": height,
                "size": None,
                "aspect_ratio": aspect,
                "image_size": None,
                "seed": chosen_seed,
                "steps": steps or entry.defaults.steps,
                "guidance": guidance if guidance is not None else entry.defaults.guidance,
                "strength": strength,
                "loras": loras,
                "priority": int(Priority.of(self.priority)),
            }
        )

    def _resolve_loras(self, catalog: Catalog, entry: ModelEntry, fail: Any) -> list[LoraRef]:
        """The request's LoRAs by their catalog names, each with its scale; each must fit the model."""
        if len(self.loras) > MAX_LORAS:
            raise fail("loras", f"at most {MAX_LORAS} LoRAs per request")
        resolved: list[LoraRef] = []
        for ref in self.loras:
            lora = catalog.lora(ref.name)
            if lora is None:
                known = ", ".join(sorted(lo.name for lo in catalog.loras_for(entry))) or "none"
                raise fail("loras", f"unknown LoRA {ref.name!r}; for model {entry.name}: {known}")
            if entry.family not in lora.families:
                raise fail(
                    "loras",
                    f"LoRA {lora.name!r} is for {', '.join(lora.families)}, "
                    f"not model {entry.name} ({entry.family or 'unknown family'})",
                )
            if any(r.name == lora.name for r in resolved):
                raise fail("loras", f"LoRA {lora.name!r} is named twice")
            scale = lora.scale if ref.scale is None else ref.scale
            if not -4.0 <= scale <= 4.0:
                raise fail("loras", f"the scale of LoRA {lora.name!r} must be between -4 and 4")
            resolved.append(LoraRef(name=lora.name, scale=scale))
        return resolved

    def _resolve_size(self, entry: ModelEntry, fail: Any) -> tuple[int, int, str]:
        if self.aspect_ratio is not None and self.aspect_ratio not in entry.aspect_ratios:
            field = "aspect_ratio"
            if self.aspect_ratio in ASPECT_RATIOS:
                msg = f"model {entry.name} does not support {self.aspect_ratio}"
            else:
                msg = f"unknown aspect ratio {self.aspect_ratio!r}"
            raise fail(field, f"{msg}; allowed: {', '.join(entry.aspect_ratios)}")
        if self.image_size is not None and self.image_size not in SIZE_PRESETS:
            raise fail("image_size", f"must be one of {', '.join(SIZE_PRESETS)}")

        if self.width is not None or self.height is not None:
            if self.width is None or self.height is None:
                raise fail("width" if self.width is None else "height", "width and height go together")
            width, height, field = self.width, self.height, "size"
        elif self.size is not None and self.size != "auto":
            parsed = parse_wxh(self.size)
            if parsed is None:
                raise fail("size", f"must be WIDTHxHEIGHT (e.g. 1024x1024) or auto, got {self.size!r}")
            width, height, field = parsed[0], parsed[1], "size"
        else:
            aspect = self.aspect_ratio or entry.defaults.aspect_ratio
            preset = self.image_size or entry.defaults.image_size
            long_side = min(SIZE_PRESETS[preset], entry.max_size)
            w, h = dims_for(aspect, long_side, entry.multiple_of)
            return w, h, aspect

        lo, hi, mult = entry.min_size, entry.max_size, entry.multiple_of
        if not (lo <= width <= hi and lo <= height <= hi):
            raise fail(field, f"each side must be between {lo} and {hi} pixels for model {entry.name}")
        if width % mult or height % mult:
            raise fail(field, f"each side must be a multiple of {mult} for model {entry.name}")
        if entry.max_aspect is not None and max(width, height) > entry.max_aspect * min(width, height):
            raise fail(
                field,
                f"the aspect ratio must be between 1:{entry.max_aspect:g} and {entry.max_aspect:g}:1 "
                f"for model {entry.name}",
            )
        if entry.max_pixels is not None and width * height > entry.max_pixels:
            raise fail(field, f"at most {entry.max_pixels} pixels (width x height) for model {entry.name}")
        label = aspect_label(width, height)
        # A model limited to some ratios accepts explicit sizes of those ratios only.
        restricted = set(entry.aspect_ratios) != set(ASPECT_RATIOS)
        if label not in entry.aspect_ratios and (restricted or label in ASPECT_RATIOS):
            raise fail(
                field,
                f"aspect ratio {label} is not supported by {entry.name}; "
                f"allowed: {', '.join(entry.aspect_ratios)}",
            )
        return width, height, label

    def fit_source(self, catalog: Catalog, width: int, height: int) -> GenerationSpec:
        """A resolved spec with `match_source_aspect`, sized in the model's aspect ratio closest to a
        width x height source, at the spec's preset (the model's default when none was asked)."""
        if not self.match_source_aspect:
            return self
        entry = catalog.resolve(self.model)
        aspect = closest_aspect_ratio(width, height, entry.aspect_ratios)
        long_side = min(SIZE_PRESETS[self.image_size or entry.defaults.image_size], entry.max_size)
        w, h = dims_for(aspect, long_side, entry.multiple_of)
        return self.model_copy(update={"width": w, "height": h, "aspect_ratio": aspect})

    @property
    def batch_key(self) -> str:
        """Jobs with equal keys can run in one pipeline call (same model, task, shape and sampler settings,
        and the same LoRA adapters at exactly the same scales). Prompts, negative prompts, seeds and n may
        differ. A key longer than the column holds (many LoRAs, long names) keeps its start and ends in
        a hash of the whole."""
        key = "|".join(
            str(v)
            for v in (
                self.model,
                self.task.value,
                self.width,
                self.height,
                self.steps,
                self.guidance,
                self.strength if self.task is not Task.TEXT_TO_IMAGE else None,
                # The adapter set is part of the pipeline call: names and exact scales (repr round-trips).
                ",".join(f"{ref.name}:{ref.scale!r}" for ref in self.loras),
            )
        )
        if len(key) > MAX_BATCH_KEY:
            key = f"{key[: MAX_BATCH_KEY - 100]}|sha256:{hashlib.sha256(key.encode()).hexdigest()}"
        return key


def _label(entry: ModelEntry) -> str:
    fam = entry.model_family
    return "unknown family" if fam is None else fam.label


def _true_cfg_family(entry: ModelEntry) -> bool:
    fam = entry.model_family
    return fam is not None and fam.true_cfg


def image_seeds(spec: GenerationSpec) -> list[int]:
    """The seeds of a generation's images: image i uses seed + i (mod 2^32)."""
    return [((spec.seed or 0) + i) % (MAX_SEED + 1) for i in range(spec.n)]
