"""Pre-norm transformer decoder with cross-attention (its cached incremental path:
`nn.cached_decoding`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lightning_sdm.nn.attention import AttentionMask, LinearFactory, MultiHeadAttention


class DecoderLayer(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.0,
        ffn_bias: bool = True,
        linear: LinearFactory = nn.Linear,
    ) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(dim)
        self.self_attention = MultiHeadAttention(dim, num_heads, dropout, linear=linear)
        self.cross_norm = nn.LayerNorm(dim)
        self.cross_attention = MultiHeadAttention(dim, num_heads, dropout, linear=linear)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            linear(dim, ffn_dim, bias=ffn_bias),
            nn.GELU(),
            nn.Dropout(dropout),
            linear(ffn_dim, dim, bias=ffn_bias),
        )
        self.residual_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: AttentionMask,
        context: torch.Tensor,
        context_mask: torch.Tensor,
    ) -> torch.Tensor:
        """self_mask None: causal self-attention."""
        attended = self.self_attention(
            self.self_norm(x), mask=self_mask, is_causal=self_mask is None
        )
        x = x + self.residual_dropout(attended)
        cross_keys, cross_values = self.cross_attention.project_key_value(context)
        return self._cross_and_ffn(x, cross_keys, cross_values, context_mask)

    def _cross_and_ffn(
        self,
        x: torch.Tensor,
        cross_keys: torch.Tensor,
        cross_values: torch.Tensor,
        context_mask: torch.Tensor,
    ) -> torch.Tensor:
        cross = self.cross_attention.attend(
            self.cross_norm(x), cross_keys, cross_values, context_mask
        )
        x = x + self.residual_dropout(cross)
        return x + self.residual_dropout(self.ffn(self.ffn_norm(x)))


class TransformerDecoder(nn.Module):
    def __init__(
        self,
        dim: int,
        num_layers: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.0,
        ffn_bias: bool = True,
        checkpoint_layers: bool = False,
        linear: LinearFactory = nn.Linear,
    ) -> None:
        super().__init__()
        self.checkpoint_layers = checkpoint_layers
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.layers = nn.ModuleList(
            DecoderLayer(dim, num_heads, ffn_dim, dropout, ffn_bias, linear)
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: AttentionMask,
        context: torch.Tensor,
        context_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Teacher-forced pass. self_mask [N, N], a block-sparse plan of it, or None for
        plain causal attention; context_mask [B, L] (True = real token), or [B, N, L] for a
        mask per query position."""
        cross_mask = (
            context_mask[:, None] if context_mask.dim() == 3 else context_mask[:, None, None, :]
        )
        recompute = self.checkpoint_layers and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:
                x = checkpoint(layer, x, self_mask, context, cross_mask, use_reentrant=False)
            else:
                x = layer(x, self_mask, context, cross_mask)
        return self.final_norm(x)
