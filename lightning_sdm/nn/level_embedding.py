"""Token embeddings of several codebook levels, each level with its own table.

A lookup per level (`F.embedding(ids, table[level])`) makes each level's backward build a
gradient the size of the whole [C, V, D] table (zeros, then the level's rows): C full-size
buffers a step, the largest gradient of the model. One lookup into the flattened table,
with each level's ids offset to its rows, builds it once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _flat(ids: torch.Tensor, table: torch.Tensor, level_dim: int) -> tuple[torch.Tensor, ...]:
    levels, vocab, width = table.shape
    shape = [1] * ids.dim()
    shape[level_dim] = levels
    offsets = (torch.arange(levels, device=ids.device) * vocab).view(shape)
    return ids + offsets, table.reshape(levels * vocab, width)


def level_lookup(ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """ids [..., C] (level k's id in column k), table [C, V, D] -> vectors [..., C, D]."""
    flat_ids, flat_table = _flat(ids, table, ids.dim() - 1)
    return F.embedding(flat_ids, flat_table)


def summed_level_embedding(
    ids: torch.Tensor, table: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The sum over levels of each level's vector: ids [R, C, P], table [C, V, D], optional
    per-token weights [R, C, P] (0 leaves a token out) -> [R, P, D]. One `embedding_bag`:
    the [R, C, P, D] vectors are never held."""
    rows, levels, positions = ids.shape
    flat_ids, flat_table = _flat(ids, table, 1)
    bags = flat_ids.permute(0, 2, 1).reshape(rows * positions, levels)
    if weights is not None:
        weights = weights.to(table.dtype).permute(0, 2, 1).reshape(rows * positions, levels)
    summed = F.embedding_bag(bags, flat_table, mode="sum", per_sample_weights=weights)
    return summed.view(rows, positions, -1)
