"""Fréchet audio distance as a torchmetrics `Metric`: running float64 moments per set, summed
across ranks, and the distance through symmetric eigen-decompositions."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from lightning_sdm.metrics.embedders import AudioEmbedder, resample


def _symmetric_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(
    mean_a: torch.Tensor, cov_a: torch.Tensor, mean_b: torch.Tensor, cov_b: torch.Tensor
) -> torch.Tensor:
    """|mu_a - mu_b|^2 + tr(A + B - 2 (A^1/2 B A^1/2)^1/2), in float64.

    tr((AB)^1/2) equals tr((A^1/2 B A^1/2)^1/2), whose argument is symmetric positive
    semi-definite, so two `eigh` calls replace the unstable general matrix square root.
    """
    mean_a, cov_a, mean_b, cov_b = (t.double() for t in (mean_a, cov_a, mean_b, cov_b))
    root_a = _symmetric_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    middle = (middle + middle.T) / 2  # exact symmetry for eigh
    cross = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    distance = (mean_a - mean_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return distance.clamp(min=0)


class FrechetAudioDistance(Metric):
    """FAD between reference (`real=True`) and generated audio, on an embedder's frames.

    Every frame of every clip is one sample of the embedding distribution (as VGGish FAD
    does with its 0.96 s frames). States are float64 sums over frames, so ranks add up
    exactly what one process would.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, embedder: AudioEmbedder, **kwargs) -> None:
        super().__init__(**kwargs)
        self.embedder = embedder
        dim = embedder.dim
        for side in ("real", "fake"):
            self.add_state(f"{side}_frames", torch.zeros((), dtype=torch.float64), "sum")
            self.add_state(f"{side}_clips", torch.zeros((), dtype=torch.float64), "sum")
            self.add_state(f"{side}_sum", torch.zeros(dim, dtype=torch.float64), "sum")
            self.add_state(f"{side}_outer", torch.zeros(dim, dim, dtype=torch.float64), "sum")

    def update(self, wavs: list[torch.Tensor] | torch.Tensor, sample_rate: int, real: bool) -> None:
        """wavs: mono clips [N] (a list, lengths may differ) or a batch [B, N]."""
        side = "real" if real else "fake"
        clips = [resample(wav, sample_rate, self.embedder.sample_rate) for wav in wavs]
        for frames in self.embedder.embed(clips):
            frames = frames.double().to(self.device)
            setattr(self, f"{side}_frames", getattr(self, f"{side}_frames") + frames.shape[0])
            setattr(self, f"{side}_clips", getattr(self, f"{side}_clips") + 1)
            setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + frames.sum(0))
            setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + frames.T @ frames)

    def moments(self, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        count = getattr(self, f"{side}_frames")
        if count < 2:
            raise ValueError(
                f"FAD needs at least 2 {side} embedding frames, got {int(count)}: "
                "add more or longer clips"
            )
        mean = getattr(self, f"{side}_sum") / count
        # the unbiased covariance, as numpy.cov and the reference FAD implementation
        cov = (getattr(self, f"{side}_outer") - count * torch.outer(mean, mean)) / (count - 1)
        return mean, cov

    def compute(self) -> dict[str, torch.Tensor]:
        mean_real, cov_real = self.moments("real")
        mean_fake, cov_fake = self.moments("fake")
        return {
            "fad": frechet_distance(mean_real, cov_real, mean_fake, cov_fake),
            "real_frames": self.real_frames,
            "fake_frames": self.fake_frames,
            "real_clips": self.real_clips,
            "fake_clips": self.fake_clips,
        }
