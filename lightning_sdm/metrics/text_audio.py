"""KL divergence of a tagger's label distributions, CLAP text-audio score and the real-time
factor, as torchmetrics `Metric`s (sums as states, so ranks add up)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from lightning_sdm.metrics.embedders import ASTClassifier, ClapEmbedder, resample


def label_kl(
    reference_logits: torch.Tensor,
    generated_logits: torch.Tensor,
    activation: Literal["softmax", "sigmoid"] = "softmax",
) -> torch.Tensor:
    """KL(reference || generated) per clip [B].

    softmax: over the labels as one distribution. sigmoid: each label a Bernoulli (AudioSet
    taggers are multi-label), summed over labels and divided by their number.
    """
    if activation == "softmax":
        reference = F.log_softmax(reference_logits.double(), dim=-1)
        generated = F.log_softmax(generated_logits.double(), dim=-1)
        return (reference.exp() * (reference - generated)).sum(-1)
    if activation == "sigmoid":
        p = torch.sigmoid(reference_logits.double()).clamp(1e-12, 1 - 1e-12)
        q = torch.sigmoid(generated_logits.double()).clamp(1e-12, 1 - 1e-12)
        per_label = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
        return per_label.mean(-1)
    raise ValueError(f"activation must be softmax or sigmoid, got {activation!r}")


class KLDivergence(Metric):
    """Mean KL(reference || generated) over pairs of clips with the same prompt."""

    full_state_update = False
    higher_is_better = False

    def __init__(
        self,
        classifier: ASTClassifier,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.classifier = classifier
        self.activation = activation
        self.add_state("total", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("pairs", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("per_clip", [], "cat")

    def update(
        self,
        generated: list[torch.Tensor],
        reference: list[torch.Tensor],
        sample_rate: int,
    ) -> None:
        if len(generated) != len(reference):
            raise ValueError(f"{len(generated)} generated clips for {len(reference)} references")
        rate = self.classifier.sample_rate
        logits = [
            self.classifier.logits([resample(w, sample_rate, rate) for w in clips])
            for clips in (reference, generated)
        ]
        values = label_kl(logits[0], logits[1], self.activation).to(self.device)
        self.total += values.sum()
        self.pairs += values.numel()
        self.per_clip.append(values)

    def compute(self) -> torch.Tensor:
        if self.pairs == 0:
            raise ValueError("KLD has no clip pairs")
        return self.total / self.pairs


class CLAPScore(Metric):
    """Mean cosine between each clip's CLAP audio embedding (window embeddings averaged) and
    its prompt's text embedding."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, clap: ClapEmbedder, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clap = clap
        self.add_state("total", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("clips", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("per_clip", [], "cat")

    def update(self, wavs: list[torch.Tensor], texts: list[str], sample_rate: int) -> None:
        if len(wavs) != len(texts):
            raise ValueError(f"{len(wavs)} clips for {len(texts)} prompts")
        clips = [resample(w, sample_rate, self.clap.sample_rate) for w in wavs]
        audio = torch.stack([frames.mean(0) for frames in self.clap.embed(clips)])
        text = self.clap.embed_text(list(texts))
        values = F.cosine_similarity(audio.double(), text.double(), dim=-1).to(self.device)
        self.total += values.sum()
        self.clips += values.numel()
        self.per_clip.append(values)

    def compute(self) -> torch.Tensor:
        if self.clips == 0:
            raise ValueError("the CLAP score has no clips")
        return self.total / self.clips


class RealTimeFactor(Metric):
    """Generation + decoding wall time over the seconds of audio produced (< 1: faster
    than real time)."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("wall_s", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("audio_s", torch.zeros((), dtype=torch.float64), "sum")

    def update(self, wall_s: float, audio_s: float) -> None:
        if wall_s < 0 or audio_s <= 0:
            raise ValueError(f"wall time {wall_s} s for {audio_s} s of audio")
        self.wall_s += wall_s
        self.audio_s += audio_s

    def compute(self) -> torch.Tensor:
        return self.wall_s / self.audio_s


def percentile_interval(values: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """The central `level` range of resampled statistics."""
    tail = (1 - level) / 2
    quantiles = torch.tensor([tail, 1 - tail], dtype=torch.float64)
    low, high = torch.quantile(values.double().flatten(), quantiles)
    return float(low), float(high)


def bootstrap_interval(
    values: torch.Tensor, samples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean of per-clip `values`, resampling clips."""
    values = values.double().flatten()
    if values.numel() < 2:
        raise ValueError("a bootstrap interval needs at least 2 clips")
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, values.numel(), (samples, values.numel()), generator=generator)
    return percentile_interval(values[picks].mean(1), level)
