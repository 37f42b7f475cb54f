"""Rotary position embeddings (RoPE) over the sequence axis, rotate-half convention."""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Rotates query/key channel pairs by angles that grow with the position, so attention
    scores depend on relative offsets only. Positions are 0..L−1 of the given sequence."""

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
        inverse = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inverse_frequency", inverse, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, H, L, Dh] -> rotated, same shape and dtype (angles computed in fp32)."""
        positions = torch.arange(x.shape[-2], device=x.device, dtype=torch.float32)
        angles = torch.outer(positions, self.inverse_frequency.to(x.device))
        angles = torch.cat([angles, angles], dim=-1)
        first, second = x.float().chunk(2, dim=-1)
        rotated_half = torch.cat([-second, first], dim=-1)
        return (x.float() * angles.cos() + rotated_half * angles.sin()).to(x.dtype)
