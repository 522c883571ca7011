"""Components of Easel's built-in model and their packaging as a standard diffusers
StableDiffusionPipeline folder.

- tokenizer: word-level vocabulary expressed as a CLIP BPE (vocab.json + merges.txt,
  tokenizer_class CLIPTokenizer) so it loads with CLIPTokenizer / CLIPTokenizerFast in
  transformers 4 and 5.  Words outside the vocabulary are split into character pieces
  (or the unk token); all such pieces share the unk token's embedding in the exported
  text encoder, so an unknown word acts as an unknown token.
- text_encoder: a small CLIPTextModel trained from scratch.
- unet: a small pixel-space UNet2DConditionModel (4 input channels so that the standard
  "legacy" 4-channel inpainting path works).
- vae: an AutoencoderKL whose weights are set so that it is an exact pass-through
  (RGB -> latents [r, g, b, 0] and back); the UNet therefore works in pixel space.
- scheduler: DPMSolverMultistepScheduler (cosine betas; epsilon prediction with the x0
  estimate clipped, or v-prediction).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch

try:
    from . import scenes
except ImportError:  # run as a script from training/
    import scenes

NATIVE = 32
MAX_TOKENS = 20
BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"

UNET_CONFIG = dict(
    sample_size=NATIVE,
    in_channels=4,
    out_channels=4,
    # no attention at 32 px (1,024 tokens: 40 % of the step time, measured); text enters at 16, 8 and 4 px
    # and through the pooled embedding added to the time embedding
    down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
    up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",),
    mid_block_type="UNetMidBlock2DCrossAttn",
    block_out_channels=(32, 64, 64, 96),
    layers_per_block=1,
    norm_num_groups=8,
    cross_attention_dim=128,
    attention_head_dim=(2, 4, 4, 4),  # number of heads per block (diffusers naming)
    only_cross_attention=(False, True, False, False),
    mid_block_only_cross_attention=False,
    addition_embed_type="text",
    addition_embed_type_num_heads=4,
    flip_sin_to_cos=True,
    freq_shift=0,
)

TEXT_CONFIG = dict(
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=MAX_TOKENS,
    hidden_act="quick_gelu",
    projection_dim=128,
)

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="v_prediction",
    algorithm_type="dpmsolver++",
    solver_order=2,
    lower_order_final=True,
    timestep_spacing="linspace",
    final_sigmas_type="zero",
    steps_offset=1,
)


# ----------------------------------------------------------------------------- tokenizer
def build_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style BPE (vocab + merges) in which every grammar word is one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    words = scenes.VOCAB_WORDS
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=2000, min_frequency=1, show_progress=False, end_of_word_suffix="</w>", special_tokens=[]
    )
    tok.train_from_iterator([" ".join(words)] * 2, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    pieces = sorted(model["vocab"], key=lambda t: model["vocab"][t])
    # ids: specials first, then grammar words, then the other pieces
    vocab: dict[str, int] = {BOS: 0, EOS: 1, UNK: 2}
    for w in words:
        vocab[w + "</w>"] = len(vocab)
    for p in pieces:
        if p not in vocab:
            vocab[p] = len(vocab)
    return vocab, merges


def word_token_ids(vocab: dict[str, int]) -> list[int]:
    return [vocab[BOS], vocab[EOS], vocab[UNK]] + [vocab[w + "</w>"] for w in scenes.VOCAB_WORDS]


def save_tokenizer(folder: str, vocab: dict[str, int], merges) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f, indent=0, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": UNK, "pad_token": EOS}
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    cfg = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_TOKENS,
        "do_lower_case": True,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
        **special,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def make_tokenizer():
    """The tokenizer, built fresh (deterministic) and loaded back through CLIPTokenizer."""
    from transformers import CLIPTokenizer

    vocab, merges = build_bpe()
    tmp = tempfile.mkdtemp(prefix="easel-tok-")
    try:
        save_tokenizer(tmp, vocab, merges)
        tok = CLIPTokenizer.from_pretrained(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tok, vocab, merges


# ----------------------------------------------------------------------------- models
def make_text_encoder(vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=vocab_size, bos_token_id=0, eos_token_id=1, pad_token_id=1, **TEXT_CONFIG)
    return CLIPTextModel(cfg)


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def make_passthrough_vae():
    """AutoencoderKL with weights set so that encode(x).mean = [r, g, b, 0] and
    decode([r, g, b, *]) = [r, g, b] (up to ~1e-6).

    Every ResNet block gets zero output convolutions (so it is an identity); the
    GroupNorm + SiLU before each conv_out is made (numerically) linear by carrying
    each colour channel as the pair (x, -x) next to two large constant channels
    (+C, -C): the group mean is then exactly 0 and the group variance ~C^2/4, so the
    norm only rescales; an offset keeps SiLU in its linear range.
    """
    from diffusers import AutoencoderKL

    ch = 8
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(ch,),
        layers_per_block=1,
        norm_num_groups=1,
        act_fn="silu",
        sample_size=NATIVE,
        scaling_factor=1.0,
        mid_block_add_attention=False,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    C = 1.0e3
    OFF = 40.0
    with torch.no_grad():
        for p in vae.parameters():
            p.zero_()
        for m in vae.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.fill_(1.0)

        def spread(conv, n_in):
            # input channel i -> (x_i, -x_i) in channels 2i, 2i+1; +C / -C in channels 6, 7
            w = torch.zeros_like(conv.weight)
            b = torch.zeros_like(conv.bias)
            for i in range(3):
                w[2 * i, i, 1, 1] = 1.0
                w[2 * i + 1, i, 1, 1] = -1.0
            b[6], b[7] = C, -C
            conv.weight.copy_(w)
            conv.bias.copy_(b)

        def collect(norm, conv, n_out, logvar=False):
            # GroupNorm (1 group over 8 channels): y = x / (C/2); weight C/2 restores x, bias OFF
            norm.weight.fill_(C / 2)
            norm.bias.fill_(OFF)
            w = torch.zeros_like(conv.weight)
            b = torch.zeros_like(conv.bias)
            for i in range(3):
                w[i, 2 * i, 1, 1] = 0.5
                w[i, 2 * i + 1, 1, 1] = -0.5
            conv.weight.copy_(w)
            conv.bias.copy_(b)
            if logvar:  # channels n_out.. are log-variances: make them very negative
                b[n_out:] = -30.0
                conv.bias.copy_(b)

        enc, dec = vae.encoder, vae.decoder
        spread(enc.conv_in, 3)
        collect(enc.conv_norm_out, enc.conv_out, 4, logvar=True)
        # decoder conv_in takes 4 latent channels; the 4th is ignored
        spread(dec.conv_in, 4)
        collect(dec.conv_norm_out, dec.conv_out, 3)
        # OFF offsets: (x + OFF) and (-x + OFF) -> 0.5 * (x + OFF) - 0.5 * (-x + OFF) = x
    return vae


def make_scheduler(prediction_type: str = "v_prediction"):
    from diffusers import DPMSolverMultistepScheduler

    cfg = {**SCHEDULER_CONFIG, "prediction_type": prediction_type}
    if prediction_type == "epsilon":
        # cosine betas reach alpha_bar ~ 2e-9 at t=999, where an epsilon model's x0 estimate
        # is amplified 2e4 times: clip the x0 estimate to the image range [-1, 1]
        cfg.update(thresholding=True, dynamic_thresholding_ratio=0.995, sample_max_value=1.0)
    return DPMSolverMultistepScheduler(**cfg)


def make_train_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"
    )


# ----------------------------------------------------------------------------- export
EASEL_TOML = """# Catalog facts for Easel's built-in model (mirrored into the engine catalog).
name = "easel-builtin"
description = "Small text-to-image model trained from scratch on synthetic shapes (see README.md)"
native_size = {native}
native_sizes_note = "any multiples of 8; trained mostly at 32x32 with some 24-48 px non-square crops"
# non-square: generate at a native shape of the same aspect (sides multiples of 8), then upscale
aspect_ratio_mode = "native-shape"
upscale_filter = "lanczos"
scheduler = "DPMSolverMultistepScheduler"
default_steps = 20
default_guidance = 6.0
license = "same as the Easel repository"
credits = "Trained from scratch by training/train.py on scenes drawn by training/scenes.py; no external data."
"""


def export_pipeline(
    folder: str, unet, text_encoder, vocab, merges, prediction_type: str = "v_prediction"
) -> None:
    """Write a standard StableDiffusionPipeline folder."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    tmp = tempfile.mkdtemp(prefix="easel-export-")
    try:
        tokdir = os.path.join(tmp, "tok")
        save_tokenizer(tokdir, vocab, merges)
        tokenizer = CLIPTokenizer.from_pretrained(tokdir)
        te = make_text_encoder(len(vocab))
        te.load_state_dict(text_encoder.state_dict())
        # every non-word piece shares the unk embedding
        with torch.no_grad():
            emb = te.get_input_embeddings().weight
            keep = set(word_token_ids(vocab))
            unk = vocab[UNK]
            for tid in range(emb.shape[0]):
                if tid not in keep:
                    emb[tid] = emb[unk]
        un = make_unet()
        un.load_state_dict(unet.state_dict())
        pipe = StableDiffusionPipeline(
            vae=make_passthrough_vae(),
            text_encoder=te.eval(),
            tokenizer=tokenizer,
            unet=un.eval(),
            scheduler=make_scheduler(prediction_type),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        out = os.path.join(tmp, "pipe")
        pipe.save_pretrained(out, safe_serialization=True)
        # the tokenizer folder: our own files only (tokenizer_class CLIPTokenizer)
        shutil.rmtree(os.path.join(out, "tokenizer"))
        save_tokenizer(os.path.join(out, "tokenizer"), vocab, merges)
        # keep hand-written files of the destination (README.md, easel.toml)
        os.makedirs(folder, exist_ok=True)
        for name in ["model_index.json", "unet", "text_encoder", "tokenizer", "vae", "scheduler"]:
            dst = os.path.join(folder, name)
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            elif os.path.exists(dst):
                os.remove(dst)
            shutil.move(os.path.join(out, name), dst)
        toml = os.path.join(folder, "easel.toml")
        if not os.path.exists(toml):
            with open(toml, "w") as f:
                f.write(EASEL_TOML.format(native=NATIVE))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
