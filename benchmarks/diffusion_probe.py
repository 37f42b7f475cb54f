"""Does a diffusion run denoise? Held-out latents noised to t/T = 0.1 ... 0.9 and taken back
to 0 by the model, against predicting zero and against doing nothing.

    python benchmarks/diffusion_probe.py --model exports/dit --shards data/demo/latent_shards
    python benchmarks/diffusion_probe.py --ckpt runs/ezaudio_tiny/version_0/checkpoints/last.ckpt \\
        --shards data/demo/latent_shards --val_fraction 0.125 --seconds 2

`one step` is the model's clean estimate from x_t in a single call, `denoised` after DDIM
steps (eta 0) down to t = 0, `x_t as is` the noised latent rescaled (no model at all).
Relative squared error against the clean latent: 1.00 is predicting zero (the latents'
mean); a model that learnt something is well below 1 at small t and below `x_t as is`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_sdm.data.latent_datamodule import LatentShardsDataModule
from lightning_sdm.generation.source import load_source
from lightning_sdm.machine import machine
from lightning_sdm.metrics.diffusion_probe import format_probe, reconstruction_probe


def held_out_batch(args: argparse.Namespace) -> dict:
    data = LatentShardsDataModule(
        train_dir=args.shards, val_fraction=args.val_fraction, batch_size=args.items,
        num_workers=0, segment_seconds=args.seconds, min_segment_ratio=0.5,
    )  # fmt: skip
    data.setup("validate" if args.val_fraction > 0 else "fit")
    loader = data.val_dataloader() if args.val_fraction > 0 else data.train_dataloader()
    return next(iter(loader))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a diffusion model directory (export)")
    parser.add_argument("--ckpt", help="or a fit checkpoint")
    parser.add_argument("--shards", required=True, help="latent shards (tokenize --latents)")
    parser.add_argument("--val_fraction", type=float, default=0.125)
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--unconditional", action="store_true", help="empty captions")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = load_source(args.model, args.ckpt).model
    batch = held_out_batch(args)
    captions = [""] * len(batch["captions"]) if args.unconditional else list(batch["captions"])
    torch.manual_seed(0)
    rows = reconstruction_probe(
        model, batch["latents"], batch["padding_mask"], captions, steps=args.steps
    )
    print(f"{len(captions)} held-out crops of {args.seconds:g} s from {args.shards}; {machine()}")
    print(format_probe(rows))
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine(), "rows": [row.to_dict() for row in rows]}, indent=2)
        )


if __name__ == "__main__":
    main()
