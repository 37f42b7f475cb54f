"""GEGLU feed-forward: a GELU-gated linear unit, then a projection back."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GEGLUFeedForward(nn.Module):
    def __init__(self, dim: int, mult: float = 4.0) -> None:
        super().__init__()
        inner = int(dim * mult)
        self.gated = nn.Linear(dim, 2 * inner)
        self.out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.gated(x).chunk(2, dim=-1)
        return self.out(value * F.gelu(gate))
