"""Pre-norm transformer decoder with cross-attention and a slot-cached incremental path."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lightning_sdm.nn.attention import AttentionMask, MultiHeadAttention
from lightning_sdm.nn.kv_cache import SlotKVCache


class DecoderLayer(nn.Module):
    def __init__(
        self, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.0, ffn_bias: bool = True
    ) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(dim)
        self.self_attention = MultiHeadAttention(dim, num_heads, dropout)
        self.cross_norm = nn.LayerNorm(dim)
        self.cross_attention = MultiHeadAttention(dim, num_heads, dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim, bias=ffn_bias),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, dim, bias=ffn_bias),
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

    def forward_cached(
        self,
        x: torch.Tensor,
        cache: SlotKVCache,
        layer: int,
        slots: torch.Tensor,
        visible: torch.Tensor,
        extent: int,
    ) -> torch.Tensor:
        """One decoding step: write this step's keys into their slots, attend to live slots."""
        normed = self.self_norm(x)
        keys, values = self.self_attention.project_key_value(normed)
        cache.write(layer, slots, keys, values)
        cached_keys, cached_values = cache.read(layer, extent)
        attended = self.self_attention.attend(normed, cached_keys, cached_values, visible)
        x = x + self.residual_dropout(attended)
        return self._cross_and_ffn(
            x, cache.cross_keys[layer], cache.cross_values[layer], cache.cross_mask
        )


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
    ) -> None:
        super().__init__()
        self.checkpoint_layers = checkpoint_layers
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.layers = nn.ModuleList(
            DecoderLayer(dim, num_heads, ffn_dim, dropout, ffn_bias) for _ in range(num_layers)
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
        plain causal attention; context_mask [B, L] (True = real token)."""
        cross_mask = context_mask[:, None, None, :]
        recompute = self.checkpoint_layers and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:
                x = checkpoint(layer, x, self_mask, context, cross_mask, use_reentrant=False)
            else:
                x = layer(x, self_mask, context, cross_mask)
        return self.final_norm(x)

    def new_cache(
        self, num_slots: int, context: torch.Tensor, context_mask: torch.Tensor
    ) -> SlotKVCache:
        """Preallocate the self-attention slots and precompute cross-attention keys/values."""
        cross = [layer.cross_attention.project_key_value(context) for layer in self.layers]
        return SlotKVCache.allocate(
            num_layers=len(self.layers),
            rows=context.shape[0],
            num_heads=self.num_heads,
            num_slots=num_slots,
            head_dim=self.head_dim,
            cross_keys=[keys for keys, _ in cross],
            cross_values=[values for _, values in cross],
            cross_mask=context_mask[:, None, None, :],
        )

    def forward_cached(
        self,
        x: torch.Tensor,
        cache: SlotKVCache,
        slots: torch.Tensor,
        visible: torch.Tensor,
        extent: int,
    ) -> torch.Tensor:
        """visible [extent]: which slots hold keys alive at this step, as a bool mask or an
        additive float mask (0 or -inf)."""
        mask = visible[None, None, None, :]
        for index, layer in enumerate(self.layers):
            x = layer.forward_cached(x, cache, index, slots, mask, extent)
        return self.final_norm(x)
