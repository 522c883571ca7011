"""Tiny diffusers pipelines written back as single-file checkpoints in their families' ORIGINAL layouts,
the files people download: Stable Diffusion's LDM checkpoint (`model.diffusion_model.` UNet,
`first_stage_model.` VAE, `cond_stage_model.transformer.` CLIP), SDXL's (`conditioner.embedders.0` CLIP,
`conditioner.embedders.1` OpenCLIP), SD3's (`model.diffusion_model.joint_blocks`, `text_encoders.clip_l /
clip_g / t5xxl`) and a FLUX.1 transformer in Black Forest Labs' layout (`double_blocks`, `single_blocks`,
`img_in`, `txt_in`, ...).

Each converter is the inverse of the diffusers conversion (diffusers/loaders/single_file_utils.py) for
the keys a tiny model has, written from the original layouts, not from diffusers' tables; each checks
that it used every tensor. Loading the file back through Easel must then give the very weights it came
from, which the tests see as the very same image.

diffusers tells the text encoders in a file apart by their widths, so the SDXL and SD3 pipelines the
tests convert are tests/tiny.py's built with `clip_g_width=24` (SD3's CLIP-L then has an identity
projection: SD3 files carry none, and diffusers puts in the identity).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

Tensors = dict[str, Any]

# ---------------------------------------------------------------------------------------------------
# Building blocks


class _Renamer:
    """Maps a component's diffusers keys with (pattern, function) rules; every key must match one."""

    def __init__(self, rules: list[tuple[str, Callable[..., str]]]) -> None:
        self.rules = [(re.compile(p), f) for p, f in rules]

    def __call__(self, key: str) -> str:
        for pattern, make in self.rules:
            m = pattern.fullmatch(key)
            if m:
                return make(*m.groups())
        raise KeyError(f"no original-layout name for {key}")


def _rename(state: Tensors, rename: Callable[[str], str], prefix: str) -> Tensors:
    return {prefix + rename(k): v for k, v in state.items()}


_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def unet_to_ldm(unet: Any) -> Tensors:
    """A UNet2DConditionModel's weights as the LDM UNet of an SD/SDXL checkpoint (`input_blocks`,
    `middle_block`, `output_blocks`; a down or up block of n resnets is n (+1) numbered LDM blocks)."""
    config = unet.config
    per = config.layers_per_block + 1  # LDM blocks per down block (resnets + downsampler) / up block
    up_attn = {i for i, t in enumerate(config.up_block_types) if "CrossAttn" in t}

    def down(b: str, n: str) -> int:
        return 1 + int(b) * per + int(n)

    rename = _Renamer(
        [
            (r"time_embedding\.linear_([12])\.(\w+)", lambda n, w: f"time_embed.{2 * int(n) - 2}.{w}"),
            (r"add_embedding\.linear_([12])\.(\w+)", lambda n, w: f"label_emb.0.{2 * int(n) - 2}.{w}"),
            (r"conv_in\.(\w+)", lambda w: f"input_blocks.0.0.{w}"),
            (r"conv_norm_out\.(\w+)", lambda w: f"out.0.{w}"),
            (r"conv_out\.(\w+)", lambda w: f"out.2.{w}"),
            (
                r"down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)",
                lambda b, n, m, w: f"input_blocks.{down(b, n)}.0.{_UNET_RESNET[m]}.{w}",
            ),
            (
                r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)",
                lambda b, n, r: f"input_blocks.{down(b, n)}.1.{r}",
            ),
            (
                r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)",
                lambda b, w: f"input_blocks.{down(b, str(per - 1))}.0.op.{w}",
            ),
            (
                r"mid_block\.resnets\.(\d+)\.(\w+)\.(\w+)",
                lambda n, m, w: f"middle_block.{2 * int(n)}.{_UNET_RESNET[m]}.{w}",
            ),
            (r"mid_block\.attentions\.0\.(.+)", lambda r: f"middle_block.1.{r}"),
            (
                r"up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)",
                lambda b, n, m, w: f"output_blocks.{int(b) * per + int(n)}.0.{_UNET_RESNET[m]}.{w}",
            ),
            (
                r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)",
                lambda b, n, r: f"output_blocks.{int(b) * per + int(n)}.1.{r}",
            ),
            (
                r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)",
                lambda b, w: (
                    f"output_blocks.{int(b) * per + per - 1}.{2 if int(b) in up_attn else 1}.conv.{w}"
                ),
            ),
        ]
    )
    return _rename(unet.state_dict(), rename, "model.diffusion_model.")


_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(vae: Any) -> Tensors:
    """An AutoencoderKL's weights as the LDM autoencoder (`first_stage_model.`): encoder `down.i.block`,
    decoder `up.i.block` numbered from the lowest resolution, 1x1-convolution attention."""
    n_up = len(vae.config.up_block_types)

    def resnet(name: str) -> str:
        return "nin_shortcut" if name == "conv_shortcut" else name

    rename = _Renamer(
        [
            (r"(encoder|decoder)\.(conv_in|conv_out)\.(\w+)", lambda s, c, w: f"{s}.{c}.{w}"),
            (r"(encoder|decoder)\.conv_norm_out\.(\w+)", lambda s, w: f"{s}.norm_out.{w}"),
            (r"(post_quant_conv|quant_conv)\.(\w+)", lambda c, w: f"{c}.{w}"),
            (
                r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)",
                lambda b, n, m, w: f"encoder.down.{b}.block.{n}.{resnet(m)}.{w}",
            ),
            (
                r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)",
                lambda b, w: f"encoder.down.{b}.downsample.conv.{w}",
            ),
            (
                r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)",
                lambda b, n, m, w: f"decoder.up.{n_up - 1 - int(b)}.block.{n}.{resnet(m)}.{w}",
            ),
            (
                r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)",
                lambda b, w: f"decoder.up.{n_up - 1 - int(b)}.upsample.conv.{w}",
            ),
            (
                r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(\w+)\.(\w+)",
                lambda s, n, m, w: f"{s}.mid.block_{int(n) + 1}.{resnet(m)}.{w}",
            ),
            (
                r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(\w+)",
                lambda s, a, w: f"{s}.mid.attn_1.{_VAE_ATTENTION[a]}.{w}",
            ),
        ]
    )
    out = _rename(vae.state_dict(), rename, "first_stage_model.")
    for key, value in out.items():  # the original attention projections are 1x1 convolutions
        if ".mid.attn_1." in key and key.endswith(".weight") and value.ndim == 2:
            out[key] = value[:, :, None, None]
    return out


def clip_to_transformers(encoder: Any, prefix: str, *, projection: bool = True) -> Tensors:
    """A CLIP text encoder as the original checkpoints hold it: the transformers module under `prefix`
    (`<prefix>text_model.embeddings...`, whether or not this transformers version wraps it)."""
    out = {}
    for key, value in encoder.state_dict().items():
        if key == "text_projection.weight":
            if projection:
                out[prefix + key] = value
            continue
        out[prefix + (key if key.startswith("text_model.") else "text_model." + key)] = value
    return out


def clip_to_open_clip(encoder: Any, prefix: str) -> Tensors:
    """A CLIPTextModelWithProjection as OpenCLIP holds it (SDXL's second encoder): `resblocks` with fused
    `in_proj` attention, `ln_1`/`ln_2`, `c_fc`/`c_proj`, `positional_embedding`, the projection as a
    (width, dim) matrix."""
    state = encoder.state_dict()
    out: Tensors = {}
    fixed = {
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    for key, name in fixed.items():
        out[prefix + name] = state.pop(key)
    out[prefix + "text_projection"] = state.pop("text_projection.weight").T.contiguous()
    layers = sorted({int(k.split(".")[3]) for k in state if k.startswith("text_model.encoder.layers.")})
    for i in layers:
        src, dst = f"text_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [state.pop(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = _cat(qkv)
            for a, b in (
                ("self_attn.out_proj", "attn.out_proj"),
                ("layer_norm1", "ln_1"),
                ("layer_norm2", "ln_2"),
                ("mlp.fc1", "mlp.c_fc"),
                ("mlp.fc2", "mlp.c_proj"),
            ):
                out[f"{dst}{b}.{kind}"] = state.pop(f"{src}{a}.{kind}")
    if state:
        raise KeyError(f"not converted: {sorted(state)}")
    return out


def _cat(parts: list[Any]) -> Any:
    import torch

    return torch.cat(parts, dim=0)


def _swap_halves(weight: Any) -> Any:
    """(scale, shift) <-> (shift, scale): the original AdaLN projections order them the other way."""
    a, b = weight.chunk(2, dim=0)
    return _cat([b, a])


def flux_to_bfl(transformer: Any, prefix: str = "") -> Tensors:
    """A FluxTransformer2DModel's weights in Black Forest Labs' FLUX.1 layout (flux1-dev.safetensors):
    `img_in`, `txt_in`, `time_in`, `vector_in`, `guidance_in`, `double_blocks.i` (fused qkv per
    stream), `single_blocks.i` (q, k, v and the MLP's input fused in `linear1`), `final_layer`."""
    s = dict(transformer.state_dict())
    out: Tensors = {}

    def move(dst: str, src: str) -> None:
        for kind in ("weight", "bias"):
            if f"{src}.{kind}" in s:
                out[f"{dst}.{kind}"] = s.pop(f"{src}.{kind}")

    for dst, src in (("time_in", "timestep_embedder"), ("vector_in", "text_embedder")) + (
        (("guidance_in", "guidance_embedder"),) if transformer.config.guidance_embeds else ()
    ):
        move(f"{dst}.in_layer", f"time_text_embed.{src}.linear_1")
        move(f"{dst}.out_layer", f"time_text_embed.{src}.linear_2")
    move("txt_in", "context_embedder")
    move("img_in", "x_embedder")
    for i in range(transformer.config.num_layers):
        d, b = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        move(d + "img_mod.lin", b + "norm1.linear")
        move(d + "txt_mod.lin", b + "norm1_context.linear")
        for kind in ("weight", "bias"):
            out[f"{d}img_attn.qkv.{kind}"] = _cat([s.pop(f"{b}attn.to_{p}.{kind}") for p in "qkv"])
            out[f"{d}txt_attn.qkv.{kind}"] = _cat([s.pop(f"{b}attn.add_{p}_proj.{kind}") for p in "qkv"])
        for dst, src in (
            ("img_attn.norm.query_norm", "norm_q"),
            ("img_attn.norm.key_norm", "norm_k"),
            ("txt_attn.norm.query_norm", "norm_added_q"),
            ("txt_attn.norm.key_norm", "norm_added_k"),
        ):
            out[f"{d}{dst}.scale"] = s.pop(f"{b}attn.{src}.weight")
        move(d + "img_mlp.0", b + "ff.net.0.proj")
        move(d + "img_mlp.2", b + "ff.net.2")
        move(d + "txt_mlp.0", b + "ff_context.net.0.proj")
        move(d + "txt_mlp.2", b + "ff_context.net.2")
        move(d + "img_attn.proj", b + "attn.to_out.0")
        move(d + "txt_attn.proj", b + "attn.to_add_out")
    for i in range(transformer.config.num_single_layers):
        d, b = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        move(d + "modulation.lin", b + "norm.linear")
        for kind in ("weight", "bias"):
            parts = [s.pop(f"{b}attn.to_{p}.{kind}") for p in "qkv"] + [s.pop(f"{b}proj_mlp.{kind}")]
            out[f"{d}linear1.{kind}"] = _cat(parts)
        out[d + "norm.query_norm.scale"] = s.pop(b + "attn.norm_q.weight")
        out[d + "norm.key_norm.scale"] = s.pop(b + "attn.norm_k.weight")
        move(d + "linear2", b + "proj_out")
    move("final_layer.linear", "proj_out")
    for kind in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{kind}"] = _swap_halves(s.pop(f"norm_out.linear.{kind}"))
    if s:
        raise KeyError(f"not converted: {sorted(s)}")
    return {prefix + k: v for k, v in out.items()}


def sd3_to_mmdit(transformer: Any, prefix: str = "model.diffusion_model.") -> Tensors:
    """An SD3Transformer2DModel's weights in Stability's MMDiT layout (sd3_medium.safetensors):
    `x_embedder`, `t_embedder`, `y_embedder`, `joint_blocks.i.{x_block,context_block}` (fused qkv), the
    last block's context stream without output projection or MLP, `final_layer`."""
    s = dict(transformer.state_dict())
    out: Tensors = {}

    def move(dst: str, src: str, swap: bool = False) -> None:
        for kind in ("weight", "bias"):
            if f"{src}.{kind}" in s:
                value = s.pop(f"{src}.{kind}")
                out[f"{dst}.{kind}"] = _swap_halves(value) if swap else value

    out["pos_embed"] = s.pop("pos_embed.pos_embed")
    move("x_embedder.proj", "pos_embed.proj")
    move("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1")
    move("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2")
    move("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1")
    move("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2")
    move("context_embedder", "context_embedder")
    last = transformer.config.num_layers - 1
    for i in range(transformer.config.num_layers):
        x, c, b = f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block.", f"transformer_blocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{x}attn.qkv.{kind}"] = _cat([s.pop(f"{b}attn.to_{p}.{kind}") for p in "qkv"])
            out[f"{c}attn.qkv.{kind}"] = _cat([s.pop(f"{b}attn.add_{p}_proj.{kind}") for p in "qkv"])
        move(x + "attn.proj", b + "attn.to_out.0")
        move(c + "attn.proj", b + "attn.to_add_out")
        move(x + "adaLN_modulation.1", b + "norm1.linear")
        move(c + "adaLN_modulation.1", b + "norm1_context.linear", swap=i == last)
        move(x + "mlp.fc1", b + "ff.net.0.proj")
        move(x + "mlp.fc2", b + "ff.net.2")
        move(c + "mlp.fc1", b + "ff_context.net.0.proj")
        move(c + "mlp.fc2", b + "ff_context.net.2")
    move("final_layer.linear", "proj_out")
    move("final_layer.adaLN_modulation.1", "norm_out.linear", swap=True)
    if s:
        raise KeyError(f"not converted: {sorted(s)}")
    return {prefix + k: v for k, v in out.items()}


# ---------------------------------------------------------------------------------------------------
# Whole checkpoints


def sd_checkpoint(pipe: Any) -> Tensors:
    """A StableDiffusionPipeline as an SD 1.x LDM checkpoint (v1-5-pruned-emaonly.safetensors)."""
    return (
        unet_to_ldm(pipe.unet)
        | vae_to_ldm(pipe.vae)
        | clip_to_transformers(pipe.text_encoder, "cond_stage_model.transformer.")
    )


def sdxl_checkpoint(pipe: Any) -> Tensors:
    """A StableDiffusionXLPipeline as an SDXL checkpoint (sd_xl_base_1.0.safetensors)."""
    return (
        unet_to_ldm(pipe.unet)
        | vae_to_ldm(pipe.vae)
        | clip_to_transformers(pipe.text_encoder, "conditioner.embedders.0.transformer.")
        | clip_to_open_clip(pipe.text_encoder_2, "conditioner.embedders.1.model.")
    )


def sd3_checkpoint(pipe: Any) -> Tensors:
    """A StableDiffusion3Pipeline as an SD3 checkpoint with its three text encoders
    (sd3_medium_incl_clips_t5xxlfp16.safetensors)."""
    t5 = {f"text_encoders.t5xxl.transformer.{k}": v for k, v in pipe.text_encoder_3.state_dict().items()}
    return (
        sd3_to_mmdit(pipe.transformer)
        | vae_to_ldm(pipe.vae)
        | clip_to_transformers(pipe.text_encoder, "text_encoders.clip_l.transformer.", projection=False)
        | clip_to_transformers(pipe.text_encoder_2, "text_encoders.clip_g.transformer.")
        | t5
    )


def save_checkpoint(tensors: Tensors, path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(path))
    return path


def config_folder(folder: Path, dest: Path, keep_weights: tuple[str, ...] = ()) -> Path:
    """A copy of a diffusers folder without its weights (but those of the components in
    `keep_weights`): what a single file's `options.config` points at."""

    def ignore(directory: str, names: list[str]) -> list[str]:
        if Path(directory).name in keep_weights:
            return []
        return [n for n in names if n.endswith((".safetensors", ".bin"))]

    shutil.copytree(folder, dest, ignore=ignore)
    return dest
