"""The `options` table of a diffusers catalog entry: how the backend loads and runs its pipeline.

Checked when the catalog is parsed (domain/catalog.py), so an unknown option or a value of the wrong type
is a start-up error naming the entry, never a failed job. What each option does on which device is in
docs/operations.md ("GPU options"); the diffusers backend applies them (engine/backends/diffusers.py).
Entries of other backends keep their options as they are: those are the backend's to read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Dtype = Literal["auto", "fp16", "bf16", "fp32"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
Offload = bool | Literal["model", "sequential"]  # true is refused: say which

# The options that change what a pipeline is once loaded: entries that share a source share one loaded
# pipeline (the cache key is the source and revision), so they must agree on these.
LOAD_OPTIONS = ("variant", "dtype", "compile", "compile_backend", "channels_last", "attention_backend",
                "cpu_offload", "config")  # fmt: skip


class DiffusersOptions(BaseModel):
    """A diffusers entry's options. Strict: TOML's own types only (`compile = "true"` is an error)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # Whether requests for this model may have their prompt rewritten (`autoEnhance`; service layer).
    enhance: bool = True
    # A single-file checkpoint's diffusers folder for its configs (engine/backends/single_file.py).
    config: str | None = Field(None, min_length=1)
    # The weights variant diffusers loads, e.g. "fp16" (diffusion_pytorch_model.fp16.safetensors).
    variant: str | None = Field(None, min_length=1)
    # The dtype the weights are loaded in: auto = fp16 on CUDA, fp32 elsewhere.
    dtype: Dtype = "auto"
    # Deprecated spelling: fp16 = true is dtype "auto", fp16 = false is dtype "fp32".
    fp16: bool | None = None
    # torch.compile the denoiser (unet / transformer): true = mode "default", or one of the modes.
    compile: bool | CompileMode = False
    # torch.compile's backend: "inductor" (the default, generates kernels), "eager" / "aot_eager" (trace
    # only: checks that the model compiles, without the kernels' compile time), "cudagraphs".
    compile_backend: str = Field("inductor", min_length=1)
    # The denoiser's and the VAE's weights (and so their convolutions) in channels-last memory format.
    channels_last: bool = False
    # diffusers' attention backend for the denoiser ("native", "flash", "sage", "xformers", ...).
    attention_backend: str | None = Field(None, min_length=1)
    # Decode in tiles when the sampled image has more than vae_tiling_above² pixels.
    vae_tiling_above: int | None = Field(None, ge=8)
    # Keep the weights in CPU memory and move them to the accelerator when used: per component
    # ("model") or per layer ("sequential", slowest, least memory). No effect on a CPU worker.
    cpu_offload: Offload = False

    @field_validator("cpu_offload")
    @classmethod
    def _offload(cls, v: Offload) -> Offload:
        if v is True:
            raise ValueError("say which")
        return v

    @model_validator(mode="after")
    def _fp16_alias(self) -> DiffusersOptions:
        if self.fp16 is not None and "dtype" in self.model_fields_set:
            raise ValueError("fp16 is the old spelling of dtype: set only dtype")
        if self.compile_backend != "inductor" and self.compile_mode not in (None, "default"):
            raise ValueError(
                f"compile = {self.compile!r} is a mode of the inductor backend, not of compile_backend "
                f"{self.compile_backend!r}: set compile = true with that backend"
            )
        return self

    @property
    def effective_dtype(self) -> Dtype:
        """The dtype asked for, the deprecated `fp16` flag read as its dtype."""
        if self.fp16 is False:
            return "fp32"
        return self.dtype

    @property
    def compile_mode(self) -> CompileMode | None:
        """The torch.compile mode, None when the denoiser is not compiled."""
        if self.compile is False:
            return None
        return "default" if self.compile is True else self.compile


def parse_options(options: dict[str, Any]) -> DiffusersOptions:
    """A diffusers entry's options, or ValueError saying which option is wrong and why, e.g.
    `options.dtype: must be one of auto, fp16, bf16, fp32 (got 'float16')`."""
    try:
        return DiffusersOptions.model_validate(options)
    except ValidationError as e:
        messages = [_message(err) for err in e.errors()]
        raise ValueError("; ".join(dict.fromkeys(messages))) from None  # a union's errors say it once


def _message(err: Any) -> str:
    field = err["loc"][0] if err["loc"] else None
    where = "options" if field is None else f"options.{field}"
    if err["type"] == "extra_forbidden":
        known = ", ".join(DiffusersOptions.model_fields)
        return f"{where}: unknown option (the diffusers backend's options: {known})"
    got = f" (got {err['input']!r})" if "input" in err and field is not None else ""
    hint = _HINTS.get(str(field))
    if hint is not None:
        return f"{where}: {hint}{got}"
    return f"{where}: {err['msg'].removeprefix('Value error, ')}{got}"


_HINTS = {
    "dtype": "must be one of auto, fp16, bf16, fp32",
    "compile": "must be false, true or a mode: default, reduce-overhead, max-autotune, "
    "max-autotune-no-cudagraphs",
    "cpu_offload": 'must be false, "model" or "sequential"',
    "vae_tiling_above": "must be a whole number of pixels (the side of a square), at least 8",
    "channels_last": "must be true or false",
    "enhance": "must be true or false",
    "fp16": "must be true or false (deprecated: use dtype)",
}


def load_options_differ(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The load options (LOAD_OPTIONS) on which two entries' options disagree, each as written."""
    pa, pb = parse_options(a), parse_options(b)
    out = []
    for name in LOAD_OPTIONS:
        if name == "dtype":
            if pa.effective_dtype != pb.effective_dtype:
                out.append("dtype")
        elif name == "compile":
            if pa.compile_mode != pb.compile_mode:
                out.append("compile")
        elif getattr(pa, name) != getattr(pb, name):
            out.append(name)
    return out
