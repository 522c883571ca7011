"""Tiny, seeded diffusers pipelines that the tests build themselves (no downloads), diffusers-style."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from easel.domain.families import FAMILIES

_SPECIAL = ["<|startoftext|>", "<|endoftext|>"]


def write_clip_tokenizer(folder: Path) -> None:
    """A character-level CLIP BPE tokenizer in the standard transformers format."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(33, 127)]
    vocab = {tok: i for i, tok in enumerate([*chars, *(c + "</w>" for c in chars), *_SPECIAL])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 32,
                "bos_token": _SPECIAL[0],
                "eos_token": _SPECIAL[1],
                "unk_token": _SPECIAL[1],
                "pad_token": _SPECIAL[1],
            }
        )
    )
    (folder / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "bos_token": _SPECIAL[0],
                "eos_token": _SPECIAL[1],
                "unk_token": _SPECIAL[1],
                "pad_token": _SPECIAL[1],
            }
        )
    )


def build_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random StableDiffusionPipeline (latent factor 2) to `folder` and return it."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        norm_num_groups=4,
        attention_head_dim=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
    )
    tok_dir = folder / "_tok"
    write_clip_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=32,
        )
    )
    scheduler = DPMSolverMultistepScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


TINY_CLIP_MAX_LENGTH = 32
TINY_T5_MAX_LENGTH = 32  # catalogs of the T5 families set max_sequence_length to this


def write_t5_tokenizer(folder: Path) -> Any:
    """A character-level T5 (Unigram) tokenizer, built offline, saved in the transformers format."""
    from transformers import T5TokenizerFast

    chars = [chr(c) for c in range(33, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    vocab += [(c, -2.0) for c in chars] + [("▁" + c, -1.5) for c in chars]
    tokenizer = T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=TINY_T5_MAX_LENGTH)
    tokenizer.save_pretrained(str(folder))
    return T5TokenizerFast.from_pretrained(str(folder))


def _t5(vocab_size: int, d_model: int = 32) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=d_model,
            d_ff=37,
            d_kv=8,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )


def _clip(tokenizer: Any, hidden: int, projection: int | None = None) -> Any:
    """A tiny CLIP text encoder; with `projection` the pooled output goes through a projection
    (CLIPTextModelWithProjection: SDXL's second encoder, SD3's two)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=2,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=TINY_CLIP_MAX_LENGTH,
        projection_dim=projection or hidden,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _clip_tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    write_clip_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(str(folder))


def _vae(latent_channels: int, flow: bool = False) -> Any:
    """A VAE with latent factor 2 (two blocks). The flow-matching families (SD3, FLUX) shift and scale
    their latents and have no quant convolutions."""
    from diffusers import AutoencoderKL

    extra: dict[str, Any] = {}
    if flow:
        extra = {
            "use_quant_conv": False,
            "use_post_quant_conv": False,
            "shift_factor": 0.0609,
            "scaling_factor": 1.5035,
        }
    return AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=latent_channels,
        norm_num_groups=4,
        **extra,
    )


def build_tiny_sdxl(folder: Path, seed: int = 0, clip_g_width: int = 16) -> Path:
    """A tiny StableDiffusionXLPipeline: two CLIP encoders (the second, `clip_g_width` wide, with a
    projection to 16) and a UNet with SDXL's text-time conditioning. Single-file tests give the second
    encoder another width than the first: diffusers tells a file's encoders apart by their widths."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 16,  # six time ids x 8 + the pooled projection
        cross_attention_dim=16 + clip_g_width,  # both encoders' hidden states, concatenated
        norm_num_groups=4,
    )
    tokenizer = _clip_tokenizer(folder / "_tok")
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        vae=_vae(4),
        text_encoder=_clip(tokenizer, 16),
        text_encoder_2=_clip(tokenizer, clip_g_width, projection=16),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=EulerDiscreteScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1
        ),
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def build_tiny_sd3(folder: Path, seed: int = 0, clip_g_width: int = 16) -> Path:
    """A tiny StableDiffusion3Pipeline: two CLIP encoders with projections to 16 (CLIP-L 16 wide, CLIP-G
    `clip_g_width`), a T5 encoder as wide as both and an MMDiT transformer over 16-channel latents (as
    SD3's). With a CLIP-G of another width (single-file tests: diffusers tells a file's encoders apart
    by their widths) CLIP-L's projection is the identity, as SD3 files imply (they carry none)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=1,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=16 + clip_g_width,  # T5's width (the CLIP states are padded to it)
        pooled_projection_dim=32,  # both CLIP projections, concatenated
    )
    tokenizer = _clip_tokenizer(folder / "_tok")
    t5_tokenizer = write_t5_tokenizer(folder / "_t5tok")
    clip_l = _clip(tokenizer, 16, projection=16)
    if clip_g_width != 16:
        with torch.no_grad():
            clip_l.text_projection.weight.copy_(torch.eye(16))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        vae=_vae(16, flow=True),
        text_encoder=clip_l,
        text_encoder_2=_clip(tokenizer, clip_g_width, projection=16),
        text_encoder_3=_t5(len(t5_tokenizer), d_model=16 + clip_g_width),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        tokenizer_3=t5_tokenizer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def build_tiny_flux(folder: Path, seed: int = 0, guidance_embeds: bool = True) -> Path:
    """A tiny FluxPipeline: a CLIP encoder (pooled), a T5 encoder and a FLUX transformer over packed
    latents. With `guidance_embeds` the guidance scale is an input of the model (FLUX.1 [dev]); without,
    it is FLUX.1 [schnell]-like."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * 4,  # 2x2 patches of 4-channel latents
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,  # T5's width
        pooled_projection_dim=16,  # CLIP's pooled output
        axes_dims_rope=[4, 4, 8],  # sums to attention_head_dim
        guidance_embeds=guidance_embeds,
    )
    tokenizer = _clip_tokenizer(folder / "_tok")
    t5_tokenizer = write_t5_tokenizer(folder / "_t5tok")
    pipe = FluxPipeline(
        transformer=transformer,
        vae=_vae(4, flow=True),
        text_encoder=_clip(tokenizer, 16),
        text_encoder_2=_t5(len(t5_tokenizer)),
        tokenizer=tokenizer,
        tokenizer_2=t5_tokenizer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def build_tiny_pixart_sigma(folder: Path, seed: int = 0) -> Path:
    """A tiny PixArtSigmaPipeline: a T5 encoder and a PixArt DiT (learned sigma: twice the latent
    channels out)."""
    import torch
    from diffusers import DDIMScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=16,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=32,  # T5's width
        in_channels=4,
        cross_attention_dim=24,  # heads x head dim
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    t5_tokenizer = write_t5_tokenizer(folder / "_t5tok")
    pipe = PixArtSigmaPipeline(
        transformer=transformer,
        vae=_vae(4),
        text_encoder=_t5(len(t5_tokenizer)),
        tokenizer=t5_tokenizer,
        scheduler=DDIMScheduler(),
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # the attention projections of a UNet or DiT
LORA_FILE = "pytorch_lora_weights.safetensors"


def build_tiny_lora(pipeline_folder: Path, out_folder: Path, family: str, seed: int = 0) -> Path:
    """A tiny LoRA for the tiny pipeline in `pipeline_folder` (built above), made with `peft` on its
    denoiser's attention projections (the UNet's for sd / sdxl, the transformer's for sd3 / flux /
    flux-schnell), with random non-zero weights (peft starts lora_B at zero, which changes nothing), and
    saved in the diffusers LoRA format by the pipeline class's `save_lora_weights`. Returns the file
    (`out_folder/pytorch_lora_weights.safetensors`)."""
    import diffusers
    import torch
    from peft import LoraConfig, get_peft_model_state_dict

    index = json.loads((pipeline_folder / "model_index.json").read_text())
    component = "unet" if family in ("sd", "sdxl") else "transformer"
    model_class = getattr(diffusers, index[component][1])
    denoiser = model_class.from_pretrained(str(pipeline_folder / component))
    torch.manual_seed(seed)
    denoiser.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=LORA_TARGETS, init_lora_weights=False))
    with torch.no_grad():  # the default init is large for these tiny layers: a visible but sane change
        for name, param in denoiser.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn_like(param) * 0.3)
    layers = get_peft_model_state_dict(denoiser)
    out_folder.mkdir(parents=True, exist_ok=True)
    pipeline_class = getattr(diffusers, index["_class_name"])
    key = "unet_lora_layers" if component == "unet" else "transformer_lora_layers"
    pipeline_class.save_lora_weights(str(out_folder), **{key: layers}, weight_name=LORA_FILE)
    return out_folder / LORA_FILE


# ---------------------------------------------------------------------------------------------------
# The families' tiny pipelines, for the tests that run every family


def _build_tiny_flux_schnell(folder: Path, seed: int = 0) -> Path:
    return build_tiny_flux(folder, seed, guidance_embeds=False)


FAMILY_BUILDERS: dict[str, Callable[..., Path]] = {
    "sd": build_tiny_sd,
    "sdxl": build_tiny_sdxl,
    "sd3": build_tiny_sd3,
    "flux": build_tiny_flux,
    "flux-schnell": _build_tiny_flux_schnell,
    "pixart-sigma": build_tiny_pixart_sigma,
}
# At another batch size CPU kernels may round the last bit differently: after 8-bit quantisation that is
# at most a level or two on a few pixels (docs/architecture.md, "Batching and determinism").
BATCH_MAX_LEVELS = 2
BATCH_MAX_SHARE = 0.02


def tiny_entry(name: str, source: str, family: str, extra: str = "", **defaults: float) -> str:
    """The catalog TOML of a tiny pipeline of `family` at `source`: sizes 16..128, two steps, T5
    prompts as long as the tiny tokenizer's (`max_sequence_length`), `extra` lines, more defaults."""
    text = f'[models.{name}]\nsource = "{source}"\nmin_size = 16\nmax_size = 128\n{extra}'
    if FAMILIES[family].max_sequence_length is not None:
        text += f"max_sequence_length = {TINY_T5_MAX_LENGTH}\n"
    text += f"[models.{name}.defaults]\nsteps = 2\n"
    return text + "".join(f"{k} = {v}\n" for k, v in defaults.items())
