"""Pattern quality on music tokens: every pattern and the depth decoder trained with one
recipe on the same shards, held-out NLL per level over budgets (steps and FLOPs), generation
time, and the demo report's pitch measures on samples of each.

    python benchmarks/pattern_quality_music.py   # the demo clips through the demo codec
    python benchmarks/pattern_quality_music.py --shards DIR --codec DIR   # any shards
    python benchmarks/pattern_quality_music.py --rows delay flat --steps 3300 --lr-schedule constant
    python benchmarks/pattern_quality_music.py --quick   # a smoke run

The recipe is the CPU demo's (configs/demo.yaml): a 4 x 128 decoder, a random tiny T5 with
10 % caption dropout, batches of 8 random 2 s crops, AdamW (0.9, 0.95, weight decay 0.1) at
2e-3 with 30 warm-up steps into a cosine over `--steps`, no EMA. Held out are the items the
demo holds out (12.5 % by key hash), read as every whole 2 s window. Training FLOPs per step
are counted by PyTorch as in `pattern_quality.py`. With the cosine schedule a curve's early
points are those of a run planned for `--steps`; `--lr-schedule constant` makes every point
what that budget gives with the learning rate held (the budget question).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pattern_quality import ROWS, cpu_attention_flops

from lightning_sdm.codecs import Codec, CodecConfig, load_codec
from lightning_sdm.conditioning import TextConditionerConfig
from lightning_sdm.data.shards import load_index, read_shard
from lightning_sdm.data.split import KeySplit
from lightning_sdm.data.tokenize import TokenizeConfig, tokenize
from lightning_sdm.demo.audio import ensure_demo_clips, kind_of_caption
from lightning_sdm.demo.run import Clip, generation_section
from lightning_sdm.machine import machine, machine_line
from lightning_sdm.models.lm import LMConfig
from lightning_sdm.models.sampling import SamplingConfig
from lightning_sdm.models.text_to_music import TextToMusicConfig, TextToMusicLM
from lightning_sdm.tasks.lm_task import masked_level_cross_entropy, masked_level_mean
from lightning_sdm.tasks.optim import OptimConfig, build_optimizer

DEMO_CODEC = Path(__file__).resolve().parents[1] / "assets" / "demo_codec"
# The demo's sample prompts (configs/demo.yaml): every instrument in both textures.
DEMO_PROMPTS = [
    "a lively flute melody in c major at 120 bpm",
    "a slow organ chord progression in a minor at 75 bpm",
    "a relaxed harp melody in g major at 100 bpm",
    "a fast strings chord progression in d minor at 150 bpm",
    "a relaxed organ melody in e minor at 100 bpm",
    "a lively harp chord progression in f major at 130 bpm",
    "a slow flute chord progression in bb major at 75 bpm",
    "a fast strings melody in a minor at 150 bpm",
]
# Beyond pattern_quality's rows: the positional scheme as a row of its own.
MUSIC_ROWS = [
    *ROWS,
    ("flat, frame positions", "flat", 1, None, {"token_positions": "frame"}),
    ("delay, frame positions", "delay", 1, None, {"token_positions": "frame"}),
]
DEFAULT_ROWS = ["delay", "flat", "stack", "stack_delay k=1", "stack_delay k=3", "depth"]


@dataclass
class Tokens:
    """Token grids and captions of one split, held in memory (shards of a few MB)."""

    keys: list[str]
    codes: list[np.ndarray]  # int16 [C, T_item]
    captions: list[str]


def demo_shards(folder: Path, codec: Path, clips: int, seconds: float) -> Path:
    """The demo's captioned clips tokenized by the demo codec (made once, then reused)."""
    audio, shards = folder / "audio", folder / "shards"
    ensure_demo_clips(audio, clips, seconds)
    tokenize(
        TokenizeConfig(
            input=str(audio), output=str(shards), codec=CodecConfig(pretrained=str(codec)),
            max_shard_items=16, progress=False,
        ),
        use_trainer=False,
    )  # fmt: skip
    return shards


def read_splits(shards: Path, val_fraction: float) -> dict[str, Tokens]:
    """Every item of the folder's shards, split by key hash as the DataModule splits."""
    index = load_index(shards)
    items = [s for entry in index["shards"] for s in read_shard(shards / entry["shard"])]
    if len(items) < 2:
        raise SystemExit(f"{shards} holds {len(items)} items; the benchmark needs at least 2")
    split = KeySplit.over([s["key"] for s in items], val_fraction)
    splits = {"train": Tokens([], [], []), "val": Tokens([], [], [])}
    for sample in items:
        side = splits["val" if split.is_val(sample["key"]) else "train"]
        side.keys.append(sample["key"])
        side.codes.append(sample["codes"].astype(np.int64))
        side.captions.append(sample["info"].get("caption") or "")
    return splits


def windows(tokens: Tokens, frames: int) -> tuple[torch.Tensor, list[str]]:
    """Every whole `frames`-long window of every item: the held-out set [N, C, frames]."""
    grids, captions = [], []
    for codes, caption in zip(tokens.codes, tokens.captions, strict=True):
        for start in range(0, codes.shape[-1] - frames + 1, frames):
            grids.append(torch.from_numpy(codes[:, start : start + frames]))
            captions.append(caption)
    if not grids:
        raise SystemExit(f"no held-out item has {frames} frames; lower --segment-seconds")
    return torch.stack(grids), captions


class Crops:
    """Random `frames`-long crops of random training items, from one seeded generator."""

    def __init__(self, tokens: Tokens, frames: int, seed: int) -> None:
        keep = [i for i, codes in enumerate(tokens.codes) if codes.shape[-1] >= frames]
        if not keep:
            raise SystemExit(f"no training item has {frames} frames; lower --segment-seconds")
        self.codes = [tokens.codes[i] for i in keep]
        self.captions = [tokens.captions[i] for i in keep]
        self.frames = frames
        self.generator = np.random.default_rng(seed)

    def batch(self, size: int) -> tuple[torch.Tensor, list[str]]:
        picks = self.generator.integers(0, len(self.codes), size)
        grids = []
        for i in picks:
            start = int(self.generator.integers(0, self.codes[i].shape[-1] - self.frames + 1))
            grids.append(torch.from_numpy(self.codes[i][:, start : start + self.frames]))
        return torch.stack(grids), [self.captions[i] for i in picks]


def lm_config(args, row: tuple) -> LMConfig:
    _, pattern, k, schedule, options = row
    return LMConfig(
        dim=args.dim, num_layers=args.layers, num_heads=4, ffn_dim=4 * args.dim,
        num_levels=args.levels, cardinality=args.cardinality, pattern=pattern, interleave=k,
        schedule=schedule, depth_dim=args.depth_dim, depth_layers=args.depth_layers,
        depth_heads=4, depth_ffn_dim=4 * args.depth_dim, **options,
    )  # fmt: skip


def new_model(args, row: tuple, seed: int) -> TextToMusicLM:
    torch.manual_seed(seed)
    text = TextConditionerConfig(pretrained="random", cfg_dropout=args.cfg_dropout)
    return TextToMusicLM(TextToMusicConfig(lm=lm_config(args, row), text=text))


def step_flops(args, row: tuple, captions: list[str]) -> float:
    """Forward + backward FLOPs of one training step, as PyTorch counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    model = new_model(args, row, seed=0).train()
    codes = torch.zeros(args.batch, args.levels, args.frames, dtype=torch.long)
    mask = torch.ones(args.batch, args.frames, dtype=torch.bool)
    with FlopCounterMode(display=False, custom_mapping=cpu_attention_flops()) as counter:
        loss, _ = masked_level_mean(
            model.token_losses(codes, (captions * args.batch)[: args.batch]), mask
        )
        loss.backward()
    return float(counter.get_total_flops())


@torch.no_grad()
def heldout_nll(model: TextToMusicLM, held: torch.Tensor, captions: list[str]) -> list[float]:
    """Held-out cross-entropy per level (nats/token), every window weighted alike."""
    model.eval()
    sums = torch.zeros(held.shape[1], dtype=torch.float64)
    for start in range(0, len(held), 16):
        codes = held[start : start + 16]
        logits = model(codes, captions[start : start + 16])
        mask = torch.ones(codes.shape[0], codes.shape[-1], dtype=torch.bool)
        sums += masked_level_cross_entropy(logits, codes, mask)[1].double() * len(codes)
    model.train()
    return (sums / len(held)).tolist()


def budgets(steps: int, every: int) -> list[int]:
    marks = list(range(every, steps + 1, every)) if every > 0 else []
    return marks if marks and marks[-1] == steps else [*marks, steps]


def train_row(args, row, data: dict, seed: int) -> tuple[TextToMusicLM, list[dict]]:
    model = new_model(args, row, seed)
    optim = OptimConfig(lr=args.lr, warmup_steps=args.warmup)
    total = args.steps if args.lr_schedule == "cosine" else 10**12  # constant: no decay
    optimizer, schedule = build_optimizer(model, optim, total)
    crops = Crops(data["train"], args.frames, seed)
    mask = torch.ones(args.batch, args.frames, dtype=torch.bool)
    held, held_captions = data["held"]
    marks, curve = budgets(args.steps, args.eval_every), []
    model.train()
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        codes, captions = crops.batch(args.batch)
        loss, _ = masked_level_mean(model.token_losses(codes, captions), mask)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step in marks:
            levels = heldout_nll(model, held, held_captions)
            curve.append(
                {"step": step, "flops": step * data["flops"][row[0]], "nll": float(np.mean(levels)),
                 "nll_levels": levels, "train_seconds": time.perf_counter() - started}
            )  # fmt: skip
            print(
                f"  {row[0]} seed {seed} step {step}: held-out {curve[-1]['nll']:.4f} "
                f"(levels {' '.join(f'{v:.3f}' for v in levels)})",
                flush=True,
            )
    return model, curve


def decode_clips(codec: Codec, codes: torch.Tensor, captions: list[str], names: list[str]):
    with torch.no_grad():
        wavs = codec.decode(codes.to(torch.long))
    return [
        Clip(name, caption, wav.reshape(-1).float())
        for name, caption, wav in zip(names, captions, wavs, strict=True)
    ]


def samples_section(args, model, codec: Codec, data: dict, seed: int) -> dict:
    """Generation time of the prompts' batch, and the demo report's pitch measures of its
    samples against the training items (through the same codec)."""
    prompts = data["prompts"]
    sampling = SamplingConfig(temperature=0.5, top_k=16, cfg_scale=args.cfg_scale)
    model.eval()
    started = time.perf_counter()
    codes = model.generate(prompts, args.frames, sampling=sampling, seed=seed)
    seconds = time.perf_counter() - started
    samples = decode_clips(codec, codes, prompts, [f"sample{i}" for i in range(len(prompts))])
    reference, captions = data["reference"]
    training = decode_clips(codec, reference, captions, [f"train{i}" for i in range(len(captions))])
    measures = generation_section(codec, samples, training, seed=seed)
    clarity = measures["pitch_clarity"]
    return {
        "gen_seconds": seconds,
        "gen_rtf": seconds / (args.frames / codec.frame_rate),
        "decoding_steps": model.lm.decoding_steps(args.frames),
        "pitch_clarity": clarity["generated"],
        "pitch_clarity_training": clarity["training_clips_of_the_prompts_kinds"],
        "pitch_clarity_random": clarity["random_output"],
        "prompt_distance_db": measures["prompt_distance"]["between_prompts_samples_db"],
    }


def prepare(args) -> tuple[dict, Codec]:
    shards = args.shards or demo_shards(
        args.out / "demo", args.codec, args.clips, args.clip_seconds
    )
    if not (Path(shards) / "index.json").is_file():
        raise SystemExit(
            f"{shards} holds no index.json: not a folder of `lightning-sdm tokenize` shards"
        )
    codec = load_codec(CodecConfig(pretrained=str(args.codec)))
    index = load_index(shards)
    args.levels, args.cardinality = index["codec"]["num_codebooks"], index["codec"]["cardinality"]
    if args.cardinality != codec.cardinality:
        raise SystemExit(f"{shards} was made by another codec than {args.codec} (cardinality)")
    args.frames = round(args.segment_seconds * codec.frame_rate)
    splits = read_splits(shards, args.val_fraction)
    held = windows(splits["val"], args.frames)
    # the demo's prompts for the demo's clips (wherever their shards are), else held-out ones
    demo = all(kind_of_caption(caption) for caption in held[1])
    prompts = DEMO_PROMPTS if demo else sorted(set(held[1]))[:8]
    if args.quick:
        prompts = prompts[:2]
    reference = Crops(splits["train"], args.frames, seed=1234).batch(args.reference_clips)
    print(
        f"{shards}: {len(splits['train'].keys)} training items, {len(splits['val'].keys)} "
        f"held out ({len(held[0])} windows of {args.frames} frames), C = {args.levels} x "
        f"{args.cardinality}",
        flush=True,
    )
    return {"train": splits["train"], "held": held, "prompts": prompts, "reference": reference,
            "shards": str(shards)}, codec  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, help="a folder of shards (default: the demo's)")
    parser.add_argument("--codec", type=Path, default=DEMO_CODEC, help="the shards' codec")
    parser.add_argument("--clips", type=int, default=128, help="demo clips to make")
    parser.add_argument("--clip-seconds", type=float, default=6.0)
    parser.add_argument("--val-fraction", type=float, default=0.125)
    parser.add_argument("--segment-seconds", type=float, default=2.0)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--depth-dim", type=int, default=64, help="the depth decoder's")
    parser.add_argument("--depth-layers", type=int, default=1, help="the depth decoder's")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1100)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine")
    parser.add_argument("--cfg-dropout", type=float, default=0.1)
    parser.add_argument("--cfg-scale", type=float, default=3.0)
    parser.add_argument("--reference-clips", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from here on")
    parser.add_argument("--rows", nargs="*", default=DEFAULT_ROWS, help="labels of ROWS")
    parser.add_argument("--quick", action="store_true", help="a smoke run (tests)")
    parser.add_argument("--out", type=Path, default=Path("results/pattern_quality_music"))
    args = parser.parse_args()
    known = {row[0]: row for row in MUSIC_ROWS}
    unknown = [label for label in args.rows if label not in known]
    if unknown:
        parser.error(f"--rows takes labels among: {', '.join(known)}")
    if args.quick:
        args.clips, args.clip_seconds, args.steps, args.eval_every, args.seeds = 16, 3.0, 4, 2, 1
        args.dim, args.layers, args.depth_dim, args.reference_clips = 32, 1, 16, 4
    args.out.mkdir(parents=True, exist_ok=True)
    data, codec = prepare(args)
    rows = [known[label] for label in args.rows]
    data["flops"] = {row[0]: step_flops(args, row, data["held"][1]) for row in rows}
    results = []
    for row in rows:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            model, curve = train_row(args, row, data, seed)
            results.append(
                {"label": row[0], "seed": seed, "curve": curve,
                 "params": sum(p.numel() for p in model.lm.parameters()),
                 "step_flops": data["flops"][row[0]],
                 **samples_section(args, model, codec, data, seed)}
            )  # fmt: skip
    setup = (
        f"{data['shards']}; {args.layers} layers x {args.dim}, batch {args.batch} x "
        f"{args.frames} frames, lr {args.lr} ({args.lr_schedule}), {args.steps} steps, "
        f"{args.seeds} seeds; {machine_line()}"
    )
    table = markdown(results, setup)
    print("\n" + table)
    (args.out / "table.md").write_text(table + "\n", encoding="utf-8")
    payload = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
               "rows": results}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    plot(results, args.out / "curves.png", setup)
    print(f"wrote {args.out / 'results.json'}, {args.out / 'table.md'}, {args.out / 'curves.png'}")


def _mean_sd(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.3f}{spread}"


def markdown(results: list[dict], setup: str) -> str:
    labels = list(dict.fromkeys(r["label"] for r in results))
    marks = [point["step"] for point in results[0]["curve"]]
    shown = sorted({marks[0], marks[len(marks) // 4], marks[len(marks) // 2], marks[-1]})
    levels = len(results[0]["curve"][-1]["nll_levels"])
    lines = [
        f"Held-out NLL (nats/token, mean ± sd over seeds) on music tokens: {setup}",
        "",
        "| decoder | params | GFLOPs/step | "
        + " | ".join(f"NLL @ {s}" for s in shown)
        + " | "
        + " | ".join(f"level {i} @ {marks[-1]}" for i in range(levels))
        + " | steps | gen s | pitch clarity (training, random) |",
        "|---|---|---|" + "---|" * (len(shown) + levels) + "---|---|---|",
    ]
    for label in labels:
        rows = [r for r in results if r["label"] == label]
        at = {p["step"]: i for i, p in enumerate(rows[0]["curve"])}
        cells = [_mean_sd([r["curve"][at[s]]["nll"] for r in rows]) for s in shown]
        cells += [_mean_sd([r["curve"][-1]["nll_levels"][i] for r in rows]) for i in range(levels)]
        first = rows[0]
        clarity = statistics.mean(r["pitch_clarity"] for r in rows)
        lines.append(
            f"| {label} | {first['params']:,} | {first['step_flops'] / 1e9:.2f} | "
            + " | ".join(cells)
            + f" | {first['decoding_steps']} | "
            f"{statistics.mean(r['gen_seconds'] for r in rows):.2f}"
            f" | {clarity:.2f} ({first['pitch_clarity_training']:.2f}, "
            f"{first['pitch_clarity_random']:.2f}) |"
        )
    return "\n".join(lines)


def plot(results: list[dict], path: Path, setup: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for label in dict.fromkeys(r["label"] for r in results):
        rows = [r for r in results if r["label"] == label]
        steps = [p["step"] for p in rows[0]["curve"]]
        flops = [p["flops"] for p in rows[0]["curve"]]
        nll = np.mean([[p["nll"] for p in r["curve"]] for r in rows], axis=0)
        level0 = np.mean([[p["nll_levels"][0] for p in r["curve"]] for r in rows], axis=0)
        (line,) = axes[0].plot(steps, nll, label=label)
        axes[1].plot(np.asarray(flops) / 1e12, nll, color=line.get_color())
        axes[2].plot(steps, level0, color=line.get_color())
    axes[0].set_xlabel("training steps")
    axes[1].set_xlabel("training TFLOPs (forward + backward)")
    axes[2].set_xlabel("training steps")
    axes[0].set_ylabel("held-out NLL, all levels (nats/token)")
    axes[1].set_ylabel("held-out NLL, all levels (nats/token)")
    axes[2].set_ylabel("held-out NLL, level 0 (nats/token)")
    axes[0].legend(fontsize=8)
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.suptitle(setup[:160], fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
