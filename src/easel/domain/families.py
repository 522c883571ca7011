"""Model families: what a kind of diffusion pipeline can do and which parameters it takes.

A catalog entry's family is read from its pipeline's `model_index.json` (`_class_name`, and for FLUX.1
whether the transformer embeds guidance), or set in the catalog (`family = "sdxl"`). The family decides
which tasks exist (text-to-image, image-to-image, inpainting: diffusers' AutoPipelines where the family
has them), whether a negative prompt means anything, what "guidance" is, the native resolution, the size
multiple, the text encoder's sequence length and the defaults. Requests are checked against it before
they are queued (domain/spec.py) and the backend passes the pipeline exactly the arguments it accepts.

Adding a family: one `Family(...)` below with the pipeline class names that identify it, a tiny
pipeline of it in tests/tiny.py, and a row in docs/models.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Task(StrEnum):
    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_TO_IMAGE = "image-to-image"
    INPAINT = "inpaint"
    VARIATION = "variation"


class Guidance(StrEnum):
    """What a family's guidance scale is."""

    CFG = "cfg"  # classifier-free guidance: a conditional and an unconditional (negative) pass per step
    EMBEDDED = "embedded"  # guidance-distilled (FLUX.1 [dev]): the scale is an input of the model, one pass
    NONE = "none"  # timestep-distilled (FLUX.1 [schnell]): no guidance scale at all


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    pipelines: tuple[str, ...]  # diffusers pipeline class names (model_index.json `_class_name`)
    tasks: tuple[Task, ...]
    guidance: Guidance
    negative_prompt: bool  # does the pipeline use a negative prompt (without true CFG)
    # FLUX.1 accepts a negative prompt only with "true CFG" (a second, unconditional pass): an entry
    # enables it with `true_cfg_scale`.
    true_cfg: bool
    native_size: int  # the resolution (short side) it was trained at
    multiple_of: int  # image sides must be multiples of this (VAE factor x patch size)
    max_sequence_length: int | None  # T5 / Gemma tokens the pipeline is called with; None = CLIP's 77
    default_steps: int
    default_guidance: float
    loras: bool = True  # diffusers can load LoRA adapters into it
    # Fixed pipeline arguments. PixArt: Easel sizes the sampling itself (native_size, multiple_of), so
    # the pipeline's own resolution binning stays off; captions are not rewritten (clean_caption needs
    # bs4 and ftfy and changes what the client asked for).
    call_arguments: tuple[tuple[str, object], ...] = ()

    def public(self) -> dict[str, object]:
        return {
            "id": self.name,
            "label": self.label,
            "guidance": self.guidance.value,
            "negativePrompt": self.negative_prompt,
            "trueCfg": self.true_cfg,
            "nativeSize": self.native_size,
            "maxSequenceLength": self.max_sequence_length,
            "loras": self.loras,
        }


_EDIT = (Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE, Task.INPAINT, Task.VARIATION)
_TEXT_ONLY = (Task.TEXT_TO_IMAGE,)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "sd",
            "Stable Diffusion 1.x / 2.x",
            ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"),
            _EDIT,
            Guidance.CFG,
            negative_prompt=True,
            true_cfg=False,
            native_size=512,
            multiple_of=8,
            max_sequence_length=None,
            default_steps=30,
            default_guidance=7.5,
        ),
        Family(
            "sdxl",
            "Stable Diffusion XL",
            (
                "StableDiffusionXLPipeline",
                "StableDiffusionXLImg2ImgPipeline",
                "StableDiffusionXLInpaintPipeline",
            ),
            _EDIT,
            Guidance.CFG,
            negative_prompt=True,
            true_cfg=False,
            native_size=1024,
            multiple_of=8,
            max_sequence_length=None,
            default_steps=30,
            default_guidance=5.0,
        ),
        Family(
            "sd3",
            "Stable Diffusion 3 / 3.5",
            (
                "StableDiffusion3Pipeline",
                "StableDiffusion3Img2ImgPipeline",
                "StableDiffusion3InpaintPipeline",
            ),
            _EDIT,
            Guidance.CFG,
            negative_prompt=True,
            true_cfg=False,
            native_size=1024,
            multiple_of=16,
            max_sequence_length=256,
            default_steps=28,
            default_guidance=4.5,
        ),
        Family(
            "flux",
            "FLUX.1 [dev] (guidance-distilled)",
            ("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline"),
            _EDIT,
            Guidance.EMBEDDED,
            negative_prompt=False,
            true_cfg=True,
            native_size=1024,
            multiple_of=16,
            max_sequence_length=512,
            default_steps=28,
            default_guidance=3.5,
        ),
        Family(
            "flux-schnell",
            "FLUX.1 [schnell] (timestep-distilled)",
            (),  # FluxPipeline whose transformer has no guidance embedding (sources.detect_family)
            _EDIT,
            Guidance.NONE,
            negative_prompt=False,
            true_cfg=True,
            native_size=1024,
            multiple_of=16,
            max_sequence_length=256,
            default_steps=4,
            default_guidance=0.0,
        ),
        Family(
            "pixart-sigma",
            "PixArt-Σ",
            ("PixArtSigmaPipeline",),
            _TEXT_ONLY,
            Guidance.CFG,
            negative_prompt=True,
            true_cfg=False,
            native_size=1024,
            multiple_of=16,
            max_sequence_length=300,
            default_steps=20,
            default_guidance=4.5,
            loras=False,  # diffusers has no LoRA loader for PixArt pipelines
            call_arguments=(("use_resolution_binning", False), ("clean_caption", False)),
        ),
    )
}

_BY_PIPELINE = {p: f.name for f in FAMILIES.values() for p in f.pipelines}


def family_for_pipeline(class_name: str, *, guidance_embeds: bool | None = None) -> str | None:
    """The family of a diffusers pipeline class, None when Easel does not know it. A FLUX pipeline
    whose transformer has no guidance embedding is FLUX.1 [schnell]-like."""
    name = _BY_PIPELINE.get(class_name)
    if name == "flux" and guidance_embeds is False:
        return "flux-schnell"
    return name


def family_names() -> list[str]:
    return sorted(FAMILIES)
