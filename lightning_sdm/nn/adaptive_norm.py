"""AdaLN-SOLA: timestep modulation shared by all blocks plus a low-rank adjustment each.

Plain adaLN gives every block its own Linear(D, 6D), about a third of a DiT's parameters;
adaLN-single shares one. SOLA (EzAudio) keeps the shared one and lets each block learn a
rank-r correction and a bias, nearly recovering per-block adaLN at a few % of its size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MODULATIONS = 6  # shift, scale, gate for attention; shift, scale, gate for the MLP


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """FiLM: x [B, L, D], shift/scale [B, 1, D]."""
    return x * (1 + scale) + shift


class AdaLNSOLA(nn.Module):
    def __init__(self, dim: int, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        self.down = nn.Linear(dim, MODULATIONS * rank, bias=False)
        self.up = nn.Linear(MODULATIONS * rank, MODULATIONS * dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(MODULATIONS, dim))
        self.scaling = (alpha if alpha is not None else rank) / rank
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)  # starts as the shared modulation alone
        nn.init.zeros_(self.bias)

    def forward(self, time_features: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        """time_features [B, D] (after SiLU), shared [B, 6D] -> [B, 6, D]."""
        adjusted = shared + self.up(self.down(time_features)) * self.scaling
        return adjusted.unflatten(-1, (MODULATIONS, -1)) + self.bias


class AdaLNPerBlock(nn.Module):
    """Plain adaLN(-Zero), DiT's: the block's own Linear(D, 6D) of the timestep features,
    zero-initialised. The reference SOLA is measured against."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, MODULATIONS * dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, time_features: torch.Tensor, shared: torch.Tensor | None) -> torch.Tensor:
        """time_features [B, D] (after SiLU) -> [B, 6, D]; there is no shared part."""
        return self.linear(time_features).unflatten(-1, (MODULATIONS, -1))
