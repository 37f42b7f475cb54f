"""Sinusoidal encodings computed for arbitrary integer indices (no length limit)."""

from __future__ import annotations

import math

import torch


def sinusoidal_encoding(
    indices: torch.Tensor, dim: int, max_period: float = 10_000.0
) -> torch.Tensor:
    """[...] integer indices -> [..., dim] float encodings (cos half, sin half)."""
    if dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even dim, got {dim}")
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period)
        * torch.arange(half, device=indices.device, dtype=torch.float32)
        / half
    )
    angles = indices.to(torch.float32)[..., None] * frequencies
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
