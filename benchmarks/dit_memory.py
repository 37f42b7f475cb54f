"""adaLN-SOLA against per-block adaLN in EzAudio-DiT: trainable parameters, peak training
memory and step time at the same width and depth, side by side in one run.

    python benchmarks/dit_memory.py [--dim 512 --depth 8 --frames 250 --batch 4 --json out.json]

Each variant trains in its own process (peak memory is per process): one warm-up step, then
`--steps` timed steps of forward, backward and AdamW on random latents and text states (the
T5 encoder is left out: it is the same for both). Memory is the process's peak resident
memory above what it held before the first step: weights' gradients, AdamW's two moments
and the activations. A table of parameter counts at EzAudio-L's and -XL's sizes follows
(built on the meta device, nothing trained), with what fp32 weights, gradients and AdamW
state take there.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from process_memory import run_child, time_training_steps  # noqa: E402

from lightning_sdm.machine import machine, machine_line  # noqa: E402
from lightning_sdm.models.dit import (  # noqa: E402
    MODULATION_KINDS,
    DiTConfig,
    EzAudioDiT,
    trainable_parameters,
)

CONTEXT_TOKENS = 32
TRAINING_BYTES_PER_PARAMETER = 16  # fp32 weight, gradient and AdamW's two moments


@dataclass
class Row:
    modulation: str
    parameters: int
    modulation_parameters: int  # the shared Linear and every block's adaLN
    step_s: float
    peak_mb: float
    device: str


def config(args: argparse.Namespace, modulation: str) -> DiTConfig:
    return DiTConfig(
        latent_channels=args.channels, dim=args.dim, depth=args.depth, num_heads=args.heads,
        ada_rank=args.rank, context_dim=args.dim, modulation=modulation,
    )  # fmt: skip


def modulation_parameters(model: EzAudioDiT) -> int:
    modules = [block.adaln for block in (*model.in_blocks, model.mid_block, *model.out_blocks)]
    if model.shared_modulation is not None:
        modules.append(model.shared_modulation)
    return sum(p.numel() for module in modules for p in module.parameters())


def child(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = EzAudioDiT(config(args, args.child)).train()
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.channels, args.frames)
    noisy, given, target = (torch.randn(shape, generator=g) for _ in range(3))
    to_generate = torch.ones(args.batch, args.frames, dtype=torch.bool)
    timesteps = torch.randint(0, 1000, (args.batch,), generator=g)
    context = torch.randn(args.batch, CONTEXT_TOKENS, args.dim, generator=g)
    context_mask = torch.ones(args.batch, CONTEXT_TOKENS, dtype=torch.bool)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        prediction = model(noisy, given, to_generate, timesteps, context, context_mask)
        torch.nn.functional.mse_loss(prediction, target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_s, peak_mb = time_training_steps(step, args.steps)
    row = Row(
        modulation=args.child,
        parameters=trainable_parameters(model),
        modulation_parameters=modulation_parameters(model),
        step_s=step_s,
        peak_mb=peak_mb,
        device=f"cpu ({torch.get_num_threads()} threads)",
    )
    print(json.dumps(asdict(row)))


def paper_sizes() -> list[tuple[str, str, int]]:
    """(size, modulation, trainable parameters) at EzAudio-L and -XL, on the meta device."""
    rows = []
    for size, file in (("EzAudio-L", "ezaudio_l.yaml"), ("EzAudio-XL", "ezaudio_xl.yaml")):
        data = yaml.safe_load((ROOT / "configs" / file).read_text())["model"]["init_args"]["dit"]
        for modulation in MODULATION_KINDS:
            with torch.device("meta"):
                model = EzAudioDiT(DiTConfig(**{**data, "modulation": modulation}))
            rows.append((size, modulation, trainable_parameters(model)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    names = ("dim", "depth", "heads", "rank", "channels", "frames", "batch", "steps")
    options = {name: getattr(args, name) for name in names}
    rows = []
    for modulation in MODULATION_KINDS:
        rows.append(Row(**run_child(__file__, modulation, options)))
        print(f"  measured {modulation}: {rows[-1].step_s:.2f} s/step", flush=True)
    sola = rows[0]
    print(
        f"\nEzAudio-DiT {args.depth} blocks + middle x {args.dim}, {args.heads} heads, rank "
        f"{args.rank}, batch {args.batch} x {args.frames} frames of {args.channels} channels; "
        f"forward + backward + AdamW on {sola.device}; {machine_line()}"
    )
    header = (
        f"{'modulation':<12}{'parameters':>12}{'in adaLN':>10}{'vs SOLA':>9}"
        f"{'step s':>8}{'vs SOLA':>9}{'peak MB':>9}{'vs SOLA':>9}"
    )
    print(header + "\n" + "-" * len(header))
    for row in rows:
        print(
            f"{row.modulation:<12}{row.parameters / 1e6:>11.2f}M"
            f"{row.modulation_parameters / 1e6:>9.2f}M{row.parameters / sola.parameters:>8.2f}x"
            f"{row.step_s:>8.2f}{row.step_s / sola.step_s:>8.2f}x"
            f"{row.peak_mb:>9.0f}{row.peak_mb / sola.peak_mb:>8.2f}x"
        )
    print(
        "\nAt the paper's sizes (parameter counts from the meta device; training state ="
        f" {TRAINING_BYTES_PER_PARAMETER} bytes per fp32 parameter: weight, gradient, AdamW):"
    )
    sizes = paper_sizes()
    print(f"{'size':<12}{'modulation':<12}{'parameters':>12}{'training state':>16}")
    for size, modulation, count in sizes:
        state_gb = count * TRAINING_BYTES_PER_PARAMETER / 2**30
        print(f"{size:<12}{modulation:<12}{count / 1e6:>11.1f}M{state_gb:>14.1f} GB")
    if args.json:
        data = {"machine": machine(), "rows": [asdict(r) for r in rows], "paper_sizes": sizes}
        args.json.write_text(json.dumps(data, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
