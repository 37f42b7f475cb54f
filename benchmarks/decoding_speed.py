"""Generation speed of every pattern, measured side by side in one run.

    python benchmarks/decoding_speed.py [--timesteps 500 --dim 512 --layers 6 --batch 2]

Prints decoding steps, cache slots, wall time, real-time factor and speed relative to
flat and delay. The paper's claim to compare with: stack-delay about as fast as delay and
~4x faster than flat.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lightning_sdm.conditioning import TextConditionerConfig
from lightning_sdm.generation.source import DEFAULT_FRAME_RATE as FRAME_RATE_HZ
from lightning_sdm.models.lm import LMConfig
from lightning_sdm.models.sampling import SamplingConfig
from lightning_sdm.models.text_to_music import TextToMusicConfig, TextToMusicLM

PATTERNS = [("delay", 1), ("flat", 1), ("stack", 1), ("stack_delay", 1), ("stack_delay", 3)]


def timed_generate(
    model: TextToMusicLM, captions: list[str], frames: int, sampling: SamplingConfig, seed: int
) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    codes = model.generate(captions, frames, sampling=sampling, seed=seed)
    return codes, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=500)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    captions = ["benchmark caption"] * args.batch
    rows = []
    for name, k in PATTERNS:
        lm = LMConfig(
            dim=args.dim, num_layers=args.layers, num_heads=args.heads, ffn_dim=4 * args.dim,
            pattern=name, interleave=k,
        )  # fmt: skip
        torch.manual_seed(0)
        model = TextToMusicLM(TextToMusicConfig(lm=lm, text=TextConditionerConfig())).eval()
        timed_generate(model, captions, 8, SamplingConfig(), 0)  # warm-up
        times = [
            timed_generate(model, captions, args.timesteps, SamplingConfig(), seed)[1]
            for seed in range(args.repeats)
        ]
        layout = model.lm.layout(args.timesteps)
        rows.append(
            (f"{name} k={k}", layout.num_decoding_steps, layout.num_slots, statistics.median(times))
        )
    flat = next(seconds for label, *_, seconds in rows if label.startswith("flat"))
    delay = next(seconds for label, *_, seconds in rows if label.startswith("delay"))
    audio = args.timesteps / FRAME_RATE_HZ
    print(
        f"T={args.timesteps} ({audio:.0f} s), batch {args.batch} (+{args.batch} CFG rows), "
        f"dim {args.dim}, {args.layers} layers, {torch.get_num_threads()} threads, CPU"
    )
    header = (
        f"{'pattern':<16}{'steps':>7}{'slots':>7}{'seconds':>9}{'RTF':>7}"
        f"{'vs flat':>9}{'vs delay':>9}"
    )
    print(header)
    print("-" * len(header))
    for label, steps, slots, seconds in rows:
        print(
            f"{label:<16}{steps:>7}{slots:>7}{seconds:>9.2f}{seconds / audio:>7.2f}"
            f"{flat / seconds:>8.2f}x{delay / seconds:>8.2f}x"
        )


if __name__ == "__main__":
    main()
