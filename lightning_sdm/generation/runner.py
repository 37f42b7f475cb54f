"""Generate a list of requests into a folder: wavs, a JSON sidecar per wav, the model's
output (codes or latents), a summary. The same for both model families."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lightning_sdm.atomic import write_bytes_naming
from lightning_sdm.audio_io import slug, spectrogram_png, write_wav
from lightning_sdm.data.audio import AudioRejected, load_mono
from lightning_sdm.errors import UserInputError
from lightning_sdm.families import family_of
from lightning_sdm.generation.family_generation import DecodingChoices, FamilyGeneration
from lightning_sdm.generation.requests import GenerationRequest
from lightning_sdm.generation.source import GenerationSource
from lightning_sdm.generation.windows import WindowPlan, generate_in_windows
from lightning_sdm.models.lm import INFERENCE_PRECISIONS
from lightning_sdm.nn.packed_linear import PackChoice

SUMMARY_FILE = "summary.json"


class LongerThanTrainedWarning(UserWarning):
    """A window longer than the crops seen in training: positions the model never saw."""


@dataclass(frozen=True)
class GenerationOptions:
    sampling: Any = None  # the model family's sampling config; None: its defaults
    cfg_scale: float | None = None  # the guidance scale, over the sampling config's
    batch_size: int = 8
    window_seconds: float | None = None  # default: the training crop length, when known
    extend_stride: float | None = None  # default: 60 % of the window (MusicGen: 18 of 30 s)
    audio_prompt: str | None = None
    progress: bool = True
    precision: str = "fp32"  # the LM's weights while decoding: "fp32" or "bf16"
    # CPU: the LM multiplies through weights packed for oneDNN (True), F.linear (False) or
    # whichever is faster on this machine, measured at the first decode ("auto").
    pack_weights: PackChoice = "auto"
    spectrograms: bool = False  # a PNG beside each wav

    def __post_init__(self) -> None:
        if self.precision not in INFERENCE_PRECISIONS:
            raise UserInputError(
                f"--precision must be one of {', '.join(INFERENCE_PRECISIONS)}, "
                f"got {self.precision!r}"
            )
        if self.batch_size < 1:
            raise UserInputError(f"--batch_size must be at least 1, got {self.batch_size}")
        for name in ("window_seconds", "extend_stride"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UserInputError(f"--{name} must be positive, got {value}")


@dataclass
class GenerationSummary:
    output: Path
    rows: list[dict[str, Any]]
    wall_s: float
    audio_s: float
    wrote_audio: bool
    output_name: str = "codes"  # what the model made: "codes" or "latents"
    steps_name: str = "decoding_steps"

    @property
    def real_time_factor(self) -> float:
        return self.wall_s / self.audio_s if self.audio_s else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "wall_s": self.wall_s,
            "audio_s": self.audio_s,
            "rtf": self.real_time_factor,
            "files": self.rows,
        }

    def __str__(self) -> str:
        # Names whole: a user looks for the file the table names.
        width = max([len("file"), *(len(row["name"]) for row in self.rows)])
        lines = [f"{'file':<{width}} {'s':>6} {'seed':>8} {'steps':>6} {'windows':>7}"]
        for row in self.rows:
            lines.append(
                f"{row['name']:<{width}} {row['seconds']:>6.2f} {row['seed']:>8} "
                f"{row[self.steps_name]:>6} {len(row['windows']):>7}"
            )
        audio = (
            "wav + json per prompt" if self.wrote_audio else f"{self.output_name} only (no codec)"
        )
        seconds = f"{self.audio_s:.{1 if self.audio_s >= 1 else 2}f}"  # 0.02 s, not 0.0 s
        lines.append(
            f"wrote {len(self.rows)} ({audio}) to {self.output}: {seconds} s of audio "
            f"in {self.wall_s:.2f} s (RTF {self.real_time_factor:.2f}); "
            f"summary in {self.output / SUMMARY_FILE}"
        )
        if not self.wrote_audio:  # what a user who expected wavs needs next
            lines.append(
                "no audio: the model's folder holds no codec; rerun with --codec_dir DIR "
                "to decode, or export the model with --codec_dir so that it keeps one"
            )
        return "\n".join(lines)


def window_plan(source: GenerationSource, options: GenerationOptions, frames: int) -> WindowPlan:
    """The window: given, else the training crop length, else the whole request. A request
    longer than its window continues window by window, so there the window must hold at
    least one frame of context and one new one, and the stride must be shorter than it."""
    rate = source.frame_rate
    if options.window_seconds is not None:
        window = round(options.window_seconds * rate)
        if source.trained_segment_frames and window > source.trained_segment_frames:
            warnings.warn(
                f"a {options.window_seconds:g} s window is longer than the "
                f"{source.trained_segment_frames / rate:g} s crops this model was trained on: "
                "what comes after is untested",
                LongerThanTrainedWarning,
                stacklevel=2,
            )
    else:
        window = source.trained_segment_frames or frames
    if frames <= window or frames == 1:
        return WindowPlan(window=frames + 1, stride=frames)  # one call: nothing to continue
    if window < 2:
        raise UserInputError(
            f"--window_seconds {options.window_seconds:g} is shorter than two codec frames "
            f"({2 / rate:g} s at {rate:g} Hz): each window continues from at least one frame"
        )
    if options.extend_stride is None:
        return WindowPlan.continuing(window)
    stride = round(options.extend_stride * rate)
    if not 0 < stride < window:
        raise UserInputError(
            f"--extend_stride {options.extend_stride:g} s must be at least one codec frame "
            f"({1 / rate:g} s) and shorter than the {window / rate:g} s window: the rest of "
            "each window is the next one's context"
        )
    return WindowPlan(window=window, stride=stride)


def read_audio_prompt(
    path: str, source: GenerationSource, family: FamilyGeneration
) -> torch.Tensor:
    """The family's codes or latents [1, C, Tp] of an audio file, resampled to the codec's
    rate (and said so)."""
    if source.codec is None:
        raise UserInputError("--audio_prompt needs a codec: pass --codec_dir")
    file = Path(path)
    rate = source.codec.sample_rate
    try:
        audio = load_mono(file, rate)
    except AudioRejected as error:
        raise UserInputError(f"audio prompt {file}: {error}") from error
    frame_seconds = 1 / source.frame_rate
    if audio.seconds(rate) < frame_seconds:  # the codec would pad it into a frame of its own
        raise UserInputError(
            f"audio prompt {file} is {1000 * audio.seconds(rate):.1f} ms, shorter than one "
            f"codec frame ({1000 * frame_seconds:.1f} ms): nothing to continue"
        )
    if audio.source_sample_rate != rate or audio.source_channels != 1:
        channels = "mono" if audio.source_channels == 1 else f"{audio.source_channels} channels"
        print(
            f"audio prompt {file}: {audio.source_sample_rate} Hz {channels}, "
            f"resampled to the codec's {rate} Hz mono"
        )
    wav = torch.from_numpy(audio.samples)[None].to(source.codec.device)
    return family.encode_prompt(source.codec, wav)


def family_steps(model: Any, options: GenerationOptions) -> FamilyGeneration:
    """The model's family's generation with the options' sampling config (which must be
    that family's) and guidance scale."""
    family = family_of(model)
    sampling = options.sampling if options.sampling is not None else family.sampling_config()
    if not isinstance(sampling, family.sampling_config):
        raise UserInputError(
            f"{type(sampling).__name__} is not how {family.description} samples: it takes "
            f"{family.sampling_config.__name__}"
        )
    if options.cfg_scale is not None:
        given = {**dataclasses.asdict(sampling), "cfg_scale": options.cfg_scale}
        sampling = family.sampling_from(given)
    decoding = DecodingChoices(options.precision, options.pack_weights)
    return family.generation(model, sampling, decoding)


def generate_requests(
    source: GenerationSource,
    requests: Sequence[GenerationRequest],
    options: GenerationOptions,
    output_dir: str | Path,
    on_progress: Callable[[int, int], None] | None = None,
) -> GenerationSummary:
    """`on_progress(steps done, steps in all)` after every model step (for a web page)."""
    output = Path(output_dir)
    family = family_steps(source.model, options)
    output.mkdir(parents=True, exist_ok=True)
    prompt = (
        read_audio_prompt(options.audio_prompt, source, family) if options.audio_prompt else None
    )
    check_sizes(source, requests, options.batch_size)
    batches = _batches(source, requests, options.batch_size)
    plans = {frames: window_plan(source, options, frames) for frames, _ in batches}
    prompt_frames = 0 if prompt is None else prompt.shape[-1]
    for frames, batch in batches:
        if prompt_frames >= frames:
            raise UserInputError(
                f"the audio prompt is {prompt_frames / source.frame_rate:.2f} s, not shorter "
                f"than the {batch[0].seconds:g} s asked for {batch[0].prompt!r}"
            )
    total_steps = sum(
        _steps(family, plans[frames].lengths(frames, prompt_frames)) for frames, _ in batches
    )
    width = max(2, len(str(len(requests) - 1)))
    rows: list[dict[str, Any]] = []
    outputs: dict[int, torch.Tensor] = {}
    started = time.perf_counter()
    unit = family.steps_name.replace("_", " ")
    with tqdm(total=total_steps, desc=unit, unit="step", disable=not options.progress) as bar:
        done = 0  # a disabled bar does not count

        def step_done() -> None:
            nonlocal done
            done += 1
            bar.update(1)
            if on_progress is not None:
                on_progress(done, total_steps)

        for frames, batch in batches:
            plan = plans[frames]
            batch_start = time.perf_counter()
            made = _generate_batch(family, batch, frames, plan, prompt, step_done)
            wavs = family.decode(source.codec, made) if source.codec is not None else None
            wall = time.perf_counter() - batch_start
            calls = plan.lengths(frames, prompt_frames)
            for row, request in enumerate(batch):
                outputs[request.index] = made[row].cpu()
                name = f"{request.index:0{width}d}-{slug(request.prompt)}"
                if wavs is not None:
                    rate = source.codec.sample_rate
                    write_wav(output / f"{name}.wav", wavs[row], rate)
                    if options.spectrograms:
                        spectrogram_png(output / f"{name}.png", wavs[row], rate, request.prompt)
                sidecar = _sidecar(
                    source, family, request, options, frames, calls, wall, len(batch)
                )
                sidecar["name"] = name
                sidecar_text = json.dumps(sidecar, indent=2, ensure_ascii=False)
                write_bytes_naming(output / f"{name}.json", sidecar_text.encode("utf-8"))
                rows.append(sidecar)
    wall = time.perf_counter() - started
    rows.sort(key=lambda row: row["index"])
    _save_outputs(output, family, requests, outputs)
    summary = GenerationSummary(
        output,
        rows,
        wall,
        sum(r.seconds for r in requests),
        source.codec is not None,
        family.output_name,
        family.steps_name,
    )
    summary_text = json.dumps(summary.to_dict(), indent=2, ensure_ascii=False)
    write_bytes_naming(output / SUMMARY_FILE, summary_text.encode("utf-8"))
    return summary


# A generous bound on what one frame of a request keeps until the end (codes or latents,
# their copies on the way to disk) besides its audio samples, in bytes.
KEPT_BYTES_PER_FRAME = 1024
AUDIO_COPIES = 3  # the wav, its resampled or clipped copy, the spectrogram's input


def memory_bytes() -> int | None:
    """This machine's physical memory (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_sizes(
    source: GenerationSource, requests: Sequence[GenerationRequest], batch_size: int
) -> None:
    """Refuse, before any work, a request shorter than one codec frame or outputs that
    cannot fit in this machine's memory (measured here, not assumed), naming the limit."""
    rate = source.frame_rate
    for request in requests:
        if round(request.seconds * rate) < 1:
            raise UserInputError(
                f"{request.seconds:g} s for {request.prompt[:40]!r} is under one codec frame "
                f"({1 / rate:g} s at {rate:g} Hz)"
            )
    available = memory_bytes()
    if available is None:
        return
    samples_per_frame = source.codec.sample_rate / rate if source.codec is not None else 0
    longest = max(requests, key=lambda r: r.seconds)
    rows = min(batch_size, len(requests))
    per_second = rate * (KEPT_BYTES_PER_FRAME + AUDIO_COPIES * 4 * samples_per_frame * rows)
    needed = sum(r.seconds for r in requests) * rate * KEPT_BYTES_PER_FRAME + (
        longest.seconds * rate * AUDIO_COPIES * 4 * samples_per_frame * rows
    )
    budget = available // 2  # the model, the codec and the rest of the machine need the other
    if needed > budget:
        limit = budget / per_second
        raise UserInputError(
            f"{longest.seconds:g} s for {longest.prompt[:40]!r} needs about "
            f"{needed / 2**30:.1f} GiB for its outputs; this machine has "
            f"{available / 2**30:.1f} GiB of memory: at most about {limit:,.0f} s per prompt "
            f"here with {rows} decoded together"
        )


def _batches(
    source: GenerationSource, requests: Sequence[GenerationRequest], batch_size: int
) -> list[tuple[int, list[GenerationRequest]]]:
    """Requests of the same length together (one grid per batch), at most batch_size each."""
    by_frames: dict[int, list[GenerationRequest]] = {}
    for request in requests:
        frames = round(request.seconds * source.frame_rate)  # check_sizes: at least 1
        by_frames.setdefault(frames, []).append(request)
    return [
        (frames, group[start : start + batch_size])
        for frames, group in by_frames.items()
        for start in range(0, len(group), batch_size)
    ]


def _generate_batch(
    family: FamilyGeneration,
    batch: list[GenerationRequest],
    frames: int,
    plan: WindowPlan,
    prompt: torch.Tensor | None,
    on_step: Callable[[], None],
) -> torch.Tensor:
    window = family.window_generator(
        [request.prompt for request in batch], [request.seed for request in batch], on_step
    )
    batch_prompt = None if prompt is None else prompt.expand(len(batch), -1, -1)
    return generate_in_windows(window, frames, plan, batch_prompt)


def _steps(family: FamilyGeneration, calls: list[tuple[int, int]]) -> int:
    return sum(family.steps(length) for _, length in calls)


def _sidecar(
    source: GenerationSource,
    family: FamilyGeneration,
    request: GenerationRequest,
    options: GenerationOptions,
    frames: int,
    calls: list[tuple[int, int]],
    batch_wall: float,
    batch_rows: int,
) -> dict[str, Any]:
    return {
        "index": request.index,
        "prompt": request.prompt,
        "seed": request.seed,
        "seconds": frames / source.frame_rate,
        "frames": frames,
        **family.describe(),
        "precision": options.precision,
        "pack_weights": options.pack_weights,
        "model": source.identity,
        "audio_prompt": options.audio_prompt,
        "windows": [{"prompt_frames": given, "frames": length} for given, length in calls],
        family.steps_name: _steps(family, calls),
        "batch_rows": batch_rows,
        "batch_wall_s": batch_wall,
        # Wall time over the audio the batch produced (below 1: faster than real time).
        "rtf": batch_wall / (batch_rows * frames / source.frame_rate),
    }


def _save_outputs(
    output: Path,
    family: FamilyGeneration,
    requests: Sequence[GenerationRequest],
    made: dict[int, torch.Tensor],
) -> None:
    """codes.pt (int16 codes) or latents.pt, in request order, with captions and seeds."""
    ordered = [family.stored(made[request.index]) for request in requests]
    same_length = len({c.shape[-1] for c in ordered}) == 1
    saved = io.BytesIO()  # torch reports a full disk as "unexpected pos ...", naming nothing
    torch.save(
        {
            family.output_name: torch.stack(ordered) if same_length else ordered,
            "captions": [request.prompt for request in requests],
            "seeds": [request.seed for request in requests],
        },
        saved,
    )
    write_bytes_naming(output / f"{family.output_name}.pt", saved.getvalue())
