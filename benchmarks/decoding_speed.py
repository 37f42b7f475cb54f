"""Decoding speed of every pattern, transformers' MusicGen and the weight-streaming floor,
measured side by side in one run.

    python benchmarks/decoding_speed.py [--seconds 10 --dim 512 --layers 8 --large --json out.json]

Every row decodes 1 prompt with classifier-free guidance (2 rows through the decoder),
top-k 250, at the same decoder size. `transformers` is MusicgenForConditionalGeneration.
generate at the same decoder config (its audio decoding timed and subtracted). The floor
is the decoder's weight matmuls alone for one delay step at the same rows: decoding a
small model on a CPU is bound by streaming its weights from memory, so no step can be
much cheaper than that. `floor + mean cache reads` adds what a step must also stream:
each layer's attention over the cache at its mean length over the clip. Rows are timed
in interleaved rounds (`--rounds`), the median per row, so drift falls on all alike;
then stack-delay k = 3 and delay decode alternating in `--pairs` pairs, their ratio.
`static shapes` attends over every cache slot under the mask (the
shape a CUDA graph needs); `bf16` casts the LM's weights, and its logits' deviation from
fp32 on the same codes is printed with it. The depth decoder (a temporal step and C depth
steps per frame; its depth transformer half the width and a quarter of the layers) has a
floor of its own per frame, and its "x floor" compares whole frames with it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from alternating import paired_ratio

from lightning_sdm.conditioning import TextConditionerConfig
from lightning_sdm.machine import machine, machine_line
from lightning_sdm.models.lm import LMConfig
from lightning_sdm.models.sampling import SamplingConfig
from lightning_sdm.models.text_to_music import TextToMusicConfig, TextToMusicLM
from lightning_sdm.nn.packed_linear import projection

PATTERNS = [
    ("delay", 1), ("flat", 1), ("stack", 1), ("stack_delay", 1), ("stack_delay", 3), ("depth", 1),
]  # fmt: skip
FRAME_RATE = 50.0
DEPTH_FLOOR = ", depth decoder (per frame)"
FLOOR_REPEATS = 4
TINY_TEXT = {
    "vocab_size": 384,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 1,
    "num_heads": 4,
}


@dataclass
class Row:
    name: str
    pattern: str
    k: int
    layers: int
    dim: int
    precision: str
    steps: int
    wall_s: float
    ms_per_step: float
    rtf: float
    max_cache_keys: int
    cache_bytes: int
    floor_multiple: float = float("nan")
    static_shapes: bool = False
    pack_weights: bool | str = "auto"  # the setting: True, False or "auto" (measured)
    # What decoding multiplied through: "packed", "linear" or each weight shape's path.
    matmul_path: str = ""
    # bf16 only: max |logit - fp32 logit| over teacher-forced codes, and that over the
    # fp32 logits' standard deviation.
    logit_max_abs_dev: float | None = None
    logit_rel_dev: float | None = None


def depth_sizes(dim: int, layers: int) -> dict[str, int]:
    """The depth decoder's depth transformer in the speed benchmarks: half the width, a
    quarter of the layers."""
    depth_dim = dim // 2
    return {
        "depth_dim": depth_dim, "depth_layers": max(1, layers // 4),
        "depth_heads": max(1, depth_dim // 64), "depth_ffn_dim": 4 * depth_dim,
    }  # fmt: skip


def lm_config(args: argparse.Namespace, dim: int, layers: int, pattern: str, k: int) -> LMConfig:
    return LMConfig(
        dim=dim, num_layers=layers, num_heads=args.heads if dim <= 512 else 16, ffn_dim=4 * dim,
        num_levels=args.levels, cardinality=args.cardinality, pattern=pattern, interleave=k,
        **depth_sizes(dim, layers),
    )  # fmt: skip


def our_model(lm: LMConfig) -> TextToMusicLM:
    torch.manual_seed(0)
    text = TextConditionerConfig(t5_config=dict(TINY_TEXT))
    return TextToMusicLM(TextToMusicConfig(lm=lm, text=text)).eval()


def interleaved_medians(runs: list[Callable[[], float]], rounds: int) -> list[float]:
    """Median of the seconds each run reports over `rounds` rounds that take every run in
    turn (after one warm-up each), so a machine's drift (other load, clocks) falls on all
    rows alike."""
    for run in runs:
        run()  # warm-up: allocations, kernels, caches
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for index, run in enumerate(runs):
            times[index].append(run())
    return [statistics.median(each) for each in times]


def logit_deviation(model: TextToMusicLM, precision: str) -> tuple[float, float]:
    """Teacher-forced cached logits at `precision` against fp32, on the same random codes."""
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, model.cardinality, (1, model.num_levels, 50), generator=generator)
    model.lm.set_inference_precision("fp32")
    reference = model.score_cached(codes, ["a caption"])
    model.lm.set_inference_precision(precision)
    deviation = (model.score_cached(codes, ["a caption"]) - reference).abs().max().item()
    return deviation, deviation / reference.std().item()


def prepare_ours(
    lm: LMConfig,
    frames: int,
    sampling: SamplingConfig,
    precision: str = "fp32",
    static_shapes: bool = False,
    pack_weights: bool | str = "auto",
) -> tuple[Row, Callable[[], float]]:
    """The row's description and a run that decodes once and returns its wall seconds."""
    model = our_model(lm)
    deviation = logit_deviation(model, precision) if precision != "fp32" else (None, None)
    options = {"static_shapes": static_shapes, "pack_weights": pack_weights}

    def run() -> float:
        start = time.perf_counter()
        model.generate(["a caption"], frames, sampling=sampling, seed=0, **options)
        return time.perf_counter() - start

    rows = 2 if sampling.uses_guidance else 1
    cache = model.lm.cache_values(rows, frames) * model.lm.head_weight.element_size()
    name = f"ours {lm.pattern}" + (f" k={lm.interleave}" if lm.pattern == "stack_delay" else "")
    if precision != "fp32":
        name += f" ({precision})"
    if static_shapes:
        name += " (static shapes)"
    path = model.lm.matmul_path(rows, frames, pack_weights)
    if pack_weights is False:
        name += " (F.linear)"
    elif pack_weights is True:
        name += " (packed)"
    row = Row(
        name=name, pattern=lm.pattern, k=lm.interleave, layers=lm.num_layers, dim=lm.dim,
        precision=precision, steps=model.lm.decoding_steps(frames), wall_s=float("nan"),
        ms_per_step=float("nan"), rtf=float("nan"), max_cache_keys=model.lm.max_cache_keys(frames),
        cache_bytes=cache, static_shapes=static_shapes, pack_weights=pack_weights,
        matmul_path=path,
        logit_max_abs_dev=deviation[0], logit_rel_dev=deviation[1],
    )  # fmt: skip
    return row, run


def prepare_transformers(lm: LMConfig, frames: int) -> tuple[Row, Callable[[], float]]:
    from transformers import (
        ByT5Tokenizer,
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    config = MusicgenConfig(
        text_encoder=T5Config(**TINY_TEXT),
        audio_encoder=EncodecConfig(
            sampling_rate=32000, audio_channels=1, normalize=False, chunk_length_s=None,
            codebook_size=lm.cardinality, codebook_dim=16, hidden_size=16, num_filters=4,
            num_lstm_layers=1, upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2],
        ),
        decoder=MusicgenDecoderConfig(
            vocab_size=lm.cardinality, hidden_size=lm.dim, num_hidden_layers=lm.num_layers,
            num_attention_heads=lm.num_heads, ffn_dim=lm.ffn_dim, num_codebooks=lm.num_levels,
            pad_token_id=lm.cardinality, bos_token_id=lm.cardinality,
            decoder_start_token_id=lm.cardinality,
        ),
    )  # fmt: skip
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(config).eval()
    tokens = ByT5Tokenizer()(["a caption"], return_tensors="pt")
    decode_seconds: list[float] = []
    decode = model.audio_encoder.decode

    def timed_decode(*a, **k):
        start = time.perf_counter()
        out = decode(*a, **k)
        decode_seconds.append(time.perf_counter() - start)
        return out

    model.audio_encoder.decode = timed_decode
    steps = frames + lm.num_levels - 1

    def run() -> None:
        with torch.inference_mode():
            model.generate(
                **tokens, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=steps
            )

    def timed_run() -> float:
        decode_seconds.clear()
        start = time.perf_counter()
        run()
        return time.perf_counter() - start - sum(decode_seconds)

    cache = 2 * lm.num_layers * 2 * steps * lm.dim * 4
    row = Row(
        name="transformers MusicGen", pattern="delay", k=1, layers=lm.num_layers, dim=lm.dim,
        precision="fp32", steps=steps, wall_s=float("nan"), ms_per_step=float("nan"),
        rtf=float("nan"), max_cache_keys=steps, cache_bytes=cache,
    )  # fmt: skip
    return row, timed_run


def prepare_csm(lm: LMConfig, frames: int) -> tuple[Row, Callable[[], float]]:
    """transformers' CSM (a Llama backbone once per frame, its depth decoder over levels
    1 ... C-1) at our depth decoder's sizes: backbone = temporal transformer (width,
    layers, heads; SwiGLU of 4 x width, the same parameters per layer as our FFN + text
    cross-attention), depth decoder = depth transformer. A 4-token text prompt, no CFG (CSM
    has none), top-k 250 at both stages, its Mimi codec never called."""
    from transformers import CsmConfig, CsmForConditionalGeneration

    vocab = lm.cardinality + 3  # + CSM's codebook pad and end ids
    config = CsmConfig(
        num_codebooks=lm.num_levels, vocab_size=vocab, text_vocab_size=1000,
        hidden_size=lm.dim, intermediate_size=lm.ffn_dim, num_hidden_layers=lm.num_layers,
        num_attention_heads=lm.num_heads, num_key_value_heads=lm.num_heads,
        codebook_pad_token_id=vocab - 1, codebook_eos_token_id=vocab - 2,
        pad_token_id=2, bos_token_id=1, audio_token_id=3, audio_eos_token_id=4,
        depth_decoder_config={
            "num_codebooks": lm.num_levels, "backbone_hidden_size": lm.dim,
            "vocab_size": vocab, "hidden_size": lm.depth_dim,
            "intermediate_size": lm.depth_ffn_dim, "num_hidden_layers": lm.depth_layers,
            "num_attention_heads": lm.depth_heads, "num_key_value_heads": lm.depth_heads,
            "max_position_embeddings": lm.num_levels + 1,
        },
    )  # fmt: skip
    torch.manual_seed(0)
    model = CsmForConditionalGeneration(config).eval()
    prompt = torch.tensor([[1, 10, 11, 12]])
    theirs = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("codec"))
    ours = sum(p.numel() for p in our_model(lm).lm.parameters())
    print(f"  CSM backbone + depth decoder: {theirs:,} parameters; our depth decoder {ours:,}")

    def run() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                input_ids=prompt, max_new_tokens=frames, min_new_tokens=frames, do_sample=True,
                top_k=250, depth_decoder_do_sample=True, depth_decoder_top_k=250,
            )  # fmt: skip
        return time.perf_counter() - start

    row = Row(
        name="transformers CSM (no CFG)", pattern="depth", k=1, layers=lm.num_layers,
        dim=lm.dim, precision="fp32", steps=frames * lm.num_levels, wall_s=float("nan"),
        ms_per_step=float("nan"), rtf=float("nan"), max_cache_keys=frames + lm.num_levels,
        cache_bytes=2 * lm.num_layers * 2 * frames * lm.dim * 4,
    )  # fmt: skip
    return row, run


@dataclass
class FloorWeights:
    """Random weights of the decoder's shapes, made once per size and shared by the
    floors (at 24 x 1024 each copy is 1.6 GB)."""

    layers: list[torch.Tensor]
    heads: list[torch.Tensor]

    @classmethod
    def like(cls, lm: LMConfig) -> FloorWeights:
        return cls.of_sizes(lm.dim, lm.ffn_dim, lm.num_layers, lm.num_levels, lm.cardinality)

    @classmethod
    def of_depth(cls, lm: LMConfig) -> FloorWeights:
        """The depth decoder's depth transformer and level heads."""
        return cls.of_sizes(
            lm.depth_dim, lm.depth_ffn_dim, lm.depth_layers, lm.num_levels, lm.cardinality
        )

    @classmethod
    def of_sizes(cls, dim: int, ffn: int, num_layers: int, levels: int, vocab: int) -> FloorWeights:
        torch.manual_seed(0)
        layers = []
        for _ in range(num_layers):
            layers += [torch.randn(dim, dim), torch.randn(2 * dim, dim), torch.randn(dim, dim)]
            layers += [torch.randn(dim, dim), torch.randn(dim, dim)]  # cross: query, out
            layers += [torch.randn(ffn, dim), torch.randn(dim, ffn)]
        return cls(layers, list(torch.randn(levels, vocab, dim)))


def prepare_floor(
    weights: FloorWeights,
    lm: LMConfig,
    rows: int,
    steps: int,
    cache_keys: int = 0,
    packed: bool = True,
    positions: int = 1,
    dtype: torch.dtype = torch.float32,
) -> Callable[[], float]:
    """A run of `steps` floor steps, returning its seconds. A floor step is the weight
    matmuls of one step of `positions` positions per row (delay: 1, stack-delay: ~C + 1):
    every layer's projections and FFN, then one head per level on one position, through
    the fastest matmul this machine has for them (oneDNN on packed weights, as decoding
    uses; `packed=False`: `F.linear`). With `cache_keys`, each layer also attends over that
    many cached keys and values of its own (the cache a step must read, which the weights
    evict from the CPU's caches)."""
    dim, ffn = lm.dim, lm.ffn_dim
    x = torch.randn(rows, positions, dim, dtype=dtype)
    hidden = torch.randn(rows, positions, ffn, dtype=dtype)
    head_dim = dim // lm.num_heads
    query = torch.randn(rows, lm.num_heads, positions, head_dim, dtype=dtype)
    caches = [
        (torch.randn(rows, lm.num_heads, cache_keys, head_dim, dtype=dtype),) * 2
        for _ in range(lm.num_layers if cache_keys else 0)
    ]

    def make(weight: torch.Tensor, rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
        weight = weight.to(dtype)
        return projection(weight, None, rows) if packed else partial(F.linear, weight=weight)

    def run() -> float:
        """Seconds for `steps` steps, timed over FLOOR_REPEATS times as many: a floor run
        is short, and a few milliseconds of the shared machine's jitter would move it.
        Casts and packed copies are made (untimed) per run, so only one exists at a time."""
        with torch.inference_mode():
            inputs = [
                (make(weight, rows * positions), hidden if weight.shape[1] == ffn else x)
                for weight in weights.layers
            ] + [(make(weight, rows), x[:, 0]) for weight in weights.heads]
            start = time.perf_counter()
            for _ in range(steps * FLOOR_REPEATS):
                for project, given in inputs:
                    project(given)
                for keys, values in caches:
                    F.scaled_dot_product_attention(query, keys, values)
            return (time.perf_counter() - start) / FLOOR_REPEATS

    return run


def prepare_depth_floor(lm: LMConfig, rows: int, frames: int) -> Callable[[], float]:
    """The depth decoder's floor for `frames` frames: per frame, the temporal transformer's
    weight matmuls once and the depth transformer's plus one level head C times, through
    oneDNN's packed weights (as `prepare_floor`)."""
    temporal = FloorWeights(FloorWeights.like(lm).layers, heads=[])
    depth = FloorWeights.of_depth(lm)

    def steps_of(weights: FloorWeights, dim: int, ffn: int) -> Callable[[], None]:
        x, hidden = torch.randn(rows, 1, dim), torch.randn(rows, 1, ffn)
        layers = [
            (projection(w, None, rows), hidden if w.shape[1] == ffn else x) for w in weights.layers
        ]
        heads = [(projection(w, None, rows), x[:, 0]) for w in weights.heads]

        def run(level: int | None = None) -> None:
            for project, given in layers:
                project(given)
            if level is not None:
                project, given = heads[level]
                project(given)

        return run

    def run() -> float:
        with torch.inference_mode():
            temporal_step = steps_of(temporal, lm.dim, lm.ffn_dim)
            depth_step = steps_of(depth, lm.depth_dim, lm.depth_ffn_dim)
            start = time.perf_counter()
            for _ in range(frames * FLOOR_REPEATS):
                temporal_step()
                for level in range(lm.num_levels):
                    depth_step(level)
            return (time.perf_counter() - start) / FLOOR_REPEATS

    return run


def table(rows: list[Row], floors: dict[str, float], delay: Row, transformers: Row | None) -> str:
    """`floors`: ms per step by the suffix of their row's name; the first is "x floor"'s."""
    floor = next(iter(floors.values()))
    header = (
        f"{'':<30}{'steps':>6}{'wall s':>8}{'steps/s':>8}{'ms/step':>8}{'x floor':>8}"
        f"{'RTF':>6}{'vs delay':>9}{'vs HF':>7}{'cache keys':>11}{'cache MB':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        versus_hf = transformers.wall_s / row.wall_s if transformers else float("nan")
        lines.append(
            f"{row.name:<30}{row.steps:>6}{row.wall_s:>8.2f}{row.steps / row.wall_s:>8.1f}"
            f"{row.ms_per_step:>8.2f}{row.ms_per_step / floor:>8.2f}{row.rtf:>6.2f}"
            f"{row.wall_s / delay.wall_s:>8.2f}x{versus_hf:>6.2f}x"
            f"{row.max_cache_keys:>11}{row.cache_bytes / 2**20:>9.1f}"
        )
    for suffix, ms in floors.items():
        lines.append(f"{'floor' + suffix:<30}{'':>6}{'':>8}{'':>8}{ms:>8.2f}{ms / floor:>8.2f}")
    return "\n".join(lines)


def run_size(args: argparse.Namespace, dim: int, layers: int) -> dict:
    frames = round(args.seconds * FRAME_RATE)
    sampling = SamplingConfig(temperature=1.0, top_k=250, cfg_scale=3.0)
    cases: list[tuple[Row, Callable[[], float]]] = []
    for pattern, k in PATTERNS:
        if pattern != "delay" and args.only_delay:
            continue
        cases.append(prepare_ours(lm_config(args, dim, layers, pattern, k), frames, sampling))
    delay_config = lm_config(args, dim, layers, "delay", 1)
    if args.static_shapes:
        cases.append(prepare_ours(delay_config, frames, sampling, static_shapes=True))
    if args.unpacked:  # both paths forced, beside the one "auto" measured faster
        cases.append(prepare_ours(delay_config, frames, sampling, pack_weights=True))
        cases.append(prepare_ours(delay_config, frames, sampling, pack_weights=False))
    # Reduced precision for delay and stack-delay k=3: bf16 matmuls cost about the same
    # for 2 rows as for 10 on CPUs with bf16 units, where fp32's grow with the rows.
    reduced = [delay_config] + (
        [] if args.only_delay else [lm_config(args, dim, layers, "stack_delay", 3)]
    )
    for precision in args.precision:
        for config in reduced:
            cases.append(prepare_ours(config, frames, sampling, precision))
    if not args.skip_transformers:
        cases.append(prepare_transformers(delay_config, frames))
    if args.csm:  # the depth decoder without CFG (1 row), beside CSM, which has none
        depth_config = lm_config(args, dim, layers, "depth", 1)
        no_cfg = SamplingConfig(temperature=1.0, top_k=250, cfg_scale=1.0)
        ours_depth, run_depth = prepare_ours(depth_config, frames, no_cfg)
        ours_depth.name += " (no CFG)"
        cases += [(ours_depth, run_depth), prepare_csm(depth_config, frames)]
    steps = cases[0][0].steps  # delay's: the floors take as many steps, timed in the rounds
    stack_delay = lm_config(args, dim, layers, "stack_delay", 3).make_pattern()
    stack_delay = stack_delay.layout(frames, args.levels)
    positions = round(stack_delay.num_positions / stack_delay.num_decoding_steps)
    # (name suffix, JSON key, run); the first is what "x floor" divides by.
    weights = FloorWeights.like(delay_config)
    named_floors = [
        ("", "floor", prepare_floor(weights, delay_config, 2, steps)),
        (
            " + mean cache reads",
            "floor_with_cache",
            prepare_floor(weights, delay_config, 2, steps, cache_keys=steps // 2),
        ),
        (
            ", F.linear",
            "floor_f_linear",
            prepare_floor(weights, delay_config, 2, steps, packed=False),
        ),
        (
            f", stack-delay ({positions} pos.)",
            "floor_stack_delay",
            prepare_floor(weights, delay_config, 2, steps, positions=positions),
        ),
        (
            ", bf16",
            "floor_bf16",
            prepare_floor(weights, delay_config, 2, steps, dtype=torch.bfloat16),
        ),
        (  # per frame, as delay's steps are: one temporal + C depth steps each
            DEPTH_FLOOR,
            "floor_depth",
            prepare_depth_floor(lm_config(args, dim, layers, "depth", 1), 2, steps),
        ),
    ]
    floors = [run for _, _, run in named_floors]
    print(
        f"  timing {len(cases)} rows and {len(floors)} floors over {args.rounds} "
        "interleaved round(s)"
    )
    walls = interleaved_medians([run for _, run in cases] + floors, args.rounds)
    rows = []
    for (row, _), wall in zip(cases, walls[: len(cases)], strict=True):
        row.wall_s, row.ms_per_step = wall, 1000 * wall / row.steps
        row.rtf = wall / (frames / FRAME_RATE)
        rows.append(row)
    transformers = next((r for r in rows if r.name == "transformers MusicGen"), None)
    delay = rows[0]
    floor_ms = {
        suffix: 1000 * wall / steps
        for (suffix, _, _), wall in zip(named_floors, walls[len(cases) :], strict=True)
    }
    floor = floor_ms[""]
    for row in rows:
        row.floor_multiple = row.ms_per_step / floor
        if row.pattern == "depth":  # its steps differ in cost: compare whole frames
            row.floor_multiple = 1000 * row.wall_s / steps / floor_ms[DEPTH_FLOOR]
    print(
        f"\n{layers} layers x {dim}, C = {args.levels} x {args.cardinality}, {args.seconds:g} s "
        f"({frames} frames), 1 prompt + CFG (2 rows), top-k 250, on {machine_line()}"
    )
    print(table(rows, floor_ms, delay, transformers))
    # Rows of the table are minutes apart: rows that decode alike differ by up to ~10 %
    # there, where two decodes right after one another share the machine's state.
    paired = {}
    stack_delay_index = next(
        (i for i, (r, _) in enumerate(cases) if r.name == "ours stack_delay k=3"), None
    )
    if args.pairs and stack_delay_index is not None:
        paired = paired_ratio(cases[0][1], cases[stack_delay_index][1], args.pairs)
        ratios = paired["pair_ratios"]
        print(
            f"stack-delay k=3 against delay, {args.pairs} decodes each, alternating: "
            f"{paired['ratio']:.2f}x delay's time (pairs {min(ratios):.2f}x-{max(ratios):.2f}x)"
        )
    csm = next((r for r in rows if r.name.startswith("transformers CSM")), None)
    if csm is not None:
        ours_depth = next(r for r in rows if r.name == "ours depth (no CFG)")
        print(
            f"depth decoding, 1 row, no CFG: ours {ours_depth.wall_s:.2f} s, transformers' CSM "
            f"{csm.wall_s:.2f} s ({csm.wall_s / ours_depth.wall_s:.2f}x)"
        )
    print("matmul path of each row: " + ", ".join(f"{r.name}: {r.matmul_path}" for r in rows))
    for row in rows:
        if row.logit_max_abs_dev is not None:
            print(
                f"{row.name}: logits deviate from fp32 by at most {row.logit_max_abs_dev:.3g} "
                f"({row.logit_rel_dev:.1%} of the fp32 logits' standard deviation)"
            )
    return {"rows": [asdict(row) for row in rows], "stack_delay_paired": paired} | {
        f"{key}_ms_per_step": floor_ms[suffix] for suffix, key, _ in named_floors
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--cardinality", type=int, default=2048)
    parser.add_argument(
        "--rounds", type=int, default=1, help="interleaved timing rounds (median per row)"
    )
    parser.add_argument("--large", action="store_true", help="also 24 layers x 1024")
    parser.add_argument("--only-delay", action="store_true", help="skip the other patterns")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument(
        "--csm", action="store_true",
        help="also the depth decoder without CFG beside transformers' CSM at its sizes",
    )  # fmt: skip
    parser.add_argument(
        "--precision", nargs="*", default=["bf16"], help="reduced-precision delay rows"
    )
    parser.add_argument(
        "--no-static-shapes", dest="static_shapes", action="store_false",
        help="skip the static-shape delay row",
    )  # fmt: skip
    parser.add_argument(
        "--no-unpacked", dest="unpacked", action="store_false",
        help="skip the delay row that multiplies through F.linear instead of packed weights",
    )  # fmt: skip
    parser.add_argument(
        "--pairs", type=int, default=6,
        help="stack-delay k=3 and delay decodes alternating after the rounds (0: none)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [(args.dim, args.layers)] + ([(1024, 24)] if args.large else [])
    results = {f"{layers}x{dim}": run_size(args, dim, layers) for dim, layers in sizes}
    if args.json:
        first = next(iter(results.values()))
        payload = dict(first)  # the first size's rows and floors at the top level
        payload["sizes"] = results
        payload["machine"] = machine()
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
