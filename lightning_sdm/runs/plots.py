"""Training curves from a run's metrics.csv, readable without a network or a W&B account."""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt
from matplotlib import font_manager

from lightning_sdm.errors import MissingFile, UserInputError
from lightning_sdm.runs.tracking import METRICS_FILE
from lightning_sdm.text_files import read_user_text

Series = dict[str, list[tuple[int, float]]]


def read_metrics(csv_path: str | Path) -> Series:
    """Every numeric column as (step, value) pairs, the last value kept where a resumed run
    logged a step twice."""
    by_name: dict[str, dict[int, float]] = {}
    with io.StringIO(read_user_text(csv_path), newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is not None and "step" not in reader.fieldnames:
            raise UserInputError(
                f"{csv_path} has no step column: not the metrics.csv of a `lightning-sdm fit` run"
            )
        for row in reader:
            if not row.get("step"):
                continue
            step = int(float(row["step"]))
            for name, text in row.items():
                if name in ("step", "epoch") or not text:
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                if math.isfinite(value):
                    by_name.setdefault(name, {})[step] = value
    return {name: sorted(values.items()) for name, values in by_name.items()}


def steps_done(series: Series) -> Series:
    """The series by optimizer steps done, as the run's log, checkpoint names and sample
    folders count them. Lightning's loggers record the index of the batch just run, so a
    validation after 980 steps is logged at 979 and the 5th batch's loss at 4."""
    return {name: [(step + 1, value) for step, value in pairs] for name, pairs in series.items()}


def _smooth(values: list[float | None], weight: float = 0.8) -> list[float]:
    """An exponential moving average; a None (a point left out) keeps the last value."""
    first = next((value for value in values if value is not None), 0.0)
    smoothed, last = [], first
    for value in values:
        if value is not None:
            last = weight * last + (1 - weight) * value
        smoothed.append(last)
    return smoothed


def spike_cut(values: list[float]) -> float | None:
    """Where to cut the loss axis so that a few spikes (a diverging step, a bad batch) do
    not flatten the curve to a line: above the 98th percentile by its spread from the
    lowest value, when some points lie beyond that; None when none do."""
    if len(values) < 10:
        return None
    ordered = sorted(values)
    high = ordered[int(0.98 * (len(ordered) - 1))]
    top = high + (high - ordered[0])
    return top if ordered[-1] > top else None


def _lone_point(steps: tuple[int, ...]) -> str | None:
    """A marker for a series of one point (early in a run), which a line alone leaves blank."""
    return "o" if len(steps) == 1 else None


def plot_metrics(csv_path: str | Path, png_path: str | Path | None = None) -> Path:
    """Loss (train, smoothed, and validation) over steps, and the learning rate beneath."""
    csv_path = Path(csv_path)
    if csv_path.is_dir():
        csv_path = csv_path / METRICS_FILE
    if not csv_path.is_file():
        raise MissingFile(f"{csv_path} not found: is this a run folder of `lightning-sdm fit`?")
    png_path = Path(png_path) if png_path else csv_path.with_suffix(".png")
    series = steps_done(read_metrics(csv_path))
    train = next((series[n] for n in ("train/ce", "train/loss") if n in series), [])
    val = next((series[n] for n in ("val/ce", "val/loss") if n in series), [])
    lr = series.get("train/lr", [])
    figure, (loss_axis, lr_axis) = plt.subplots(
        2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    cut = spike_cut([value for _, value in train + val])
    if train:
        steps, values = zip(*train, strict=True)
        loss_axis.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=1)
        # The cut points stay in the raw line; smoothed in, one spike lifted ~15 steps.
        kept = [None if cut is not None and value > cut else value for value in values]
        loss_axis.plot(
            steps, _smooth(kept), color="tab:blue", label="train (smoothed)",
            marker=_lone_point(steps),
        )  # fmt: skip
    if val:
        steps, values = zip(*val, strict=True)
        loss_axis.plot(steps, values, "o-", color="tab:orange", label="validation")
        best_step, best = min(val, key=lambda sv: sv[1])
        # Right of a point in the left half, left of one in the right half: a best at the
        # end of the run (the usual place) stays inside the axes.
        last_step = max(step for step, _ in train + val)
        right_half = best_step > last_step / 2
        loss_axis.annotate(
            f"best {best:.3f} @ {best_step}", (best_step, best), fontsize=8,
            xytext=(-4 if right_half else 4, 6), textcoords="offset points",
            ha="right" if right_half else "left",
        )  # fmt: skip
    if cut is not None:
        above = [value for _, value in train + val if value > cut]
        bottom = min(value for _, value in train + val)
        loss_axis.set_ylim(bottom - 0.05 * (cut - bottom), cut)
        loss_axis.text(
            0.99, 0.98, f"{len(above)} points above the top (up to {max(above):.4g})",
            ha="right", va="top", fontsize=8, transform=loss_axis.transAxes,
        )  # fmt: skip
    loss_axis.set_ylabel("cross-entropy (nats / token)")
    run_name = "/".join(csv_path.resolve().parent.parts[-2:])  # e.g. demo/version_0
    loss_axis.set_title(f"{run_name}: loss")
    loss_axis.grid(alpha=0.3)
    if train or val:
        loss_axis.legend()
    else:
        loss_axis.text(0.5, 0.5, "no loss logged yet", ha="center", transform=loss_axis.transAxes)
    if lr:
        steps, values = zip(*lr, strict=True)
        lr_axis.plot(steps, values, color="tab:green", marker=_lone_point(steps))
    lr_axis.set_ylabel("learning rate")
    lr_axis.set_xlabel("step")
    lr_axis.grid(alpha=0.3)
    figure.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return png_path


# Families that draw what DejaVu Sans (matplotlib's own) lacks: CJK, Hangul, other scripts
# and monochrome emoji, under the names Linux, macOS and Windows install them by. A prompt's
# title falls back through those present (colour-bitmap emoji fonts do not draw in Agg).
TITLE_FALLBACKS = (
    "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR",
    "Noto Sans JP", "Noto Sans SC", "Noto Sans TC", "Noto Sans KR", "Source Han Sans",
    "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "Hiragino Sans",
    "PingFang SC", "Apple SD Gothic Neo", "Microsoft YaHei", "Yu Gothic", "Malgun Gothic",
    "Noto Sans Devanagari", "Noto Sans Arabic", "Noto Sans Hebrew", "Noto Sans Thai",
    "Noto Emoji", "Segoe UI Emoji", "Segoe UI Symbol",
)  # fmt: skip
MISSING_GLYPH = r"Glyph \d+ .* missing from font"


@contextlib.contextmanager
def _quiet_font_matching() -> Iterator[None]:
    """A fallback font without a "normal" weight (WenQuanYi Zen Hei has only medium) is
    matched to its nearest one with a log line in the middle of a run's output."""
    logger = logging.getLogger("matplotlib.font_manager")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@functools.cache
def title_families() -> list[str]:
    """DejaVu Sans, then the installed fallbacks."""
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *(name for name in TITLE_FALLBACKS if name in installed)]


def plot_spectrogram(
    png_path: str | Path, decibels: Any, sample_rate: int, hop: int, title: str = ""
) -> Path:
    """decibels [bins, frames] (bins from 0 Hz to Nyquist) drawn over 80 dB below the peak."""
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    frames = decibels.shape[1]
    top = float(decibels.max())
    figure, axis = plt.subplots(figsize=(8, 3.6), dpi=100)
    image = axis.imshow(
        decibels,
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=top - 80,
        vmax=top,
        extent=(0.0, frames * hop / sample_rate, 0.0, sample_rate / 2),
    )
    axis.set_xlabel("time (s)")
    axis.set_ylabel("frequency (Hz)")
    shown = title if len(title) <= 100 else title[:97] + "..."  # a huge prompt: one line
    axis.set_title(shown, fontsize=9, fontfamily=title_families())
    figure.colorbar(image, ax=axis, label="magnitude (dB)")
    with warnings.catch_warnings(), _quiet_font_matching():
        # A character no installed font has is drawn as a box; a warning per character
        # and prompt would bury the run's output (the prompt is whole in the JSON).
        warnings.filterwarnings("ignore", message=MISSING_GLYPH)
        figure.tight_layout()
        figure.savefig(png_path)
    plt.close(figure)
    return png_path
