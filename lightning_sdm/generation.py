"""Generation from a saved model directory, with timing the user can compare across patterns."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from lightning_sdm.audio_io import slug, write_wav
from lightning_sdm.codecs import CodecConfig, EncodecCodec
from lightning_sdm.export import CODEC_DIR, trained_segment_frames
from lightning_sdm.models.sampling import SamplingConfig
from lightning_sdm.models.text_to_music import TextToMusicLM

FRAME_RATE_HZ = 50.0  # EnCodec 32 kHz


class LongerThanTrainedWarning(UserWarning):
    """Generation past the crop length seen in training: positions the model never saw."""


def warn_if_longer_than_trained(model_dir: str | Path, num_timesteps: int) -> None:
    trained = trained_segment_frames(model_dir)
    if trained and num_timesteps > trained:
        warnings.warn(
            f"asked for {num_timesteps / FRAME_RATE_HZ:g} s ({num_timesteps} frames), but this "
            f"model was trained on {trained / FRAME_RATE_HZ:g} s crops ({trained} frames): "
            "what comes after is untested; use --timesteps to match",
            LongerThanTrainedWarning,
            stacklevel=3,
        )


@dataclass(frozen=True)
class GenerationReport:
    output: Path
    shape: tuple[int, ...]
    decoding_steps: int
    cache_slots: int
    seconds: float
    audio_seconds: float
    wavs: tuple[Path, ...] = ()

    @property
    def real_time_factor(self) -> float:
        """Wall time over generated audio time (below 1 is faster than real time)."""
        return self.seconds / self.audio_seconds

    def __str__(self) -> str:
        audio = f", {len(self.wavs)} wav files" if self.wavs else " (no codec: codes only)"
        return (
            f"wrote codes {list(self.shape)}{audio} to {self.output}\n"
            f"decoding steps: {self.decoding_steps}, cache slots: {self.cache_slots}, "
            f"wall time: {self.seconds:.2f} s for {self.audio_seconds:.1f} s of audio per sample "
            f"(RTF {self.real_time_factor:.2f})"
        )


def timed_generate(
    model: TextToMusicLM,
    captions: list[str],
    num_timesteps: int,
    sampling: SamplingConfig,
    seed: int | None,
) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    codes = model.generate(captions, num_timesteps, sampling=sampling, seed=seed)
    return codes, time.perf_counter() - start


def generate_to_dir(
    model_dir: str | Path,
    captions: list[str],
    num_timesteps: int,
    sampling: SamplingConfig,
    seed: int | None,
    output_dir: str | Path,
    codec_dir: str | Path | None = None,
) -> GenerationReport:
    """Sample codes (codes.pt) and, when a codec is available, one wav per caption.

    The codec comes from `codec_dir`, else from the model directory's codec/ (export puts
    it there).
    """
    warn_if_longer_than_trained(model_dir, num_timesteps)
    model = TextToMusicLM.from_pretrained(model_dir).eval()
    codes, seconds = timed_generate(model, captions, num_timesteps, sampling, seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"codes": codes.to(torch.int16), "captions": list(captions)}, output_dir / "codes.pt"
    )
    wavs: list[Path] = []
    codec_path = Path(codec_dir) if codec_dir else Path(model_dir) / CODEC_DIR
    if codec_path.is_dir():
        codec = EncodecCodec(CodecConfig(pretrained=str(codec_path)))
        for index, (caption, wav) in enumerate(zip(captions, codec.decode(codes), strict=True)):
            wavs.append(
                write_wav(output_dir / f"{index:02d}-{slug(caption)}.wav", wav, codec.sample_rate)
            )
    layout = model.lm.layout(num_timesteps)
    return GenerationReport(
        output=output_dir,
        shape=tuple(codes.shape),
        decoding_steps=layout.num_decoding_steps,
        cache_slots=layout.num_slots,
        seconds=seconds,
        audio_seconds=num_timesteps / FRAME_RATE_HZ,
        wavs=tuple(wavs),
    )
