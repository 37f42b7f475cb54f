"""Training step time and peak memory per pattern and attention backend, side by side in
one run, with the fraction of attention scores each backend computes and tokens/s.

    python benchmarks/training_speed.py [--dim 256 --layers 4 --frames 500 --json out.json]
    python benchmarks/training_speed.py --dim 1024 --layers 4 --heads 16 --frames 100  # paper width
    python benchmarks/training_speed.py --estimate --dim 1024 --layers 24 --heads 16 --frames 1500

Each row trains in its own process (peak memory is per process): one warm-up step, then
`--steps` timed steps of forward, backward and AdamW. `dense` attends under the layout's
[N, N] mask (every score computed, then masked); `block_sparse` scores only the key blocks each
query block sees (FlexAttention on CUDA; on CPU, where FlexAttention has no backward, one
SDPA call per chunk of queries over its gathered key blocks); `auto` picks SDPA's causal
kernels where the layout's mask is plain causal (parallel, delay, flat), else the
block-sparse path where it skips at least half the scores, else the dense mask.

`--transformers` times our delay LM against transformers' `MusicgenForCausalLM` at the same
decoder config (MusicGen's layout options, so the parameter counts are equal: checked),
same batch and frames (their input is the delayed grid, T + 3 positions, as ours), each
side in its own process, alternating for `--rounds` rounds; the median of each side. Each
`--precisions` entry is a pair of rows: fp32, or bf16 autocast of the forward (weights,
gradients and AdamW stay fp32, as Lightning's `bf16-mixed` does; on a CPU without bf16
units it is slower).
Ours trains as the task does: the level heads fused with the loss (`nn.level_cross_entropy`);
`--variants logits` adds a row through the full logits and `F.cross_entropy` (the path it
replaced), `--variants compiled` one with each decoder layer compiled, as `model.compile:
true` does (compile time is in the warm-up step, not the timed ones).
Ours runs as `lightning-sdm fit` does, keeping freed memory for the next step
(`lightning_sdm.allocator`); transformers as it runs by default. `--variants allocator`
adds each side the other way (ours with glibc's default thresholds, transformers with
freed memory kept), for ratios at equal allocator settings. `--paired` instead runs both
sides in one process, their steps alternating, for a timing ratio that a shared machine's
drift between processes (±10-20 % seen) cannot move; it reports no per-side memory.
Their cross-attention reads 4 random encoder states; ours runs its tiny random T5 on a
4-token caption first (a few ms).

The GPU column is an estimate, not a measurement: the step's FLOPs with each backend (the
block-sparse path counted at FlexAttention's 128 x 128 blocks), relative to dense, as a
compute-bound GPU would see them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from alternating import paired_ratio  # noqa: E402
from decoding_speed import depth_sizes  # noqa: E402
from kernel_time import step_kernels  # noqa: E402
from process_memory import run_child, time_training_steps  # noqa: E402

from lightning_sdm.allocator import keep_freed_memory  # noqa: E402
from lightning_sdm.conditioning import TextConditionerConfig  # noqa: E402
from lightning_sdm.machine import machine, machine_line  # noqa: E402
from lightning_sdm.models.lm import CodebookLM, LMConfig  # noqa: E402
from lightning_sdm.models.text_to_music import TextToMusicConfig, TextToMusicLM  # noqa: E402
from lightning_sdm.nn.sparse_attention import BlockSparseMask  # noqa: E402
from lightning_sdm.patterns import PatternLayout  # noqa: E402
from lightning_sdm.tasks.lm_task import masked_level_cross_entropy, masked_level_mean  # noqa: E402

PATTERNS = [("delay", 1), ("flat", 1), ("stack", 1), ("stack_delay", 3), ("depth", 1)]
BACKENDS = ("dense", "auto", "block_sparse")
CONTEXT_TOKENS = 4  # "a caption" through T5's tokenizer, with the end token


@dataclass
class Row:
    pattern: str
    k: int
    backend: str
    uses: str  # what the backend ran: "causal", "sparse" or "dense mask"
    positions: int
    step_s: float
    tokens_per_s: float
    peak_mb: float
    scores_computed: float  # attention scores computed / dense N^2, on this device
    gpu_flops: float  # estimated FLOPs of one step on a GPU (not measured)
    device: str


def lm_config(args: argparse.Namespace, pattern: str, k: int, backend: str) -> LMConfig:
    """The depth decoder's depth transformer is sized as in `decoding_speed.py`."""
    return LMConfig(
        dim=args.dim, num_layers=args.layers, num_heads=args.heads, ffn_dim=4 * args.dim,
        pattern=pattern, interleave=k, attention=backend, **depth_sizes(args.dim, args.layers),
    )  # fmt: skip


def model(args: argparse.Namespace, pattern: str, k: int, backend: str) -> TextToMusicLM:
    torch.manual_seed(0)
    lm = lm_config(args, pattern, k, backend)
    return TextToMusicLM(TextToMusicConfig(lm=lm, text=TextConditionerConfig(cfg_dropout=0.0)))


def musicgen_layout_lm(args: argparse.Namespace) -> LMConfig:
    return LMConfig(
        dim=args.dim, num_layers=args.layers, num_heads=args.heads, ffn_dim=4 * args.dim,
        pattern="delay", positional="tensor2tensor", ffn_bias=False, head_bias=False,
    )  # fmt: skip


def training_step(args: argparse.Namespace, side: str, precision: str) -> tuple[Callable, int]:
    """A step (forward + backward + AdamW) of our delay LM (`ours`, `ours-<variant>`) or of
    transformers' MusicgenForCausalLM at the same config, and the decoder's size."""
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2048, (args.batch, 4, args.frames), generator=generator)
    variant = side.partition("-")[2]
    if side.startswith("ours"):
        text = TextConditionerConfig(pretrained="random", cfg_dropout=0.0)
        net = TextToMusicLM(TextToMusicConfig(lm=musicgen_layout_lm(args), text=text)).train()
        mask = torch.ones(args.batch, args.frames, dtype=torch.bool)
        captions = ["a caption"] * args.batch
        size = sum(p.numel() for p in net.lm.parameters())
        if variant == "compiled":  # as `model.compile: true` does: each decoder layer
            from lightning_sdm.nn.transformer import DecoderLayer
            from lightning_sdm.tasks.compiling import compile_blocks

            compile_blocks(net, (DecoderLayer,))

        def loss() -> torch.Tensor:
            if variant == "logits":  # heads, then F.cross_entropy over the full logits
                return masked_level_cross_entropy(net(codes, captions), codes, mask)[0]
            return masked_level_mean(net.token_losses(codes, captions), mask)[0]
    else:
        config = MusicgenDecoderConfig(
            vocab_size=2048, hidden_size=args.dim, num_hidden_layers=args.layers,
            num_attention_heads=args.heads, ffn_dim=4 * args.dim, num_codebooks=4,
            dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
            pad_token_id=2048, bos_token_id=2048, activation_function="gelu",
        )  # fmt: skip
        net = MusicgenForCausalLM(config).train()
        states = torch.randn(args.batch, CONTEXT_TOKENS, args.dim, generator=generator)
        delayed = torch.randint(0, 2048, (args.batch, args.frames + 3, 4), generator=generator)
        size = sum(p.numel() for p in net.parameters())

        def loss() -> torch.Tensor:
            return net(labels=delayed, encoder_hidden_states=states).loss

    # Fused AdamW on both sides: our tasks' optimizer and transformers' Trainer default.
    optimizer = torch.optim.AdamW(
        [p for p in net.parameters() if p.requires_grad], lr=1e-4, fused=True
    )
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def step() -> None:
        with autocast:
            value = loss()
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, size


def transformers_child(args: argparse.Namespace) -> None:
    """One side of `--transformers` in its own process; prints step time, memory, size.
    Ours runs as `lightning-sdm fit` does (freed memory kept, `lightning_sdm.allocator`)
    unless `-glibc`; transformers as it runs by default unless `-kept`."""
    side, precision = args.child.split(":")
    variant = side.partition("-")[2]
    kept = variant == "kept" or (side.startswith("ours") and variant != "glibc")
    kept = kept and keep_freed_memory()
    step, size = training_step(args, side, precision)
    step_s, peak_mb = time_training_steps(step, args.steps)
    measured = {"side": args.child, "step_s": step_s, "peak_mb": peak_mb, "params": size}
    print(json.dumps({**measured, "keeps_freed_memory": kept}))


def _seconds_of(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def compare_in_one_process(args: argparse.Namespace) -> dict:
    """`--paired`: ours and transformers in this one process, their steps alternating
    (A B B A ...) for `--rounds` x `--steps` pairs after a warm-up of each, so the drift of
    a shared machine falls on both alike; the ratio of each pair and of the medians. Peak
    memory is the process's, not a side's: use the default mode for it. The process keeps
    freed memory for both sides (as `fit` does)."""
    kept = keep_freed_memory()
    result: dict = {"keeps_freed_memory": kept}
    for precision in args.precisions:
        steps = {side: training_step(args, side, precision) for side in ("ours", "transformers")}
        for step, _ in steps.values():
            step()
        timed = [partial(_seconds_of, steps[side][0]) for side in ("ours", "transformers")]
        paired = paired_ratio(*timed, args.rounds * args.steps)
        ours, theirs, pairs = paired["first_s"], paired["second_s"], paired["pair_ratios"]
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        kernels = step_kernels(steps["ours"][0], args.steps, dtype)
        result[precision] = {
            "ours_step_s": ours, "transformers_step_s": theirs, "ratio": theirs / ours,
            "pair_ratios": pairs, "params": [size for _, size in steps.values()],
            "ours_kernels": kernels,
        }  # fmt: skip
        print(
            f"{precision}: ours {ours:.3f} s/step, transformers {theirs:.3f} s/step: ours is "
            f"{theirs / ours:.2f}x transformers' speed (pairs {min(pairs):.2f}x-"
            f"{max(pairs):.2f}x over {len(pairs)})"
        )
        floor = kernels["matmul_s"] + kernels["attention_s"]
        print(
            f"{precision}: of ours' step, its matmuls take {kernels['matmul_s']:.3f} s "
            f"({kernels['matmul_gflops']:.0f} GFLOP/s; a 2048-square {precision} matmul runs at "
            f"{kernels['reference_gflops']:.0f} here) and its attention "
            f"{kernels['attention_s']:.3f} s (profiled in the step): with nothing else, ours "
            f"would be {theirs / floor:.2f}x transformers' speed"
        )
    print(
        f"delay LM, {args.layers} layers x {args.dim}, batch {args.batch} x {args.frames} "
        f"frames, forward + backward + fused AdamW, both in one process (freed memory "
        f"{'kept' if kept else 'given back'}), steps alternating; {machine_line()}"
    )
    return result


def compare_with_transformers(args: argparse.Namespace) -> dict:
    names = ("dim", "layers", "heads", "frames", "batch", "steps")
    options = {name: getattr(args, name) for name in names}
    ours = ["ours"] + [f"ours-{v}" for v in args.variants if v != "allocator"]
    theirs = ["transformers"]
    if "allocator" in args.variants:  # each side with glibc's default thresholds and kept
        ours, theirs = [*ours, "ours-glibc"], [*theirs, "transformers-kept"]
    sides = [f"{side}:{p}" for p in args.precisions for side in (*ours, *theirs)]
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for round_index in range(args.rounds):
        for side in sides if round_index % 2 == 0 else sides[::-1]:
            runs[side].append(run_child(__file__, side, options))
            print(f"  round {round_index + 1}: {side} {runs[side][-1]['step_s']:.3f} s", flush=True)
    result = {
        side: {
            "step_s": statistics.median(r["step_s"] for r in rows),
            "peak_mb": max(r["peak_mb"] for r in rows),
            "params": rows[0]["params"],
            "keeps_freed_memory": rows[0]["keeps_freed_memory"],
        }
        for side, rows in runs.items()
    }
    reference = result[f"transformers:{args.precisions[0]}"]
    print(
        f"\ndelay LM, {args.layers} layers x {args.dim}, batch {args.batch} x {args.frames} frames,"
        f" forward + backward + fused AdamW, median of {args.rounds} rounds; {machine_line()}"
    )
    print(f"{'':<24}{'step s':>9}{'peak MB':>9}{'decoder params':>16}{'vs transformers':>17}")
    for side, row in result.items():
        speed = reference["step_s"] / row["step_s"]
        print(
            f"{side:<24}{row['step_s']:>9.3f}{row['peak_mb']:>9.0f}{row['params']:>16,}"
            f"{speed:>16.2f}x"
        )
    for precision in args.precisions:
        ours, theirs = result[f"ours:{precision}"], result[f"transformers:{precision}"]
        print(
            f"{precision}: ours as `fit` runs it is {theirs['step_s'] / ours['step_s']:.2f}x "
            "transformers' speed as it runs by default"
        )
        if "allocator" in args.variants:
            kept = result[f"transformers-kept:{precision}"]
            glibc = result[f"ours-glibc:{precision}"]
            equal_kept = kept["step_s"] / ours["step_s"]
            equal_default = theirs["step_s"] / glibc["step_s"]
            print(
                f"{precision}: at equal allocator settings, {equal_kept:.2f}x (freed memory "
                f"kept) and {equal_default:.2f}x (glibc's default)"
            )
        if ours["params"] != theirs["params"]:
            print(f"warning: parameter counts differ ({ours['params']} vs {theirs['params']})")
    return result


def step_flops(args: argparse.Namespace, positions: int, frames: int, scores: float) -> float:
    """Forward + backward (3x forward) FLOPs of one step: projections, FFN, heads, and
    `scores` self-attention scores per row (QK and PV, 2 x 2 x dim each)."""
    dim, ffn = args.dim, 4 * args.dim
    per_position = 2 * (4 * dim * dim + 2 * dim * dim + 2 * dim * ffn)  # self, cross, FFN
    cross_scores = 4 * positions * CONTEXT_TOKENS * dim
    forward = args.layers * (positions * per_position + 4 * scores * dim + cross_scores)
    forward += 2 * 4 * frames * 2048 * dim  # level heads
    return 3 * args.batch * forward


def depth_step_flops(args: argparse.Namespace, lm: LMConfig) -> float:
    """`step_flops` of the depth decoder: the temporal transformer over T frames (causal),
    then the depth transformer over C positions per frame (causal over C, one context
    key), its input and context projections and the level heads at the depth width."""
    frames, levels, width = args.frames, lm.num_levels, lm.depth_dim
    temporal = step_flops(args, frames, 0, frames * (frames + 1) / 2) / 3 / args.batch
    per_position = 2 * (4 * width * width + 2 * width * width + 2 * width * lm.depth_ffn_dim)
    scores = levels * (levels + 1) / 2 * frames
    depth = lm.depth_layers * (levels * frames * per_position + 4 * scores * width)
    depth += 2 * 2 * frames * args.dim * width + 2 * levels * frames * 2048 * width
    return 3 * args.batch * (temporal + depth)


def gpu_scores(layout: PatternLayout, uses: str) -> float:
    """Scores a GPU computes per row: all for a dense mask, the lower triangle for the
    causal kernels, FlexAttention's visible 128 x 128 blocks for the sparse path."""
    n = layout.num_positions
    if uses == "causal":
        return n * (n + 1) / 2
    if uses == "sparse":
        blocks = BlockSparseMask(layout.attention_mask, layout.attention_key_order, 128, 128)
        return blocks.scores_fraction * n * n
    return float(n * n)


def attention_used(lm: CodebookLM, frames: int) -> tuple[str, float]:
    """What the backend runs at this length, and the share of N^2 scores it computes."""
    plan = lm.training_attention(frames, torch.device("cpu"))
    n = lm.layout(frames).num_positions
    if plan is None:
        return "causal", (n + 1) / (2 * n)
    if isinstance(plan, BlockSparseMask):
        return "sparse", plan.scores_fraction
    return "dense mask", 1.0


def estimate(args: argparse.Namespace) -> None:
    """The GPU column alone, for any size: no training, nothing measured."""
    print(
        f"Estimated from FLOP counts, not measured: {args.layers} layers x {args.dim}, "
        f"{args.frames} frames; step FLOPs relative to the same pattern's dense mask"
    )
    for entry in args.patterns:
        pattern, k = entry.split(":")
        if lm_config(args, pattern, int(k), "auto").is_depth:
            continue  # one attention path (causal over frames): nothing to compare
        cells = []
        for backend in args.backends:
            config = lm_config(args, pattern, int(k), backend)
            with torch.device("meta"):
                lm = CodebookLM(config)
            layout = lm.layout(args.frames)
            uses, _ = attention_used(lm, args.frames)
            flops = step_flops(args, layout.num_positions, args.frames, gpu_scores(layout, uses))
            cells.append((backend, uses, flops))
        dense = next((f for b, _, f in cells if b == "dense"), cells[0][2])
        row = "  ".join(f"{b} ({u}) {dense / f:.2f}x" for b, u, f in cells)
        print(f"  {pattern} k={k}: {row}")


def child(args: argparse.Namespace) -> None:
    pattern, k, backend = args.child.split(":")
    net = model(args, pattern, int(k), backend).train()
    if net.lm.config.is_depth:  # causal over frames; the depth pass is C positions a frame
        n = args.frames
        uses, scores = "causal", (n + 1) / (2 * n)
        flops = depth_step_flops(args, net.lm.config)
    else:
        layout = net.lm.layout(args.frames)
        n = layout.num_positions
        uses, scores = attention_used(net.lm, args.frames)
        flops = step_flops(args, n, args.frames, gpu_scores(layout, uses))
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2048, (args.batch, 4, args.frames), generator=generator)
    mask = torch.ones(args.batch, args.frames, dtype=torch.bool)
    captions = ["a caption"] * args.batch
    # Fused AdamW, as the tasks train.
    optimizer = torch.optim.AdamW(
        [p for p in net.parameters() if p.requires_grad], lr=1e-4, fused=True
    )

    def step() -> None:
        loss, _ = masked_level_mean(net.token_losses(codes, captions), mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_s, peak_mb = time_training_steps(step, args.steps)
    row = Row(
        pattern=pattern, k=int(k), backend=backend, uses=uses,
        positions=n, step_s=step_s, tokens_per_s=args.batch * args.frames * 4 / step_s,
        peak_mb=peak_mb, scores_computed=scores,
        gpu_flops=flops,
        device=f"cpu ({torch.get_num_threads()} threads)",
    )  # fmt: skip
    print(json.dumps(asdict(row)))


def measure(args: argparse.Namespace, pattern: str, k: int, backend: str) -> Row:
    names = ("dim", "layers", "heads", "frames", "batch", "steps")
    options = {name: getattr(args, name) for name in names}
    return Row(**run_child(__file__, f"{pattern}:{k}:{backend}", options))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--patterns", nargs="*", default=[f"{p}:{k}" for p, k in PATTERNS],
        help="pattern:k pairs (stack patterns at T = 1500 need tens of GB for the dense mask)",
    )  # fmt: skip
    parser.add_argument("--backends", nargs="*", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument(
        "--estimate", action="store_true", help="only the FLOP-count estimate (any size, fast)"
    )
    parser.add_argument(
        "--transformers", action="store_true",
        help="time our delay LM against transformers' MusicgenForCausalLM, side by side",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="with --transformers")
    parser.add_argument(
        "--paired", action="store_true",
        help="with --transformers: both sides in one process, steps alternating (timing "
        "only; robust to a shared machine's drift)",
    )  # fmt: skip
    parser.add_argument(
        "--precisions", nargs="*", default=["fp32"], choices=("fp32", "bf16"),
        help="with --transformers: fp32 and/or bf16 autocast rows",
    )  # fmt: skip
    parser.add_argument(
        "--variants", nargs="*", default=[], choices=("logits", "compiled", "allocator"),
        help="with --transformers: extra rows of ours: `logits` (full logits, then "
        "F.cross_entropy, instead of the fused heads + loss), `compiled` (torch.compile); "
        "`allocator`: ours with glibc's default thresholds, and transformers with freed "
        "memory kept as ours",
    )  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.child and args.child.split(":")[0].split("-")[0] in ("ours", "transformers"):
        transformers_child(args)
        return
    if args.child:
        child(args)
        return
    if args.transformers:
        compare = compare_in_one_process if args.paired else compare_with_transformers
        result = compare(args)
        if args.json:
            args.json.write_text(json.dumps({"machine": machine(), **result}, indent=2))
        return
    if args.estimate:
        estimate(args)
        return
    rows = []
    for pattern, k in (entry.split(":") for entry in args.patterns):
        k = int(k)
        # The depth decoder has one attention path (causal over frames): one row.
        depth = lm_config(args, pattern, k, "auto").is_depth
        for backend in ("auto",) if depth else args.backends:
            rows.append(measure(args, pattern, k, backend))
            print(f"  measured {pattern} k={k} {backend}: {rows[-1].step_s:.2f} s", flush=True)
    delay_dense = next((r for r in rows if r.pattern == "delay" and r.backend == "dense"), rows[0])
    print(
        f"\n{args.layers} layers x {args.dim}, {args.heads} heads, batch {args.batch} x "
        f"{args.frames} frames, forward + backward + AdamW; measured on {rows[0].device}, "
        f"{machine_line()}"
    )
    header = (
        f"{'pattern':<16}{'backend':>8}{'runs':>12}{'positions':>10}{'step s':>8}"
        f"{'vs delay':>9}{'vs dense':>9}{'tokens/s':>10}{'peak MB':>9}{'scores':>8}"
        f"{'GPU est.':>10}"
    )
    print(header + "\n" + "-" * len(header))
    for row in rows:
        dense = next(
            (r for r in rows if (r.pattern, r.k, r.backend) == (row.pattern, row.k, "dense")),
            row,
        )
        name = row.pattern + (f" k={row.k}" if row.pattern == "stack_delay" else "")
        print(
            f"{name:<16}{row.backend:>8}{row.uses:>12}{row.positions:>10}{row.step_s:>8.2f}"
            f"{row.step_s / delay_dense.step_s:>8.2f}x{dense.step_s / row.step_s:>8.2f}x"
            f"{row.tokens_per_s:>10.0f}{row.peak_mb:>9.0f}{row.scores_computed:>8.2f}"
            f"{dense.gpu_flops / row.gpu_flops:>9.2f}x"
        )
    print(
        "'vs dense': measured speed-up over the same pattern's dense row. 'scores': attention"
        " scores computed / N^2. 'GPU est.': estimated, not measured: dense FLOPs / this"
        " row's FLOPs for a compute-bound GPU step (sparse rows at FlexAttention's 128 x 128"
        " blocks)."
    )
    if args.json:
        payload = {"machine": machine(), "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
