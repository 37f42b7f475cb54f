"""EzAudio-DiT's training step and sampling step, this checkout against an earlier revision
(or alone), side by side in one run, with the outputs compared on the same weights.

    python benchmarks/dit_speed.py [--baseline REV] [--compile] [--dim 512 --json out.json]

The training step is forward, v-loss, backward and AdamW on random latents and text states
(`--batch` x `--frames`); the sampling step is one DiT forward under classifier-free
guidance (`--sample-batch` rows, conditional and unconditional, x `--sample-frames`), as
each DDIM step makes. `--baseline REV` extracts that revision's package with `git archive`
and times it in the same rounds: each side runs in its own process, the two alternating
for `--rounds` rounds, the median per side. Both sides load one set of weights (written by
this checkout) and get the same inputs; the largest difference of their sampling outputs
and training losses is printed (fp32 rounding: ~1e-6 of the output's scale). `--compile`
adds a side that is this checkout with its DiT blocks compiled (`model.compile: true`, one
block at a time); its first steps, which wait for the compiler, are not timed. Each side
runs as `lightning-sdm` runs its revision: keeping freed memory for the next step
(`lightning_sdm.allocator`) where the revision does, and training with the AdamW its
tasks build (fused where the revision fuses it). This checkout's steps are also profiled
once: what their matmul and attention kernels take, and the speed the steps would have
with nothing else (`kernel_time.py`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONTEXT_TOKENS = 32


def model_config(args: argparse.Namespace) -> dict:
    return {
        "latent_channels": args.channels, "dim": args.dim, "depth": args.depth,
        "num_heads": args.heads, "ada_rank": args.rank, "context_dim": args.dim,
    }  # fmt: skip


def inputs(batch: int, frames: int, channels: int, dim: int) -> tuple:
    generator = torch.Generator().manual_seed(0)
    noisy = torch.randn(batch, channels, frames, generator=generator)
    given = torch.zeros(batch, channels, frames)
    to_generate = torch.ones(batch, frames)
    timesteps = torch.randint(0, 1000, (batch,), generator=generator).float()
    context = torch.randn(batch, CONTEXT_TOKENS, dim, generator=generator)
    context_mask = torch.ones(batch, CONTEXT_TOKENS, dtype=torch.bool)
    return noisy, given, to_generate, timesteps, context, context_mask


def child(args: argparse.Namespace) -> None:
    """One side: time both steps with the package found first on sys.path."""
    sys.path.insert(0, args.source)
    from lightning_sdm.models.dit import DiTConfig, EzAudioDiT

    # As `lightning-sdm` runs this revision: keeping freed memory where it does. Asked of
    # the revision's files: the editable install would serve a module it lacks from here.
    kept = False
    if (Path(args.source) / "lightning_sdm" / "allocator.py").exists():
        from lightning_sdm.allocator import keep_freed_memory

        kept = keep_freed_memory()

    model = EzAudioDiT(DiTConfig(**model_config(args)))
    model.load_state_dict(torch.load(args.weights, weights_only=True))
    if args.compile_blocks:
        from lightning_sdm.nn.dit_block import DiTBlock
        from lightning_sdm.tasks.compiling import compile_blocks

        compile_blocks(model, (DiTBlock,))
    optimizer = revision_optimizer(model)
    training = inputs(args.batch, args.frames, args.channels, args.dim)
    target = torch.randn(training[0].shape, generator=torch.Generator().manual_seed(1))
    sampling = inputs(2 * args.sample_batch, args.sample_frames, args.channels, args.dim)
    losses: list[float] = []

    def train() -> None:
        loss = (model(*training) - target).square().mean()
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sample() -> torch.Tensor:
        with torch.inference_mode():
            return model(*sampling)

    first_output = sample()
    model.train()
    timings: dict[str, object] = {"train_ms": median_ms(train, args.steps)}
    model.eval()
    timings["sample_ms"] = median_ms(sample, args.steps)
    # Saved before profiling, whose training steps add losses.
    torch.save({"output": first_output, "losses": losses}, args.outputs)
    if args.kernels:  # what its matmuls and attention take of each step
        from kernel_time import step_kernels

        model.train()
        timings["train_kernels"] = step_kernels(train, args.steps, torch.float32)
        model.eval()
        timings["sample_kernels"] = step_kernels(sample, args.steps, torch.float32)
    print(json.dumps({**timings, "keeps_freed_memory": kept}))


def revision_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The AdamW the revision's tasks train with (its parameter groups; fused where that
    revision fuses it), so the training step is the one `fit` runs; plain AdamW for a
    revision without the tasks' builder."""
    try:
        from lightning_sdm.tasks.optim import OptimConfig, build_optimizer
    except ImportError:
        return torch.optim.AdamW(model.parameters(), lr=1e-4)
    return build_optimizer(model, OptimConfig(lr=1e-4), total_steps=1000)[0]


def median_ms(run: Callable[[], object], steps: int) -> float:
    run()  # warm-up: allocations, kernels
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return 1000 * statistics.median(seconds)


def extract(revision: str, folder: Path) -> Path:
    """The package as it was at `revision`, unpacked into `folder`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "lightning_sdm"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def run_side(
    args: argparse.Namespace,
    source: Path,
    compiled: bool,
    weights: Path,
    outputs: Path,
    kernels: bool = False,
) -> dict:
    options = [*(["--compile-blocks"] if compiled else []), *(["--kernels"] if kernels else []),
        "--child", "--source", str(source), "--weights", str(weights), "--outputs", str(outputs),
        "--dim", str(args.dim), "--depth", str(args.depth), "--heads", str(args.heads),
        "--rank", str(args.rank), "--channels", str(args.channels),
        "--frames", str(args.frames), "--batch", str(args.batch),
        "--sample-frames", str(args.sample_frames), "--sample-batch", str(args.sample_batch),
        "--steps", str(args.steps),
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, __file__, *options], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="a git revision to time beside this checkout")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--sample-frames", type=int, default=500)
    parser.add_argument("--sample-batch", type=int, default=1, help="prompts; CFG doubles")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also this checkout compiled")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile-blocks", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kernels", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--outputs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, str(ROOT))
    from lightning_sdm.machine import machine, machine_line
    from lightning_sdm.models.dit import DiTConfig, EzAudioDiT

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        torch.manual_seed(0)
        weights = folder / "weights.pt"
        torch.save(EzAudioDiT(DiTConfig(**model_config(args))).state_dict(), weights)
        sources = {"this checkout": (ROOT, False)}
        if args.compile:
            sources["this checkout, compiled"] = (ROOT, True)
        if args.baseline:
            (folder / "baseline").mkdir()
            baseline = extract(args.baseline, folder / "baseline")
            sources[f"baseline {args.baseline}"] = (baseline, False)
        results: dict[str, list[dict]] = {name: [] for name in sources}
        order = list(sources)
        for round_index in range(args.rounds):
            for name in order if round_index % 2 == 0 else order[::-1]:
                outputs = folder / f"{len(results[name])}-{order.index(name)}.pt"
                # This checkout's kernels profiled once, after its first round's timing.
                kernels = name == "this checkout" and round_index == 0
                results[name].append(run_side(args, *sources[name], weights, outputs, kernels))
                print(f"  round {round_index + 1}: {name} {results[name][-1]}", flush=True)
        compared = [torch.load(folder / f"0-{i}.pt", weights_only=True) for i in range(len(order))]
    summary = {
        name: {
            **{key: statistics.median(r[key] for r in rows) for key in ("train_ms", "sample_ms")},
            "keeps_freed_memory": rows[0].get("keeps_freed_memory", False),
        }
        for name, rows in results.items()
    }
    info = machine()
    print(
        f"\nEzAudio-DiT {args.depth} blocks x {args.dim}, training batch {args.batch} x "
        f"{args.frames} frames, sampling {2 * args.sample_batch} rows (CFG) x "
        f"{args.sample_frames} frames, fp32, median of {args.rounds} rounds x {args.steps} "
        f"steps; {machine_line()}"
    )
    print(f"{'':<30}{'train ms':>10}{'sample ms':>11}  keeps freed memory")
    for name, row in summary.items():
        kept = "yes" if row["keeps_freed_memory"] else "no"
        print(f"{name:<30}{row['train_ms']:>10.0f}{row['sample_ms']:>11.0f}  {kept}")
    now = summary["this checkout"]
    kernels = {step: results["this checkout"][0][f"{step}_kernels"] for step in ("train", "sample")}
    now["kernels"] = kernels
    for step, measured in kernels.items():
        floor_ms = 1000 * (measured["matmul_s"] + measured["attention_s"])
        speeds = ", ".join(
            f"{summary[name][f'{step}_ms'] / floor_ms:.2f}x {name}'s" for name in order
        )
        print(
            f"this checkout's {step} step: matmuls {1000 * measured['matmul_s']:.0f} ms "
            f"({measured['matmul_gflops']:.0f} GFLOP/s; a 2048-square matmul runs at "
            f"{measured['reference_gflops']:.0f} here), attention "
            f"{1000 * measured['attention_s']:.0f} ms (profiled in the step); the step with "
            f"nothing else, {floor_ms:.0f} ms, would have this speed: {speeds}"
        )
    for index, name in enumerate(order[1:], start=1):
        other = summary[name]
        output_gap = (compared[0]["output"] - compared[index]["output"]).abs().max().item()
        losses = (compared[0]["losses"], compared[index]["losses"])
        loss_gap = max(abs(a - b) for a, b in zip(*losses, strict=True))
        scale = compared[0]["output"].abs().max().item()
        print(
            f"{name} against this checkout: training {now['train_ms'] / other['train_ms']:.2f}x "
            f"and sampling {now['sample_ms'] / other['sample_ms']:.2f}x its speed; outputs "
            f"differ by at most {output_gap:.2e} (output scale {scale:.2f}), losses by "
            f"{loss_gap:.2e}"
        )
        other["output_max_abs_difference"] = output_gap
        other["loss_max_abs_difference"] = loss_gap
    if args.json:
        args.json.write_text(json.dumps({"machine": info, **summary}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
