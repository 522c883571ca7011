"""The model catalog: which models exist, what each can do, and what each name resolves to.

The catalog is data (a TOML file, see models/catalog.toml). Every request is checked against the
entry of its model before anything is queued, so a client learns about an unsupported parameter from a
400 that names the field and the allowed values, never from a failure deep inside a worker.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from easel.domain.errors import FieldError, ValidationFailed
from easel.domain.families import FAMILIES, Family, Guidance, Task, family_names
from easel.domain.model_options import DiffusersOptions, load_options_differ, parse_options
from easel.domain.providers import ProviderEntry
from easel.domain.sizes import ASPECT_RATIOS, SIZE_PRESETS, SizeLimits

UPSTREAM = "upstream"  # the backend of a catalog entry another API serves (docs/gateway.md)

# A `source` ending so is one checkpoint file in its family's original layout (not a diffusers folder).
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
# The families whose single files Easel loads (engine/backends/single_file.py has a loader for each).
SINGLE_FILE_FAMILIES = ("sd", "sdxl", "sd3", "flux", "flux-schnell")


def is_single_file(source: str) -> bool:
    """Whether a catalog `source` names a single-file checkpoint (by its suffix)."""
    return source.lower().endswith(SINGLE_FILE_SUFFIXES)


class ModelDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(20, ge=1, le=200)
    guidance: float = Field(7.0, ge=0.0, le=50.0)
    strength: float = Field(0.6, gt=0.0, le=1.0)
    aspect_ratio: str = "1:1"
    image_size: str = "thumbnail"


class StylePreset(BaseModel):
    """A named look: words added to the prompt and the negative prompt, and optional guidance."""

    model_config = ConfigDict(extra="forbid")

    prompt_suffix: str = ""
    negative_prompt: str = ""
    guidance: float | None = None


class QualityPreset(BaseModel):
    """A named quality level: more or fewer denoising steps, optionally another guidance."""

    model_config = ConfigDict(extra="forbid")

    steps: int | None = Field(None, ge=1, le=200)
    steps_multiplier: float | None = Field(None, gt=0, le=10)
    guidance: float | None = None


class ModelEntry(BaseModel):
    """One servable model. Several entries may share a `source` (and so one loaded pipeline)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    backend: str = "diffusers"
    source: str = ""  # required, except for `backend = "upstream"`
    description: str = ""
    tasks: list[Task] = Field(default_factory=lambda: [Task.TEXT_TO_IMAGE])
    aspect_ratios: list[str] = Field(default_factory=lambda: list(ASPECT_RATIOS))
    min_size: int = Field(64, ge=8)
    max_size: int = Field(1440, ge=8)
    multiple_of: int = Field(8, ge=1)
    # Free sizes within bounds (OpenAI's gpt-image-2): the longer side at most `max_aspect` times the
    # shorter, and at most `max_pixels` pixels; None: no such bound.
    max_aspect: float | None = Field(None, ge=1)
    max_pixels: int | None = Field(None, ge=64)
    max_n: int = Field(10, ge=1)
    max_prompt_length: int = Field(5000, ge=1)
    # A model that draws at a small native resolution (the built-in one) is sampled at a native shape of
    # the requested aspect ratio whose short side is `native_size`, then resized with `upscale_filter`.
    native_size: int | None = None
    upscale_filter: str = "lanczos"
    credits_per_image: float = Field(1.0, ge=0)
    aliases: list[str] = Field(default_factory=list)
    defaults: ModelDefaults = Field(default_factory=ModelDefaults)
    # Names of the catalog's [styles.*] / [qualities.*] this model accepts; None = all of them.
    styles: list[str] | None = None
    qualities: list[str] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    # A hub id's revision (branch, tag or commit; `easel models pull` writes the commit it downloaded),
    # passed to diffusers with `options.variant` (the weights variant, e.g. "fp16"). None: the main branch.
    revision: str | None = Field(None, min_length=1)
    # The model family (domain/families.py): read from the pipeline's model_index.json when the catalog
    # is loaded (engine/sources.detect_family), or set here. None: an unknown pipeline, run with the
    # generic arguments and no per-family checks.
    family: str | None = None
    # FLUX.1 only: run "true CFG" (a second, unconditional pass) at this scale, which makes a negative
    # prompt mean something. Unset: a negative prompt to a FLUX.1 model is refused.
    true_cfg_scale: float | None = Field(None, gt=1.0, le=20.0)
    # Text-encoder tokens the pipeline is called with (T5 / Gemma families); default: the family's.
    max_sequence_length: int | None = Field(None, ge=16, le=1024)
    # backend = "upstream" (docs/gateway.md): the catalog's [providers.*] entry that serves it, and the
    # model's name there (default: this entry's name).
    provider: str | None = Field(None, min_length=1)
    upstream_model: str | None = Field(None, min_length=1)
    # Other entries (remote ones) that serve a job this one cannot: for a remote entry, after its
    # provider's retries fail or while its circuit is open; for a local entry, once a job has waited
    # `fallback_after_seconds` in the queue without a worker of ours claiming it.
    fallbacks: list[str] = Field(default_factory=list)
    fallback_after_seconds: float | None = Field(None, gt=0, le=86_400)

    @property
    def is_upstream(self) -> bool:
        return self.backend == UPSTREAM

    @model_validator(mode="after")
    def _upstream(self) -> ModelEntry:
        """A remote entry names its provider and no source; a local one a source and no provider."""
        if self.is_upstream:
            if self.provider is None:
                raise ValueError('backend "upstream" needs `provider`, a [providers.*] entry of the catalog')
            if self.source:
                raise ValueError('backend "upstream" has no `source` (the provider serves the model)')
            if self.fallback_after_seconds is not None:
                raise ValueError(
                    "fallback_after_seconds is for local entries (a remote one falls back on failure)"
                )
            if self.upstream_model is None:
                self.upstream_model = self.name
            return self
        if not self.source:
            raise ValueError("`source` is required (a local folder, a file or a hub id)")
        if self.provider is not None or self.upstream_model is not None:
            raise ValueError('provider and upstream_model are for entries with backend = "upstream"')
        if self.fallbacks and self.fallback_after_seconds is None:
            raise ValueError(
                "a local entry with fallbacks needs fallback_after_seconds (how long a job waits first)"
            )
        return self

    @model_validator(mode="after")
    def _family_defaults(self) -> ModelEntry:
        """What the entry does not set comes from its family; what it sets must fit the family."""
        if self.family is None:
            return self
        fam = FAMILIES.get(self.family)
        if fam is None:
            raise ValueError(f"unknown family {self.family!r}; known: {', '.join(family_names())}")
        given = self.model_fields_set
        if "tasks" not in given:
            self.tasks = list(fam.tasks)
        elif extra := [t.value for t in self.tasks if t not in fam.tasks]:
            raise ValueError(
                f"family {fam.name} ({fam.label}) has no pipeline for {extra}; "
                f"it has: {', '.join(t.value for t in fam.tasks)}"
            )
        if "multiple_of" not in given:
            self.multiple_of = fam.multiple_of
        elif self.multiple_of % fam.multiple_of:
            raise ValueError(f"multiple_of must be a multiple of {fam.multiple_of} for family {fam.name}")
        if self.true_cfg_scale is not None and not fam.true_cfg:
            raise ValueError(f"true_cfg_scale is for FLUX.1 models, not family {fam.name}")
        if fam.max_sequence_length is None and self.max_sequence_length is not None:
            raise ValueError(f"family {fam.name} has no max_sequence_length (its CLIP encoders take 77)")
        set_defaults = self.defaults.model_fields_set if "defaults" in given else set()
        changes: dict[str, Any] = {}
        if "steps" not in set_defaults:
            changes["steps"] = fam.default_steps
        if "guidance" not in set_defaults:
            changes["guidance"] = fam.default_guidance
        elif fam.guidance is Guidance.NONE and self.defaults.guidance:
            raise ValueError(f"family {fam.name} takes no guidance scale: defaults.guidance must be 0")
        if changes:
            self.defaults = self.defaults.model_copy(update=changes)
        return self

    @model_validator(mode="after")
    def _single_file(self) -> ModelEntry:
        """A single-file checkpoint does not say what it is: its entry names the family and a diffusers
        folder of the same model for the configs (`options.config`)."""
        if self.backend != "diffusers" or not is_single_file(self.source):
            return self
        loadable = ", ".join(SINGLE_FILE_FAMILIES)
        if self.family is None:
            raise ValueError(
                f"source {self.source!r} is a single-file checkpoint, which does not say which model it is: "
                f"set `family` (one of {loadable})"
            )
        if self.family not in SINGLE_FILE_FAMILIES:
            raise ValueError(
                f"family {self.family} has no single-file loader (families that have one: {loadable}); "
                f"use the model's diffusers folder as `source`"
            )
        config = self.options.get("config")
        if not isinstance(config, str) or not config.strip():
            raise ValueError(
                f"source {self.source!r} is a single-file checkpoint: set options.config to a local "
                f"diffusers-format folder of the same model (its model_index.json and component configs; "
                f"relative to the catalog file), so it loads without the Hub"
            )
        return self

    @model_validator(mode="after")
    def _options(self) -> ModelEntry:
        """A diffusers entry's options are the backend's known ones, each of its type
        (domain/model_options.py); another backend's options are that backend's to check."""
        if self.backend == "diffusers":
            parse_options(self.options)
        return self

    @property
    def diffusers_options(self) -> DiffusersOptions:
        """The entry's options as the diffusers backend reads them."""
        return parse_options(self.options)

    @model_validator(mode="after")
    def _check(self) -> ModelEntry:
        unknown = [a for a in self.aspect_ratios if a not in ASPECT_RATIOS]
        if unknown:
            raise ValueError(f"unknown aspect ratios {unknown}; known: {list(ASPECT_RATIOS)}")
        if self.defaults.aspect_ratio not in self.aspect_ratios:
            raise ValueError("defaults.aspect_ratio must be one of aspect_ratios")
        if self.defaults.image_size not in SIZE_PRESETS:
            raise ValueError(f"defaults.image_size must be one of {list(SIZE_PRESETS)}")
        if self.min_size > self.max_size:
            raise ValueError("min_size > max_size")
        return self

    @property
    def limits(self) -> SizeLimits:
        return SizeLimits(self.min_size, self.max_size, self.multiple_of)

    @property
    def model_family(self) -> Family | None:
        return None if self.family is None else FAMILIES[self.family]

    @property
    def guidance_kind(self) -> Guidance | None:
        """What the guidance scale is for this model; None when its family is unknown."""
        fam = self.model_family
        return None if fam is None else fam.guidance

    @property
    def takes_negative_prompt(self) -> bool:
        fam = self.model_family
        return fam is None or fam.negative_prompt or (fam.true_cfg and self.true_cfg_scale is not None)

    @property
    def sequence_length(self) -> int | None:
        """The max_sequence_length the pipeline is called with (None: the family has none)."""
        fam = self.model_family
        if fam is None or fam.max_sequence_length is None:
            return None
        return self.max_sequence_length or fam.max_sequence_length

    def parameters(self) -> dict[str, Any]:
        """What the model's family means for a request: GET /models' `parameters`."""
        fam = self.model_family
        return {
            "negativePrompt": self.takes_negative_prompt,
            "guidance": None if fam is None else fam.guidance.value,
            "trueCfgScale": self.true_cfg_scale,
            "maxSequenceLength": self.sequence_length,
            "loras": fam is not None and fam.loras,
            "nativeResolution": self.native_size or (None if fam is None else fam.native_size),
        }

    def public(self) -> dict[str, Any]:
        """What GET /models shows."""
        return {
            "id": self.name,
            "description": self.description,
            "backend": self.backend,
            "family": self.family,
            "familyLabel": None if self.model_family is None else self.model_family.label,
            "parameters": self.parameters(),
            "tasks": [t.value for t in self.tasks],
            "aspectRatios": self.aspect_ratios,
            "imageSizes": SIZE_PRESETS,
            "minSize": self.min_size,
            "maxSize": self.max_size,
            "multipleOf": self.multiple_of,
            "maxAspect": self.max_aspect,
            "maxPixels": self.max_pixels,
            "maxN": self.max_n,
            "maxPromptLength": self.max_prompt_length,
            "nativeSize": self.native_size,
            "creditsPerImage": self.credits_per_image,
            "aliases": self.aliases,
            "provider": self.provider,
            "fallbacks": self.fallbacks,
            "defaults": {
                "steps": self.defaults.steps,
                "guidance": self.defaults.guidance,
                "strength": self.defaults.strength,
                "aspectRatio": self.defaults.aspect_ratio,
                "imageSize": self.defaults.image_size,
            },
        }


class LoraEntry(BaseModel):
    """A LoRA adapter requests may apply (`loras: [{"name": ..., "scale": ...}]`)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    # A local .safetensors file or a folder holding one (relative to the catalog file), or a hub id.
    source: str
    weight_name: str | None = None  # the file inside a folder or hub repository, when it has several
    families: list[str] = Field(min_length=1)  # the model families it was trained for
    scale: float = Field(1.0, ge=-4.0, le=4.0)  # used when a request names no scale
    trigger_words: list[str] = Field(default_factory=list)  # added to the prompt when it lacks them
    description: str = ""
    credits_per_image: float = Field(0.0, ge=0)  # on top of the model's

    @model_validator(mode="after")
    def _check(self) -> LoraEntry:
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown families {unknown}; known: {', '.join(family_names())}")
        no_lora = [f for f in self.families if not FAMILIES[f].loras]
        if no_lora:
            raise ValueError(f"families {no_lora} cannot load LoRA adapters")
        return self

    def public(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "description": self.description,
            "families": self.families,
            "scale": self.scale,
            "triggerWords": self.trigger_words,
            "creditsPerImage": self.credits_per_image,
        }


def _check_shared_sources(models: list[ModelEntry]) -> None:
    """Diffusers entries that share a source (and revision) share one loaded pipeline, so they must agree
    on how it is loaded: dtype, variant, compile, channels_last, attention_backend, cpu_offload."""
    first: dict[tuple[str, str | None], ModelEntry] = {}
    for m in models:
        if m.backend != "diffusers":
            continue
        other = first.setdefault((m.source, m.revision), m)
        differ = [] if other is m else load_options_differ(other.options, m.options)
        if differ:
            raise ValueError(
                f"models {other.name!r} and {m.name!r} share the source {m.source!r}, and so one loaded "
                f"pipeline, but set different {', '.join('options.' + d for d in differ)}: give them the "
                f"same (another path to the model's files would load a second pipeline)"
            )


# A function that tells a catalog entry's family from its files (engine/sources.detect_family), given
# the folder relative sources are relative to.
FamilyProbe = Callable[[ModelEntry, str], str | None]


class Catalog:
    """All models, looked up by name or alias, and the LoRA adapters requests may apply."""

    def __init__(
        self,
        models: list[ModelEntry],
        default_model: str,
        base_dir: str,
        styles: dict[str, StylePreset] | None = None,
        qualities: dict[str, QualityPreset] | None = None,
        loras: dict[str, LoraEntry] | None = None,
        providers: dict[str, ProviderEntry] | None = None,
    ) -> None:
        if not models:
            raise ValueError("the catalog lists no models")
        self.providers = providers or {}
        self.base_dir = base_dir  # the folder relative sources are relative to (engine/sources.py)
        self.styles = styles or {}
        self.qualities = qualities or {}
        self.loras = loras or {}
        for m in models:
            for kind, names, known in (
                ("style", m.styles, self.styles),
                ("quality", m.qualities, self.qualities),
            ):
                missing = [n for n in names or [] if n not in known]
                if missing:
                    raise ValueError(f"model {m.name!r} names unknown {kind} presets {missing}")
        _check_shared_sources(models)
        self.models = {m.name: m for m in models}
        self._names: dict[str, str] = {}
        for m in models:
            for name in [m.name, *m.aliases]:
                key = name.lower()
                if key in self._names and self._names[key] != m.name:
                    raise ValueError(f"catalog name {name!r} is used by two models")
                self._names[key] = m.name
        if default_model.lower() not in self._names:
            raise ValueError(f"default_model {default_model!r} is not in the catalog")
        self.default_model = self._names[default_model.lower()]
        self._check_routes()

    def _check_routes(self) -> None:
        """Every remote entry's provider exists; every fallback is another entry, remote, and no chain
        of fallbacks comes back to where it started."""
        for m in self.models.values():
            if m.provider is not None and m.provider not in self.providers:
                known = ", ".join(sorted(self.providers)) or "none"
                raise ValueError(f"model {m.name!r}: unknown provider {m.provider!r} (providers: {known})")
            for name in m.fallbacks:
                target = self.models.get(self._names.get(name.lower(), ""))
                if target is None:
                    raise ValueError(f"model {m.name!r}: fallback {name!r} is not in the catalog")
                if target.name == m.name:
                    raise ValueError(f"model {m.name!r} names itself as a fallback")
                if not target.is_upstream:
                    raise ValueError(
                        f"model {m.name!r}: fallback {name!r} is a local model; fallbacks are remote "
                        f"entries (put the local model first, with the remote one as its fallback)"
                    )
        for m in self.models.values():
            self.route(m)

    def route(self, entry: ModelEntry) -> list[ModelEntry]:
        """The remote entries that may serve a job of `entry`, in order: itself when remote, then its
        fallbacks, each followed by its own (depth first, each entry once)."""
        out: list[ModelEntry] = []

        def visit(m: ModelEntry, path: tuple[str, ...]) -> None:
            if m.name in path:
                raise ValueError(f"fallbacks form a cycle: {' -> '.join((*path, m.name))}")
            if m.is_upstream and m not in out:
                out.append(m)
            for name in m.fallbacks:
                visit(self.models[self._names[name.lower()]], (*path, m.name))

        visit(entry, ())
        return out

    @property
    def local_models(self) -> list[str]:
        """The names of the entries a worker of ours runs (every one but the remote)."""
        return [m.name for m in self.models.values() if not m.is_upstream]

    @property
    def upstream_models(self) -> list[str]:
        return [m.name for m in self.models.values() if m.is_upstream]

    @property
    def has_remote_work(self) -> bool:
        """Whether a gateway worker has anything to serve: remote entries, or local ones falling back."""
        return bool(self.upstream_models or self.fallback_models)

    @property
    def fallback_models(self) -> list[ModelEntry]:
        """Local entries whose jobs go to a remote fallback after waiting."""
        return [m for m in self.models.values() if not m.is_upstream and m.fallbacks]

    @classmethod
    def parse(
        cls, text: str, *, base_dir: str, origin: str = "catalog", probe: FamilyProbe | None = None
    ) -> Catalog:
        """A catalog from TOML text. `base_dir` is what relative sources are relative to (the catalog
        file's folder); `origin` names the text in error messages (the file's path). `probe` tells the
        family of an entry that sets none (it may read the model's files); without it, reads no files."""
        where = origin if origin == "catalog" else f"catalog {origin}"
        raw = tomllib.loads(text)
        models = []
        for name, body in (raw.get("models") or {}).items():
            try:
                entry = ModelEntry(name=name, **body)
                if entry.family is None and probe is not None and not entry.is_upstream:
                    family = probe(entry, base_dir)
                    if family is not None:
                        entry = ModelEntry(name=name, **body, family=family)
                models.append(entry)
            except ValidationError as e:
                raise ValueError(f"{where}: model {name!r}: {e}") from e
        try:
            styles = {k: StylePreset(**v) for k, v in (raw.get("styles") or {}).items()}
            qualities = {k: QualityPreset(**v) for k, v in (raw.get("qualities") or {}).items()}
        except ValidationError as e:
            raise ValueError(f"{where}: presets: {e}") from e
        loras = {}
        for name, body in (raw.get("loras") or {}).items():
            try:
                loras[name] = LoraEntry(name=name, **body)
            except ValidationError as e:
                raise ValueError(f"{where}: lora {name!r}: {e}") from e
        providers = {}
        for name, body in (raw.get("providers") or {}).items():
            try:
                providers[name] = ProviderEntry(name=name, **body)
            except ValidationError as e:
                raise ValueError(f"{where}: provider {name!r}: {e}") from e
        default = raw.get("default_model", models[0].name if models else "")
        try:
            return cls(models, default, base_dir, styles, qualities, loras, providers)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e

    def loras_for(self, entry: ModelEntry) -> list[LoraEntry]:
        """The LoRA adapters that fit a model (its family is one they were trained for)."""
        return [lo for lo in self.loras.values() if entry.family in lo.families]

    def lora(self, name: str) -> LoraEntry | None:
        """A LoRA by name (case-insensitive), None when the catalog has none of that name."""
        found = self.loras.get(name)
        if found is None:
            found = next((lo for n, lo in self.loras.items() if n.lower() == name.lower()), None)
        return found

    def credits_per_image(self, entry: ModelEntry, lora_names: Sequence[str] = ()) -> float:
        """What one image of this model costs with these (known) LoRAs."""
        extra = sum(lo.credits_per_image for n in lora_names if (lo := self.lora(n)) is not None)
        return round(entry.credits_per_image + extra, 6)

    def styles_of(self, entry: ModelEntry) -> dict[str, StylePreset]:
        names = self.styles if entry.styles is None else entry.styles
        return {n: self.styles[n] for n in names}

    def qualities_of(self, entry: ModelEntry) -> dict[str, QualityPreset]:
        names = self.qualities if entry.qualities is None else entry.qualities
        return {n: self.qualities[n] for n in names}

    def describe(self, entry: ModelEntry) -> dict[str, Any]:
        """What GET /models shows of one model, with its styles and qualities."""
        return entry.public() | {
            "styles": sorted(self.styles_of(entry)),
            "qualities": sorted(self.qualities_of(entry)),
            "loras": sorted(lo.name for lo in self.loras_for(entry)),
            "default": entry.name == self.default_model,
        }

    def resolve(self, name: str | None, field: str = "model") -> ModelEntry:
        """The entry for a model name or alias; None means the default model."""
        if name is None or name == "":
            return self.models[self.default_model]
        canonical = self._names.get(name.lower())
        if canonical is None:
            allowed = ", ".join(sorted(self.models))
            raise ValidationFailed(
                f"Unknown model {name!r}. Allowed: {allowed} (or an alias listed by GET /models)",
                [FieldError(field, f"unknown model {name!r}; allowed: {allowed}")],
            )
        return self.models[canonical]
