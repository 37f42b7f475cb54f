"""EzAudio-DiT against a plain DiT on the same latents and steps: validation v-loss at fixed
step budgets over seeds, step time, peak memory and parameters, with one-at-a-time ablations.

    python benchmarks/dit_convergence.py [--shards data/demo/vae_latent_shards]
        [--steps 600 --eval_every 200 --seeds 0 1 --dim 128 --depth 4 --json out.json]

Variants, all at the same width and depth:
  ezaudio        adaLN-SOLA, long skips, RoPE, QK-norm (EzAudio-DiT)
  plain          per-block adaLN-Zero, no long skips, learned absolute positions, no QK-norm
  no_sola        EzAudio with per-block adaLN instead of adaLN-SOLA
  no_skips       EzAudio without the long skips
  no_rope        EzAudio with learned absolute positions instead of RoPE
  no_qknorm      EzAudio without QK-norm

Each (variant, seed) trains in its own process (peak memory is per process) with the
model's own training loss (masked modelling, CFG caption dropout 0.1), AdamW, batch
`--batch` crops of `--seconds` from the shards' training split; the seed sets the weights,
the data order and the noise, and is the same across variants. Validation loss is v-MSE
on the held-out split with every frame generated, over a fixed grid of timesteps and fixed
noise (the same for every variant and budget), so differences are the models'. Latent
statistics are measured once over the whole training split. Make the demo's latent shards
with `lightning-sdm demo --family diffusion`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from process_memory import peak_rss_mb, rss_mb, run_child  # noqa: E402

from lightning_sdm.conditioning import TextConditionerConfig  # noqa: E402
from lightning_sdm.data.latent_datamodule import LatentShardsDataModule  # noqa: E402
from lightning_sdm.machine import machine, machine_line  # noqa: E402
from lightning_sdm.models.dit import DiTConfig, trainable_parameters  # noqa: E402
from lightning_sdm.models.text_to_audio_diffusion import (  # noqa: E402
    TextToAudioDiffusion,
    TextToAudioDiffusionConfig,
)

PLAIN = {"modulation": "per_block", "long_skips": False, "positions": "learned", "qk_norm": False}
VARIANTS: dict[str, dict[str, Any]] = {
    "ezaudio": {},
    "plain": PLAIN,
    "no_sola": {"modulation": "per_block"},
    "no_skips": {"long_skips": False},
    "no_rope": {"positions": "learned"},
    "no_qknorm": {"qk_norm": False},
}
VALIDATION_TIMESTEPS = (50, 150, 300, 450, 600, 750, 900, 990)
TINY_T5_WIDTH = 32  # TextConditionerConfig's random T5


@dataclass
class Run:
    variant: str
    seed: int
    parameters: int
    val_loss: dict[int, float]  # step budget -> validation v-MSE
    predict_zero_loss: float  # the same loss of a model answering 0
    step_s: float
    peak_mb: float
    train_loss_last: float


@dataclass
class VariantRow:
    variant: str
    parameters: int
    val_loss: dict[int, list[float]] = field(default_factory=dict)
    step_s: float = 0.0
    peak_mb: float = 0.0


def data_module(args: argparse.Namespace) -> LatentShardsDataModule:
    data = LatentShardsDataModule(
        train_dir=args.shards, val_fraction=args.val_fraction, batch_size=args.batch,
        num_workers=0, segment_seconds=args.seconds, min_segment_ratio=0.5,
    )  # fmt: skip
    data.setup("fit")
    return data


def latent_statistics(data: LatentShardsDataModule) -> tuple[float, float]:
    """Mean and std over the real frames of one pass over the training split."""
    total, squares, count = data.latent_moments(max_batches=10**9).tolist()
    mean = total / count
    return mean, (squares / count - mean**2) ** 0.5


def build_model(args: argparse.Namespace, variant: str, stats: tuple[float, float]):
    dit = DiTConfig(
        latent_channels=args.channels, dim=args.dim, depth=args.depth, num_heads=args.heads,
        ada_rank=args.rank, context_dim=TINY_T5_WIDTH, max_frames=args.max_frames,
        **VARIANTS[variant],
    )  # fmt: skip
    config = TextToAudioDiffusionConfig(
        dit=dit, text=TextConditionerConfig(pretrained="random", cfg_dropout=0.1),
        latent_mean=stats[0], latent_std=stats[1],
    )  # fmt: skip
    return TextToAudioDiffusion(config)


@torch.no_grad()
def validation_loss(
    model: TextToAudioDiffusion, batches: list[dict[str, Any]], predict_zero: bool = False
) -> float:
    """v-MSE over real frames, every frame generated, at each fixed timestep; fixed noise
    (`predict_zero`: of a model that always answers 0, the reference)."""
    model.eval()
    generator = torch.Generator().manual_seed(1234)
    total, count = 0.0, 0.0
    for batch in batches:
        clean = model.normalise(batch["latents"].float())
        frames = batch["padding_mask"]
        clean = clean * frames[:, None]
        everything = torch.ones_like(frames)
        for timestep in VALIDATION_TIMESTEPS:
            steps = torch.full((len(clean),), timestep)
            noise = torch.randn(clean.shape, generator=generator)
            noisy = model.scheduler.add_noise(clean, noise, steps)
            target = model.scheduler.get_velocity(clean, noise, steps)
            captions = list(batch["captions"])
            prediction = (
                torch.zeros_like(target)
                if predict_zero
                else model.predict(noisy, clean, everything, steps, captions, frames)
            )
            weights = frames[:, None].float().expand_as(target)
            total += float(((prediction - target).square() * weights).sum())
            count += float(weights.sum())
    model.train()
    return total / count


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    data = data_module(args)
    stats = latent_statistics(data)
    validation = list(data.val_dataloader())
    torch.manual_seed(args.seed)
    model = build_model(args, args.child, stats).train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01
    )
    generator = torch.Generator().manual_seed(args.seed)

    def batches():
        while True:
            yield from data.train_dataloader()

    stream = batches()
    before = rss_mb()
    val_loss, times, last = {}, [], float("nan")
    for step in range(1, args.steps + 1):
        batch = next(stream)
        start = time.perf_counter()
        texts = model.conditioner.cfg_dropout(list(batch["captions"]), generator)
        loss = model.training_loss(
            batch["latents"], batch["padding_mask"], texts, generator=generator
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        last = float(loss)
        if step % args.eval_every == 0 or step == args.steps:
            val_loss[step] = validation_loss(model, validation)
    run = Run(
        variant=args.child, seed=args.seed, parameters=trainable_parameters(model.dit),
        val_loss=val_loss, predict_zero_loss=validation_loss(model, validation, True),
        step_s=statistics.median(times[1:] or times),
        peak_mb=peak_rss_mb() - before, train_loss_last=last,
    )  # fmt: skip
    print(json.dumps(asdict(run)))


def summarise(runs: list[Run]) -> list[VariantRow]:
    rows: dict[str, VariantRow] = {}
    for run in runs:
        row = rows.setdefault(run.variant, VariantRow(run.variant, run.parameters))
        for budget, loss in run.val_loss.items():
            row.val_loss.setdefault(int(budget), []).append(loss)
    for name, row in rows.items():
        mine = [r for r in runs if r.variant == name]
        row.step_s = statistics.median(r.step_s for r in mine)
        row.peak_mb = statistics.median(r.peak_mb for r in mine)
    return list(rows.values())


def format_table(rows: list[VariantRow], budgets: list[int]) -> str:
    base = rows[0]
    header = f"{'variant':<10}{'params':>9}" + "".join(f"{'val@' + str(b):>15}" for b in budgets)
    header += f"{'step s':>8}{'vs ez':>7}{'peak MB':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = []
        for budget in budgets:
            losses = row.val_loss[budget]
            spread = (max(losses) - min(losses)) / 2
            cells.append(f"{statistics.mean(losses):>8.4f} ±{spread:.3f}")
        lines.append(
            f"{row.variant:<10}{row.parameters / 1e6:>8.2f}M" + "".join(f"{c:>15}" for c in cells)
            + f"{row.step_s:>8.3f}{row.step_s / base.step_s:>6.2f}x{row.peak_mb:>9.0f}"
        )  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default=str(ROOT / "data/demo/vae_latent_shards"))
    parser.add_argument("--val_fraction", "--val-fraction", type=float, default=0.125)
    parser.add_argument("--channels", type=int, default=16, help="the shards' latent channels")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--max_frames", "--max-frames", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval_every", "--eval-every", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if not (Path(args.shards) / "index.json").is_file():
        sys.exit(f"no latent shards at {args.shards}: run `lightning-sdm demo --family diffusion`")
    names = ("shards", "val_fraction", "channels", "dim", "depth", "heads", "rank",
             "max_frames", "batch", "seconds", "lr", "steps", "eval_every", "threads")  # fmt: skip
    options = {name: getattr(args, name) for name in names}
    runs = []
    for seed in args.seeds:  # seeds outermost: a partial run still compares variants
        for variant in args.variants:
            run = Run(**run_child(__file__, variant, {**options, "seed": seed}))
            runs.append(run)
            final = run.val_loss[str(args.steps)]
            print(f"  {variant} seed {seed}: val {final:.4f}, {run.step_s:.3f} s/step", flush=True)
    for run in runs:
        run.val_loss = {int(k): v for k, v in run.val_loss.items()}
    rows = summarise(runs)
    budgets = sorted(rows[0].val_loss)
    print(
        f"\nDiT {args.depth} blocks + middle x {args.dim}, {args.heads} heads, rank {args.rank};"
        f" {args.steps} steps of batch {args.batch} x {args.seconds:g} s, lr {args.lr:g}; seeds "
        f"{' '.join(map(str, args.seeds))}; latents {args.shards}; {machine_line()}"
    )
    print(
        "validation v-MSE (mean ± half the range over seeds; a model answering 0 scores "
        f"{runs[0].predict_zero_loss:.4f})"
    )
    print(format_table(rows, budgets))
    if args.json:
        data = {"machine": machine(), "options": options, "runs": [asdict(r) for r in runs]}
        args.json.write_text(json.dumps(data, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
