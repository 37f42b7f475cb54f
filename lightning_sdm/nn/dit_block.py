"""One block of the diffusion transformer: adaLN-modulated self-attention with RoPE,
cross-attention to the text, a GEGLU MLP, and (in the output half) a long skip input."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lightning_sdm.nn.adaptive_norm import AdaLNPerBlock, AdaLNSOLA, modulate
from lightning_sdm.nn.attention import MultiHeadAttention
from lightning_sdm.nn.feedforward import GEGLUFeedForward


class DiTBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        ada_rank: int,
        ada_alpha: float | None = None,
        skip: bool = False,
        checkpointing: bool = False,
        shared_modulation: bool = True,
        text_path: bool = True,
        rotary: bool = True,
        qk_norm: bool = True,
    ) -> None:
        super().__init__()
        self.checkpointing = checkpointing
        # U-ViT long skip: the matching input block's output, concatenated, normed, projected.
        self.skip_norm = nn.LayerNorm(2 * dim) if skip else None
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.self_norm = nn.LayerNorm(dim)
        self.self_attention = MultiHeadAttention(
            dim, num_heads, qk_norm=qk_norm, rotary=rotary, out_bias=True
        )
        # Cross-attention to the text (none without a text path). Its output projection
        # starts at zero (the model's init): text enters gradually.
        self.cross_norm = nn.LayerNorm(dim) if text_path else None
        self.context_norm = nn.LayerNorm(dim) if text_path else None
        self.cross_attention = (
            MultiHeadAttention(dim, num_heads, qk_norm=qk_norm, out_bias=True)
            if text_path
            else None
        )
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = GEGLUFeedForward(dim, mlp_ratio)
        # adaLN-SOLA over the model's shared modulation, or plain per-block adaLN.
        self.adaln: AdaLNSOLA | AdaLNPerBlock = (
            AdaLNSOLA(dim, ada_rank, ada_alpha) if shared_modulation else AdaLNPerBlock(dim)
        )

    def forward(
        self,
        x: torch.Tensor,
        time_features: torch.Tensor,
        shared_modulation: torch.Tensor | None,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
        frame_mask: torch.Tensor | None,
        skip: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, T, D]; context [B, L, D]; masks broadcast to [B, 1, 1, keys] (True = real)."""
        args = (x, time_features, shared_modulation, context, context_mask, frame_mask, skip)
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(self._forward, *args, use_reentrant=False)
        return self._forward(*args)

    def _forward(
        self,
        x: torch.Tensor,
        time_features: torch.Tensor,
        shared_modulation: torch.Tensor | None,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
        frame_mask: torch.Tensor | None,
        skip: torch.Tensor | None,
    ) -> torch.Tensor:
        if self.skip_linear is not None:
            if skip is None:
                raise ValueError("an output block needs its input block's skip")
            x = self.skip_linear(self.skip_norm(torch.cat([x, skip], dim=-1)))
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = (
            m[:, None] for m in self.adaln(time_features, shared_modulation).unbind(dim=1)
        )
        attended = self.self_attention(
            modulate(self.self_norm(x), shift_a, scale_a), mask=frame_mask
        )
        x = x + (1 - gate_a) * attended
        if self.cross_attention is not None:
            x = x + self.cross_attention(
                self.cross_norm(x), context=self.context_norm(context), mask=context_mask
            )
        return x + (1 - gate_m) * self.mlp(modulate(self.mlp_norm(x), shift_m, scale_m))
