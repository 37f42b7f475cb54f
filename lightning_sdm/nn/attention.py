"""Multi-head attention through PyTorch's SDPA: explicit boolean masks, causal, or a
block-sparse plan."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lightning_sdm.nn.rotary import RotaryEmbedding
from lightning_sdm.nn.sparse_attention import BlockSparseMask

# True = may attend; None = no mask (or causal); a plan = only its visible key blocks scored.
AttentionMask = torch.Tensor | BlockSparseMask | None
# Makes a projection: (in_features, out_features, bias=...) -> module; nn.Linear by default.
LinearFactory = Callable[..., nn.Module]


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention; masks are bool with True meaning "may attend".

    Options of the diffusion transformer: `qk_norm` (LayerNorm over each head's queries and
    keys, which keeps attention logits bounded), `rotary` (RoPE over positions 0..L−1 of
    whole sequences; not for the LM's cached decoding) and a bias on the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dropout: float = 0.0,
        qk_norm: bool = False,
        rotary: bool = False,
        out_bias: bool = False,
        linear: LinearFactory = nn.Linear,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.query = linear(dim, dim, bias=False)
        self.key_value = linear(dim, 2 * dim, bias=False)
        self.out = linear(dim, dim, bias=out_bias)
        self.query_norm = nn.LayerNorm(self.head_dim) if qk_norm else None
        self.key_norm = nn.LayerNorm(self.head_dim) if qk_norm else None
        self.rotary = RotaryEmbedding(self.head_dim) if rotary else None

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def project_key_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.key_value(x).chunk(2, dim=-1)
        keys = self.split_heads(keys)
        if self.key_norm is not None:
            keys = self.key_norm(keys)
        if self.rotary is not None:
            keys = self.rotary(keys)
        return keys, self.split_heads(values)

    def attend(
        self,
        x: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: AttentionMask,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """x [B, P, D] queries against keys/values [B, H, K, Dh] -> [B, P, D]. `is_causal`
        (with no mask) lets SDPA pick its causal kernels, which skip the masked scores."""
        queries = self.split_heads(self.query(x))
        if self.query_norm is not None:
            queries = self.query_norm(queries)
        if self.rotary is not None:
            queries = self.rotary(queries)
        dropout = self.dropout if self.training else 0.0
        if isinstance(mask, BlockSparseMask):
            mixed = mask.attend(queries, keys, values, dropout)
            return self.out(mixed.transpose(1, 2).flatten(-2))
        mixed = F.scaled_dot_product_attention(
            queries,
            keys,
            values,
            attn_mask=mask,
            dropout_p=dropout,
            is_causal=is_causal,
        )
        return self.out(mixed.transpose(1, 2).flatten(-2))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: AttentionMask = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        keys, values = self.project_key_value(x if context is None else context)
        return self.attend(x, keys, values, mask, is_causal)
