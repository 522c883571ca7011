"""Train Easel's built-in text-to-image model from scratch on synthetic scenes.

    .venv/bin/python training/train.py         # start, or resume from training/checkpoints/last.pt
    .venv/bin/python training/train.py --init-from models/builtin   # from the committed export (weights only)

Checkpoints (model, EMA, optimizer, RNG states, step, wall time) go to
training/checkpoints/last.pt every --ckpt-minutes; at each checkpoint the EMA weights
are also exported as a diffusers StableDiffusionPipeline folder to --export.
Resuming continues the exact data/noise streams (deterministic for a given seed and
thread count, up to floating-point non-associativity of the CPU kernels).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import string
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import builtin_model as bm
import scenes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NONSQUARE = [(32, 48), (48, 32), (24, 40), (40, 24), (32, 40), (40, 32), (32, 56), (56, 32)]  # (h, w)


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt-dir", default=os.path.join(ROOT, "training", "checkpoints"))
    ap.add_argument("--export", default=os.path.join(ROOT, "models", "builtin"))
    ap.add_argument("--init-from", default=None, help="pipeline folder to take initial weights from")
    ap.add_argument("--steps", type=int, default=1_000_000, help="stop after this many steps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument(
        "--lr-final",
        type=float,
        default=1.0,
        help="cosine decay of the learning rate to lr * this at --steps (1.0: constant)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--cond-drop", type=float, default=0.1)
    ap.add_argument("--nonsquare-p", type=float, default=0.2)
    ap.add_argument("--high-noise-p", type=float, default=0.3, help="share of timesteps drawn from t >= 500")
    ap.add_argument("--snr-gamma", type=float, default=5.0)
    ap.add_argument(
        "--prediction",
        default="epsilon",
        choices=["v_prediction", "epsilon"],
        help="UNet target (a checkpoint can be switched between the two)",
    )
    ap.add_argument(
        "--x0-floor",
        type=float,
        default=0.0,
        help="loss weight in clean-image units is min(snr, gamma) + x0_floor",
    )
    return ap.parse_args()


def random_word(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 7)))


def main():
    args = parse()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # tiny weights/activations as denormals slow CPU math many times over
    os.makedirs(args.ckpt_dir, exist_ok=True)
    ckpt_path = os.path.join(args.ckpt_dir, "last.pt")

    torch.manual_seed(args.seed)
    tok, vocab, merges = bm.make_tokenizer()
    word_ids = torch.tensor(bm.word_token_ids(vocab))
    unk_id = vocab[bm.UNK]
    id_ok = torch.zeros(len(vocab), dtype=torch.bool)
    id_ok[word_ids] = True

    unet = bm.make_unet()
    te = bm.make_text_encoder(len(vocab))
    sched = bm.make_train_scheduler()
    alphas = sched.alphas_cumprod.float()

    step, wall = 0, 0.0
    data_rng = random.Random(args.seed)
    noise_gen = torch.Generator().manual_seed(args.seed + 1)
    if args.init_from and not os.path.exists(ckpt_path):
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        unet.load_state_dict(
            UNet2DConditionModel.from_pretrained(args.init_from, subfolder="unet").state_dict()
        )
        te.load_state_dict(
            CLIPTextModel.from_pretrained(args.init_from, subfolder="text_encoder").state_dict()
        )
        meta_p = os.path.join(args.init_from, "unet", "training_state.json")
        if os.path.exists(meta_p):
            with open(meta_p) as fh:
                meta = json.load(fh)
            step, wall = meta.get("step", 0), meta.get("wall_seconds", 0.0)
        print(f"initialised from {args.init_from} (step {step})", flush=True)
    ema_unet, ema_te = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(te).requires_grad_(False)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)

    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, weights_only=False)
        unet.load_state_dict(ck["unet"])
        te.load_state_dict(ck["te"])
        ema_unet.load_state_dict(ck["ema_unet"])
        ema_te.load_state_dict(ck["ema_te"])
        opt.load_state_dict(ck["opt"])
        step, wall = ck["step"], ck["wall"]
        data_rng.setstate(ck["data_rng"])
        noise_gen.set_state(ck["noise_gen"])
        torch.set_rng_state(ck["torch_rng"])
        print(f"resumed from {ckpt_path} at step {step} ({wall / 60:.1f} min trained)", flush=True)

    def save_ckpt():
        ck = dict(
            unet=unet.state_dict(),
            te=te.state_dict(),
            ema_unet=ema_unet.state_dict(),
            ema_te=ema_te.state_dict(),
            opt=opt.state_dict(),
            step=step,
            wall=wall,
            data_rng=data_rng.getstate(),
            noise_gen=noise_gen.get_state(),
            torch_rng=torch.get_rng_state(),
            args=vars(args),
        )
        torch.save(ck, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)
        if args.export:
            bm.export_pipeline(args.export, ema_unet, ema_te, vocab, merges, prediction_type=args.prediction)
            meta = dict(
                step=step,
                wall_seconds=round(wall, 1),
                batch=args.batch,
                seed=args.seed,
                lr=args.lr,
                threads=args.threads,
                prediction=args.prediction,
                command=" ".join(sys.argv),
            )
            with open(os.path.join(args.export, "unet", "training_state.json"), "w") as f:
                json.dump(meta, f, indent=2)
        print(f"checkpoint at step {step} ({wall / 60:.1f} min)", flush=True)

    unet.train()
    te.train()
    last_ckpt = time.time()
    losses = []
    while step < args.steps:
        t0 = time.time()
        if data_rng.random() < args.nonsquare_p:
            h, w = data_rng.choice(NONSQUARE)
        else:
            h, w = 32, 32
        imgs, caps = scenes.training_batch(data_rng, args.batch, w, h, "train")
        for i in range(len(caps)):
            r = data_rng.random()
            if r < args.cond_drop:
                caps[i] = ""
            elif r < args.cond_drop + 0.05:  # teach the encoder to ignore unknown words
                ws = caps[i].split()
                ws.insert(data_rng.randint(0, len(ws)), random_word(data_rng))
                caps[i] = " ".join(ws)
        ids = tok(
            caps, padding="max_length", max_length=bm.MAX_TOKENS, truncation=True, return_tensors="pt"
        ).input_ids
        ids = torch.where(id_ok[ids], ids, torch.full_like(ids, unk_id))

        x0 = torch.from_numpy(imgs)
        x0 = torch.cat([x0, torch.zeros_like(x0[:, :1])], dim=1)  # pass-through VAE latents: [r, g, b, 0]
        n = x0.shape[0]
        t = torch.randint(0, 1000, (n,), generator=noise_gen)
        hi = torch.rand(n, generator=noise_gen) < args.high_noise_p
        t = torch.where(hi, torch.randint(500, 1000, (n,), generator=noise_gen), t)
        eps = torch.randn(x0.shape, generator=noise_gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        v = a.sqrt() * eps - (1 - a).sqrt() * x0
        snr = a.view(-1) / (1 - a.view(-1))
        # weight in x0 units: min(snr, gamma) + x0_floor (the floor keeps weight on high-noise steps)
        w0 = snr.clamp(max=args.snr_gamma) + args.x0_floor
        if args.prediction == "epsilon":
            target, wgt = eps, w0 / snr  # eps error = snr * x0 error
        else:
            target, wgt = v, w0 / (snr + 1)  # v error = (snr + 1) * x0 error

        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        if args.lr_final < 1.0 and step > args.warmup:
            progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
            lr *= args.lr_final + (1 - args.lr_final) * 0.5 * (1 + math.cos(math.pi * progress))
        for g in opt.param_groups:
            g["lr"] = lr
        enc = te(ids)[0]
        pred = unet(xt, t, enc).sample
        loss = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        loss = (loss * wgt).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        d = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for m, e in ((unet, ema_unet), (te, ema_te)):
                for p, q in zip(m.parameters(), e.parameters(), strict=False):
                    q.lerp_(p, 1 - d)
        dt = time.time() - t0
        wall += dt
        losses.append(loss.item())
        if step % 25 == 0 or step <= 20:
            print(
                f"step {step} loss {np.mean(losses):.4f} lr {lr:.2e} {dt:.2f}s/step wall {wall / 60:.1f}min",
                flush=True,
            )
            losses = []
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            save_ckpt()
            last_ckpt = time.time()
    save_ckpt()


if __name__ == "__main__":
    main()
