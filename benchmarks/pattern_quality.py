"""Pattern quality on a source with exact floors: every pattern's best possible NLL, and the
same small decoder trained with each pattern for the same budget, in one table.

    python benchmarks/pattern_quality.py [--steps 400 --seeds 3 --out results/pattern_quality]
    python benchmarks/pattern_quality.py --quick   # a smoke run
    python benchmarks/pattern_quality.py --budget flops   # every row on delay's FLOPs
    python benchmarks/pattern_quality.py --rows delay depth --depth-dim 12   # matched params

The source is `lightning_sdm.data.synthetic.HiddenMarkovSource` (saved with its held-out
grids as OUT/source.npz). "floor" is the lowest NLL per token any model decoding with the
pattern can reach; "entropy" is flat's floor (the source's entropy rate on these grids).
A row's training FLOPs are counted by PyTorch (`torch.utils.flop_counter`) on one forward +
backward, times its steps. `--budget steps` trains every row for `--steps` steps;
`--budget flops` gives every row the FLOPs delay spends in `--steps` steps (a row whose step
costs more trains for fewer steps).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_sdm.conditioning import TextConditionerConfig
from lightning_sdm.data.synthetic import HiddenMarkovSource, pattern_floor
from lightning_sdm.machine import machine, machine_line
from lightning_sdm.models.lm import LMConfig
from lightning_sdm.models.sampling import SamplingConfig
from lightning_sdm.models.text_to_music import TextToMusicConfig, TextToMusicLM
from lightning_sdm.tasks.lm_task import masked_level_cross_entropy, masked_level_mean

# (label, pattern, k, schedule, other LM options): delay with the k = 3 interleaved
# schedule isolates what the schedule does without the stack representation.
ROWS = [
    ("delay", "delay", 1, None, {}),
    ("flat", "flat", 1, None, {}),
    ("stack", "stack", 1, None, {}),
    ("stack_delay k=1", "stack_delay", 1, None, {}),
    ("stack_delay k=2", "stack_delay", 2, None, {}),
    ("stack_delay k=3", "stack_delay", 3, None, {}),
    ("stack_delay k=4", "stack_delay", 4, None, {}),
    ("delay, k=3 schedule", "delay", 3, "interleaved", {}),
    ("depth", "depth", 1, None, {}),
    ("depth, acoustic delay 1", "depth", 1, None, {"depth_acoustic_delay": 1}),
    ("depth, weights per level", "depth", 1, None, {"depth_weights_per_level": True}),
]
CAPTION = ["synthetic source"]


@dataclass
class Result:
    label: str
    pattern: str
    k: int
    schedule: str | None
    nll: float
    floor: float
    gap: float  # nll - floor
    gap_to_entropy: float  # nll - entropy floor
    steps: int
    train_steps: int
    train_flops: float  # forward + backward FLOPs of the whole training run
    gen_seconds: float
    rtf: float
    max_cache_keys: int
    params: int
    seed: int


def lm_config(
    args, pattern: str, k: int, schedule: str | None, options: dict | None = None
) -> LMConfig:
    return LMConfig(
        dim=args.dim, num_layers=args.layers, num_heads=4, ffn_dim=4 * args.dim,
        num_levels=args.levels, cardinality=args.cardinality, pattern=pattern, interleave=k,
        schedule=schedule, depth_dim=args.depth_dim, depth_layers=args.depth_layers,
        depth_heads=4, depth_ffn_dim=4 * args.depth_dim, **(options or {}),
    )  # fmt: skip


def new_model(args, row: tuple, seed: int) -> TextToMusicLM:
    torch.manual_seed(seed)
    text = TextConditionerConfig(cfg_dropout=0.0)
    return TextToMusicLM(TextToMusicConfig(lm=lm_config(args, *row[1:]), text=text))


def cpu_attention_flops() -> dict:
    """PyTorch's counter knows SDPA's GPU kernels, not the CPU flash kernel (it counts 0):
    the same formulas for it. Scores are counted in full, causal or not, as for the others."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def forward(query, key, value, *args, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    return {
        aten._scaled_dot_product_flash_attention_for_cpu: forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: backward,
    }


def step_flops(args, row: tuple) -> float:
    """Forward + backward FLOPs of one training step, as PyTorch counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    model = new_model(args, row, seed=0).train()
    codes = torch.zeros(args.batch, args.levels, args.frames, dtype=torch.long)
    mask = torch.ones(args.batch, args.frames, dtype=torch.bool)
    with FlopCounterMode(display=False, custom_mapping=cpu_attention_flops()) as counter:
        loss, _ = masked_level_mean(model.token_losses(codes, CAPTION * args.batch), mask)
        loss.backward()
    return float(counter.get_total_flops())


def train_and_measure(
    args, row, train: np.ndarray, heldout: np.ndarray, seed: int, train_steps: int
) -> dict:
    model = new_model(args, row, seed)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0
    )
    generator = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(train)
    mask = torch.ones(args.batch, args.frames, dtype=torch.bool)
    model.train()
    for _ in range(train_steps):
        codes = data[torch.randint(0, len(data), (args.batch,), generator=generator)]
        loss, _ = masked_level_mean(model.token_losses(codes, CAPTION * args.batch), mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        held = torch.from_numpy(heldout)
        logits = model(held, CAPTION * len(held))
        nll = float(
            masked_level_cross_entropy(
                logits, held, torch.ones(held.shape[0], args.frames, dtype=torch.bool)
            )[0]
        )
    started = time.perf_counter()
    model.generate(CAPTION, args.frames, sampling=SamplingConfig(cfg_scale=1.0), seed=seed)
    gen_seconds = time.perf_counter() - started
    lm = model.lm
    return {
        "nll": nll, "steps": lm.decoding_steps(args.frames), "gen_seconds": gen_seconds,
        "max_cache_keys": lm.max_cache_keys(args.frames),
        "token_steps": lm.token_steps(args.frames).numpy(),
        "params": sum(p.numel() for p in lm.parameters()),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=8)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--cardinality", type=int, default=16)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--train-grids", type=int, default=2000)
    parser.add_argument("--heldout-grids", type=int, default=200)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--depth-dim", type=int, default=32, help="the depth decoder's")
    parser.add_argument("--depth-layers", type=int, default=1, help="the depth decoder's")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument(
        "--budget", choices=("steps", "flops"), default="steps",
        help="steps: --steps for every row; flops: every row gets delay's FLOPs at --steps",
    )  # fmt: skip
    parser.add_argument(
        "--rows", nargs="*", help="only these rows (labels as in the table, e.g. delay depth)"
    )
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--frame-rate", type=float, default=50.0, help="for the RTF")
    parser.add_argument("--quick", action="store_true", help="a smoke run (tests)")
    parser.add_argument("--out", type=Path, default=Path("results/pattern_quality"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.train_grids, args.heldout_grids, args.steps, args.frames = 64, 8, 3, 12
        args.seeds = 1
    args.out.mkdir(parents=True, exist_ok=True)
    source = HiddenMarkovSource.random(
        seed=0, states=args.states, levels=args.levels, cardinality=args.cardinality
    )
    train = source.sample(args.train_grids, args.frames, seed=1)
    heldout = source.sample(args.heldout_grids, args.frames, seed=2)
    source.save(args.out / "source.npz", heldout)
    rows = [row for row in ROWS if not args.rows or row[0] in args.rows]
    if args.rows and len(rows) != len(args.rows):
        known = ", ".join(row[0] for row in ROWS)
        parser.error(f"--rows takes labels among: {known}")
    reference_flops = step_flops(args, ROWS[0])
    results: list[Result] = []
    floors: dict[str, float] = {}
    entropy = None
    for row in rows:
        flops = step_flops(args, row)
        train_steps = args.steps
        if args.budget == "flops":
            train_steps = max(1, round(args.steps * reference_flops / flops))
        for seed in range(args.seeds):
            measured = train_and_measure(args, row, train, heldout, seed, train_steps)
            if row[0] not in floors:  # exact and seed-independent: once per pattern
                floors[row[0]] = pattern_floor(source, heldout, measured["token_steps"])
            floor = floors[row[0]]
            if entropy is None:
                flat_steps = (
                    lm_config(args, "flat", 1, None).make_pattern().layout(args.frames, args.levels)
                )
                entropy = pattern_floor(source, heldout, flat_steps.token_steps.numpy())
            results.append(
                Result(
                    label=row[0],
                    pattern=row[1],
                    k=row[2],
                    schedule=row[3],
                    nll=measured["nll"],
                    floor=floor,
                    gap=measured["nll"] - floor,
                    gap_to_entropy=measured["nll"] - entropy,
                    steps=measured["steps"],
                    train_steps=train_steps,
                    train_flops=train_steps * flops,
                    gen_seconds=measured["gen_seconds"],
                    rtf=measured["gen_seconds"] / (args.frames / args.frame_rate),
                    max_cache_keys=measured["max_cache_keys"],
                    params=measured["params"],
                    seed=seed,
                )
            )
            print(
                f"  {row[0]} seed {seed}: nll {measured['nll']:.4f}, floor {floor:.4f}", flush=True
            )
    table = markdown(results, entropy)
    print(
        f"\nsource: {args.states} states, C = {args.levels} x {args.cardinality}, "
        f"T = {args.frames}; {args.train_grids} training grids, {args.heldout_grids} held out; "
        f"{args.layers} layers x {args.dim}, budget: {budget_line(args)}; NLL in nats/token;"
        f" {machine_line()}"
    )
    print(table)
    (args.out / "table.md").write_text(table + "\n")
    payload = {
        "machine": machine(),
        "entropy_floor": entropy,
        "rows": [asdict(r) for r in results],
    }
    json_path = args.json or args.out / "results.json"
    json_path.write_text(json.dumps(payload, indent=2))
    plot(results, entropy, args.out / "quality_vs_time.png")
    written = [json_path, args.out / "table.md", args.out / "quality_vs_time.png"]
    print("wrote " + ", ".join(map(str, [*written, args.out / "source.npz"])))


def budget_line(args) -> str:
    if args.budget == "flops":
        return f"delay's FLOPs at {args.steps} steps of {args.batch} for every row"
    return f"{args.steps} steps of {args.batch}"


def markdown(results: list[Result], entropy: float) -> str:
    lines = [
        f"entropy rate (flat's floor): {entropy:.4f} nats/token",
        "",
        "| pattern | floor | floor - entropy | NLL | NLL - floor | steps | gen s | cache keys "
        "| params | train steps | train GFLOPs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in dict.fromkeys(r.label for r in results):
        rows = [r for r in results if r.label == label]
        nlls = [r.nll for r in rows]
        spread = f" ± {statistics.stdev(nlls):.4f}" if len(nlls) > 1 else ""
        r = rows[0]
        lines.append(
            f"| {label} | {r.floor:.4f} | {r.floor - entropy:.4f} | "
            f"{statistics.mean(nlls):.4f}{spread} | {statistics.mean(nlls) - r.floor:.4f} | "
            f"{r.steps} | {statistics.mean(x.gen_seconds for x in rows):.3f} | {r.max_cache_keys} "
            f"| {r.params:,} | {r.train_steps} | {r.train_flops / 1e9:.1f} |"
        )
    return "\n".join(lines)


def plot(results: list[Result], entropy: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label in dict.fromkeys(r.label for r in results):
        rows = [r for r in results if r.label == label]
        x = statistics.mean(r.gen_seconds for r in rows)
        y = statistics.mean(r.gap_to_entropy for r in rows)
        axis.scatter(x, y)
        axis.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axis.set_xlabel("generation time for one sample (s)")
    axis.set_ylabel("held-out NLL - entropy rate (nats/token)")
    axis.set_title(f"pattern quality vs decoding time (entropy rate {entropy:.3f})")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
