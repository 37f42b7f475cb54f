"""Attention to a short context with the query and output projections folded into its keys
and values.

A position's score against key s of head h is (W_q x)·k = x·(W_qᵀ k), and its output
Σ p·W_o v mixes the H·S vectors W_o v. With S context keys (a caption's T5 states) and
H·S much smaller than the width D, scoring and mixing through those H·S folded vectors
costs 2·D·H·S multiply-adds per position instead of the two D × D projections: the same
function, rounded differently, with far less work when a long sequence reads a short text.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "attend_folded",
    "fold_context",
    "folded_attention",
    "folding_pays",
    "folding_pays_per_step",
]

# Fold only when it does at most this share of the unfolded multiply-adds: small batched
# matmuls run below a large matmul's efficiency, by a factor that differs between machines,
# and a 2× margin in work keeps the fold ahead on any of them.
_MAX_WORK_SHARE = 0.5


def folding_pays(num_heads: int, num_keys: int, dim: int, positions: int) -> bool:
    """Whether folding does at most half the multiply-adds of projecting the queries and
    outputs: per sequence, P·D·H·S (score and mix) + S·D² (fold) against P·D²."""
    folded = positions * dim * num_heads * num_keys + num_keys * dim * dim
    return folded <= _MAX_WORK_SHARE * positions * dim * dim


def folding_pays_per_step(rows: int, num_heads: int, num_keys: int, dim: int) -> bool:
    """Whether a decoding step, which streams its weights for a few rows, reads at most
    half the bytes folded: all rows' H·S folded vectors, scorer and mixer, against the
    two D × D weights (rows·H·S ≤ D/2). Its multiply-adds then halve as well, and the fold
    itself is paid once per decode."""
    return rows * num_heads * num_keys <= _MAX_WORK_SHARE * dim


def fold_context(
    query_weight: torch.Tensor, out_weight: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The folded vectors of a context: scorer [B, D, H·S] (Wqᵀ k / √Dh per head and key)
    and mixer [B, H·S, D] (Wo v). query_weight and out_weight [D, D] in nn.Linear layout
    (heads contiguous); keys and values [B, H, S, Dh], already projected."""
    heads, _, head_dim = keys.shape[1:]
    dim = query_weight.shape[1]
    by_head_query = query_weight.view(heads, head_dim, dim)
    by_head_out = out_weight.view(dim, heads, head_dim)
    scorer = torch.einsum("hkd,bhsk->bdhs", by_head_query, keys * head_dim**-0.5)
    mixer = torch.einsum("ehk,bhsk->bhse", by_head_out, values)
    return scorer.flatten(2), mixer.flatten(1, 2)


def attend_folded(
    x: torch.Tensor,
    scorer: torch.Tensor,
    mixer: torch.Tensor,
    num_heads: int,
    mask: torch.Tensor | None = None,
    dropout: float = 0.0,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """x [B, P, D] through a folded context -> [B, P, D] (without the output bias), plus
    `residual` where given (added within the last matmul). mask [B, 1, 1 or P, S]: bool
    (True = may attend) or additive float; dropout on the attention weights."""
    scores = torch.matmul(x, scorer).unflatten(-1, (num_heads, -1))
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask.transpose(1, 2), float("-inf"))
    elif mask is not None:
        scores = scores + mask.transpose(1, 2)
    weights = torch.softmax(scores, dim=-1)
    if dropout:
        weights = F.dropout(weights, dropout)
    weights = weights.flatten(2).to(mixer.dtype)
    if residual is None:
        return torch.matmul(weights, mixer)
    return torch.baddbmm(residual, weights, mixer)


def folded_attention(
    x: torch.Tensor,
    query_weight: torch.Tensor,
    out_weight: torch.Tensor,
    out_bias: torch.Tensor | None,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """`out(attention(query(x), keys, values))` without projecting the queries or outputs.

    x [B, P, D]; query_weight and out_weight [D, D] (nn.Linear layout, heads contiguous);
    keys and values [B, H, S, Dh], already projected; mask bool [B, 1, 1 or P, S] (True =
    may attend) or None; dropout on the attention weights, as SDPA's `dropout_p`.
    Returns [B, P, D].
    """
    scorer, mixer = fold_context(query_weight, out_weight, keys, values)
    mixed = attend_folded(x, scorer, mixer, keys.shape[1], mask, dropout)
    return mixed if out_bias is None else mixed + out_bias
