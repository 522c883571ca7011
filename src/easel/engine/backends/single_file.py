"""Single-file checkpoints: one `.safetensors` (or `.ckpt`) file in the original layout of its family.

A file does not say what it is, so the catalog entry names its `family` and, in `options.config`, a local
diffusers-format folder of the same model: its `model_index.json` and each component's config, tokenizer
and scheduler files (weights are not needed, except where the file lacks a component, see FLUX.1). The
weights come from the file, converted by diffusers' single-file loaders; nothing is fetched from the Hub.

- SD 1.x/2.x, SDXL, SD3/3.5: the whole pipeline is one file (`model.diffusion_model.` UNet or MMDiT,
  `first_stage_model.` VAE, the text encoders under `cond_stage_model.`, `conditioner.embedders.` or
  `text_encoders.`), loaded with the family's pipeline class `from_single_file(file, config=folder)`.
  SD3 files that leave out the T5 encoder take it from the folder, which then holds its weights.
- FLUX.1 [dev] / [schnell]: the file is the transformer in Black Forest Labs' layout (`double_blocks`,
  `single_blocks`, `img_in`, `txt_in`, ...), the rest of the pipeline (VAE, CLIP and T5 encoders with
  their weights, tokenizers, scheduler) comes from the folder.

Nothing here runs at import time: torch and diffusers are imported when a file is loaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from easel.engine.backends.base import ModelUnavailable

# The pipeline class whose `from_single_file` loads a whole-pipeline file of each family; FLUX.1 files
# hold only the transformer (load_flux below). Families not here (PixArt-Σ) have no single-file loader,
# which the catalog already refuses (domain/catalog.SINGLE_FILE_FAMILIES lists the same names).
PIPELINES = {
    "sd": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
}
FLUX_FAMILIES = ("flux", "flux-schnell")
FAMILIES = (*PIPELINES, *FLUX_FAMILIES)

# What diffusers' FLUX.1 converter assumes about the transformer (FLUX.1's width); other widths are
# split here (see flux_state_dict).
_FLUX_INNER_DIM = 3072
_FLUX_MLP_RATIO = 4
_LINEAR1 = re.compile(r"single_blocks\.(\d+)\.linear1\.(weight|bias)")


def config_folder(path: Path, family: str, options: dict[str, Any]) -> Path:
    """The entry's `options.config`: an existing local folder with the pipeline's model_index.json."""
    config = options.get("config")
    if not config:
        raise ModelUnavailable(
            f"single file {path.name}: set options.config in the catalog entry to a local diffusers-format "
            f"folder of the same {family} model (its model_index.json and component configs), so the file "
            f"loads without the Hub"
        )
    folder = Path(str(config)).expanduser()
    if not folder.is_dir():
        raise ModelUnavailable(
            f"single file {path.name}: options.config folder {str(config)!r} does not exist; point it at a "
            f"local diffusers-format folder of the same {family} model (relative paths are relative to the "
            f"catalog file), e.g. one downloaded with `hf download <repo> --include '*.json' '*.txt' "
            f"'*.model' --local-dir <folder>`"
        )
    if not (folder / "model_index.json").is_file():
        raise ModelUnavailable(
            f"single file {path.name}: options.config folder {str(folder)!r} has no model_index.json; it "
            f"must be a diffusers-format pipeline folder of the same {family} model"
        )
    return folder


def load_single_file(path: Path, family: str | None, options: dict[str, Any], dtype: Any) -> Any:
    """The text-to-image pipeline of a single-file checkpoint of `family` (config: options.config)."""
    if family is None:
        raise ModelUnavailable(
            f"single file {path.name}: a checkpoint file does not say which model family it is; set "
            f"`family` in its catalog entry (one of {', '.join(FAMILIES)})"
        )
    if family not in FAMILIES:
        raise ModelUnavailable(
            f"single file {path.name}: family {family} has no single-file loader (those that have one: "
            f"{', '.join(FAMILIES)}); convert it to a diffusers folder and point `source` at that"
        )
    folder = config_folder(path, family, options)
    try:
        if family in FLUX_FAMILIES:
            pipe = load_flux(path, folder, dtype)
        else:
            import diffusers

            cls = getattr(diffusers, PIPELINES[family])
            pipe = cls.from_single_file(str(path), config=str(folder), local_files_only=True, dtype=dtype)
    except ModelUnavailable:
        raise
    except Exception as e:  # a converter's KeyError, a shape mismatch, a missing component...
        raise ModelUnavailable(
            f"cannot load single file {path.name} as family {family} with config {str(folder)!r}: "
            f"{type(e).__name__}: {e}. Check that the file is a {family} checkpoint in its original layout "
            f"and that options.config is the diffusers folder of the same model (same architecture)"
        ) from e
    _finish(pipe, path, family)
    return pipe


def load_flux(path: Path, folder: Path, dtype: Any) -> Any:
    """A FLUX.1 pipeline: the transformer from the file (BFL layout), everything else from the folder."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    checkpoint = load_single_file_checkpoint(str(path), local_files_only=True)
    config = FluxTransformer2DModel.load_config(str(folder), subfolder="transformer", local_files_only=True)
    transformer = FluxTransformer2DModel.from_single_file(
        flux_state_dict(checkpoint, config),
        config=str(folder),
        subfolder="transformer",
        local_files_only=True,
        dtype=dtype,
    )
    return FluxPipeline.from_pretrained(
        str(folder), transformer=transformer, dtype=dtype, local_files_only=True
    )


def flux_state_dict(checkpoint: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The transformer's diffusers state dict from a FLUX.1 checkpoint in BFL's layout (a diffusers-format
    file is returned as it is). diffusers' converter splits each single block's fused `linear1` (q, k,
    v, MLP) at FLUX.1's width, 3072; a transformer of another width (distilled and test models) is split
    here at its config's width and the converter is handed empty stand-ins for those tensors."""
    import torch
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    state = {k.removeprefix("model.diffusion_model."): v for k, v in checkpoint.items()}
    if not any(k.startswith("double_blocks.") for k in state):
        return state  # already diffusers' layout: from_single_file loads it without converting
    inner = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    split: dict[str, Any] = {}
    if inner != _FLUX_INNER_DIM:
        for key, match in [(k, m) for k in state if (m := _LINEAR1.fullmatch(k))]:
            block, kind = match.groups()
            q, k, v, mlp = torch.split(state[key], [inner, inner, inner, inner * _FLUX_MLP_RATIO], dim=0)
            prefix = f"single_transformer_blocks.{block}."
            for name, part in (("attn.to_q", q), ("attn.to_k", k), ("attn.to_v", v), ("proj_mlp", mlp)):
                split[f"{prefix}{name}.{kind}"] = part
            state[key] = torch.empty(_FLUX_INNER_DIM * (3 + _FLUX_MLP_RATIO), 0)
    converted: dict[str, Any] = convert_flux_transformer_checkpoint_to_diffusers(state)
    converted.update(split)
    leftover = sorted(k for k in state if k.startswith(("double_blocks.", "single_blocks.", "final_layer.")))
    if leftover:
        raise ValueError(f"{len(leftover)} tensors of the checkpoint were not converted, e.g. {leftover[0]}")
    return converted


def _finish(pipe: Any, path: Path, family: str) -> None:
    """Every component in inference mode, every weight from somewhere. diffusers 0.42 leaves a T5
    encoder built from a checkpoint (SD3's `text_encoders.t5xxl`) in training mode, dropout on, which
    would draw a different picture per call; and a tensor the file lacked and no folder supplied would
    be left on the `meta` device (no data) and fail only at the first generation."""
    for name, module in getattr(pipe, "components", {}).items():
        if not callable(getattr(module, "named_parameters", None)):
            continue
        module.eval()
        missing = [n for n, p in module.named_parameters() if p.is_meta]
        if missing:
            raise ModelUnavailable(
                f"single file {path.name} ({family}) lacks {len(missing)} weights of {name}, e.g. "
                f"{missing[0]}; the file is incomplete or not of the architecture options.config describes"
            )
