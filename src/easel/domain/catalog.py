"""The model catalog: which models exist, what each can do, and what each name resolves to.

The catalog is data (a TOML file, see models/catalog.toml). Every request is checked against the
entry of its model before anything is queued, so a client learns about an unsupported parameter from a
400 that names the field and the allowed values, never from a failure deep inside a worker.
"""

from __future__ import annotations

import tomllib
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from easel.domain.errors import FieldError, ValidationFailed
from easel.domain.sizes import ASPECT_RATIOS, SIZE_PRESETS, SizeLimits


class Task(StrEnum):
    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_TO_IMAGE = "image-to-image"
    INPAINT = "inpaint"
    VARIATION = "variation"


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
    source: str
    description: str = ""
    tasks: list[Task] = Field(default_factory=lambda: [Task.TEXT_TO_IMAGE])
    aspect_ratios: list[str] = Field(default_factory=lambda: list(ASPECT_RATIOS))
    min_size: int = Field(64, ge=8)
    max_size: int = Field(1440, ge=8)
    multiple_of: int = Field(8, ge=1)
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

    def public(self) -> dict[str, Any]:
        """What GET /models shows."""
        return {
            "id": self.name,
            "description": self.description,
            "backend": self.backend,
            "tasks": [t.value for t in self.tasks],
            "aspectRatios": self.aspect_ratios,
            "imageSizes": SIZE_PRESETS,
            "minSize": self.min_size,
            "maxSize": self.max_size,
            "multipleOf": self.multiple_of,
            "maxN": self.max_n,
            "maxPromptLength": self.max_prompt_length,
            "nativeSize": self.native_size,
            "creditsPerImage": self.credits_per_image,
            "aliases": self.aliases,
            "defaults": {
                "steps": self.defaults.steps,
                "guidance": self.defaults.guidance,
                "strength": self.defaults.strength,
                "aspectRatio": self.defaults.aspect_ratio,
                "imageSize": self.defaults.image_size,
            },
        }


class Catalog:
    """All models, looked up by name or alias."""

    def __init__(
        self,
        models: list[ModelEntry],
        default_model: str,
        base_dir: str,
        styles: dict[str, StylePreset] | None = None,
        qualities: dict[str, QualityPreset] | None = None,
    ) -> None:
        if not models:
            raise ValueError("the catalog lists no models")
        self.base_dir = base_dir  # the folder relative sources are relative to (engine/sources.py)
        self.styles = styles or {}
        self.qualities = qualities or {}
        for m in models:
            for kind, names, known in (
                ("style", m.styles, self.styles),
                ("quality", m.qualities, self.qualities),
            ):
                missing = [n for n in names or [] if n not in known]
                if missing:
                    raise ValueError(f"model {m.name!r} names unknown {kind} presets {missing}")
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

    @classmethod
    def parse(cls, text: str, *, base_dir: str, origin: str = "catalog") -> Catalog:
        """A catalog from TOML text. `base_dir` is what relative sources are relative to (the catalog
        file's folder); `origin` names the text in error messages (the file's path). Reads no files."""
        where = origin if origin == "catalog" else f"catalog {origin}"
        raw = tomllib.loads(text)
        models = []
        for name, body in (raw.get("models") or {}).items():
            try:
                models.append(ModelEntry(name=name, **body))
            except ValidationError as e:
                raise ValueError(f"{where}: model {name!r}: {e}") from e
        try:
            styles = {k: StylePreset(**v) for k, v in (raw.get("styles") or {}).items()}
            qualities = {k: QualityPreset(**v) for k, v in (raw.get("qualities") or {}).items()}
        except ValidationError as e:
            raise ValueError(f"{where}: presets: {e}") from e
        default = raw.get("default_model", models[0].name if models else "")
        return cls(models, default, base_dir, styles, qualities)

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
