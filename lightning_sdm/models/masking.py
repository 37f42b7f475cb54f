"""Which latent frames a diffusion sample generates: span masks for masked modelling."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from lightning_sdm.errors import UserInputError


@dataclass(frozen=True)
class MaskingConfig:
    """Per sample, spans of `span` frames are masked (to generate) at a ratio drawn from
    U[ratio_min, ratio_max]; a `full_mask_fraction` of each batch is masked entirely (plain
    text-to-audio). The rest learn to fill gaps from the frames around them, which is what
    inpainting and continuation ask at inference."""

    span: int = 10
    ratio_min: float = 0.25
    ratio_max: float = 1.0
    full_mask_fraction: float = 0.75

    def __post_init__(self) -> None:
        if self.span < 1:
            raise UserInputError(f"span must be >= 1, got {self.span}")
        if not 0.0 < self.ratio_min <= self.ratio_max <= 1.0:
            raise UserInputError(
                f"need 0 < ratio_min <= ratio_max <= 1, got {self.ratio_min}, {self.ratio_max}"
            )
        if not 0.0 <= self.full_mask_fraction <= 1.0:
            raise UserInputError(
                f"full_mask_fraction must be in [0, 1], got {self.full_mask_fraction}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def span_mask(
    batch: int,
    frames: int,
    config: MaskingConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """[B, T] bool, True = frame to generate. Spans may overlap (the masked share is then
    a little under the drawn ratio); every sample has at least one span."""
    ratios = torch.empty(batch).uniform_(config.ratio_min, config.ratio_max, generator=generator)
    span = min(config.span, frames)
    counts = (ratios * frames / span + torch.rand(batch, generator=generator)).floor().long()
    counts = counts.clamp(min=1)
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    offsets = torch.arange(span)
    for row in range(batch):
        starts = torch.randint(0, frames - span + 1, (int(counts[row]),), generator=generator)
        mask[row, (starts[:, None] + offsets).flatten()] = True
    full = torch.rand(batch, generator=generator) < config.full_mask_fraction
    mask[full] = True
    return mask
