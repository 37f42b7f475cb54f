"""Multi-head attention through PyTorch's SDPA: explicit boolean masks, causal, or a
block-sparse plan."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lightning_sdm.nn.folded_attention import folded_attention, folding_pays
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
        (with no mask) lets SDPA pick its causal kernels, which skip the masked scores.
        Against a short context (a caption's few keys) the projections are folded into the
        keys and values where that does at most half the work (`nn.folded_attention`)."""
        dropout = self.dropout if self.training else 0.0
        if self._folds(x, keys, mask, is_causal):
            return folded_attention(
                x, self.query.weight, self.out.weight, self.out.bias, keys, values, mask, dropout
            )
        queries = self.split_heads(self.query(x))
        if self.query_norm is not None:
            queries = self.query_norm(queries)
        if self.rotary is not None:
            queries = self.rotary(queries)
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

    def _folds(
        self, x: torch.Tensor, keys: torch.Tensor, mask: AttentionMask, is_causal: bool
    ) -> bool:
        """Folding needs plain linear query/output projections (no LoRA wrapper, no norm or
        rotation of the queries) and a boolean mask or none."""
        plain = (
            type(self.query) is nn.Linear
            and type(self.out) is nn.Linear
            and self.query_norm is None
            and self.rotary is None
        )
        mask_ok = mask is None or (isinstance(mask, torch.Tensor) and mask.dtype == torch.bool)
        return (
            plain
            and mask_ok
            and not is_causal
            and folding_pays(self.num_heads, keys.shape[-2], x.shape[-1], x.shape[-2])
        )

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: AttentionMask = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        keys, values = self.project_key_value(x if context is None else context)
        return self.attend(x, keys, values, mask, is_causal)
