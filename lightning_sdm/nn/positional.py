"""Sinusoidal encodings computed for arbitrary integer indices (no length limit)."""

from __future__ import annotations

import math

import torch

# How the frequencies are spaced: "sinusoidal" divides log(max_period) into half steps
# (the lowest frequency just above 1/max_period); "tensor2tensor" into half - 1 (it reaches
# 1/max_period exactly), which is MusicGen's.
POSITIONAL_KINDS = ("sinusoidal", "tensor2tensor")


def sinusoidal_encoding(
    indices: torch.Tensor, dim: int, max_period: float = 10_000.0, kind: str = "sinusoidal"
) -> torch.Tensor:
    """[...] integer indices -> [..., dim] float encodings (cos half, sin half)."""
    if dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even dim, got {dim}")
    if kind not in POSITIONAL_KINDS:
        raise ValueError(f"positional must be one of {POSITIONAL_KINDS}, got {kind!r}")
    half = dim // 2
    steps = half if kind == "sinusoidal" else max(1, half - 1)
    frequencies = torch.exp(
        -math.log(max_period)
        * torch.arange(half, device=indices.device, dtype=torch.float32)
        / steps
    )
    angles = indices.to(torch.float32)[..., None] * frequencies
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
