"""Encoding long audio in chunks with context on both sides, so memory stays bounded by the
chunk while every kept frame sees the audio around it (a convolutional encoder's frames near
a cut would otherwise see zeros)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

# A window of audio [B, N'] -> tensors whose last axis is frames (codes, latents, ...).
WindowEncoder = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


def encode_in_chunks(
    wav: torch.Tensor,
    hop: int,
    chunk_samples: int,
    context_samples: int,
    encode_window: WindowEncoder,
    before_chunk: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, ...]:
    """wav [B, N] -> each of `encode_window`'s outputs over ceil(N / hop) frames. Chunk and
    context are rounded down to whole hops (a chunk at least one hop)."""
    chunk = max(hop, chunk_samples // hop * hop)
    context = context_samples // hop * hop
    pieces: list[tuple[torch.Tensor, ...]] = []
    for start in range(0, wav.shape[-1], chunk):
        if before_chunk is not None:
            before_chunk()
        end = min(start + chunk, wav.shape[-1])
        left = max(0, start - context)
        right = min(wav.shape[-1], end + context)
        first = (start - left) // hop
        kept = slice(first, first + math.ceil((end - start) / hop))
        pieces.append(tuple(output[..., kept] for output in encode_window(wav[:, left:right])))
    return tuple(torch.cat(parts, dim=-1) for parts in zip(*pieces, strict=True))
