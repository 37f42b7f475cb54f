"""The level heads every codebook LM ends in: one linear map per level from the states
that predict it to that level's logits, and the training loss fused with them."""

from __future__ import annotations

import torch
from torch import nn

from lightning_sdm.nn.level_cross_entropy import level_cross_entropy


class LevelHeads(nn.Module):
    """Base of the LMs: subclasses say which states predict each grid token
    (`head_inputs`); logits and losses are computed here, the same way for all."""

    head_weight: nn.Parameter
    head_bias: torch.Tensor
    heads_have_bias: bool

    def init_level_heads(self, levels: int, cardinality: int, width: int, bias: bool) -> None:
        self.head_weight = nn.Parameter(torch.randn(levels, cardinality, width) * width**-0.5)
        self.heads_have_bias = bias
        head_bias = torch.zeros(levels, cardinality)
        if bias:
            self.head_bias = nn.Parameter(head_bias)
        else:  # zeros that never train, so the heads stay bias-free like the checkpoint's
            self.register_buffer("head_bias", head_bias, persistent=False)

    @property
    def trained_head_bias(self) -> torch.Tensor | None:
        """The bias, or None where it is the fixed zeros (adding them would be a pass over
        the largest tensor of the step)."""
        return self.head_bias if self.heads_have_bias else None

    def head_inputs(
        self, codes: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> torch.Tensor:
        """codes [B, C, T] -> the state predicting each of them, [B, C, T, width]."""
        raise NotImplementedError

    def forward(
        self, codes: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced logits. codes [B, C, T] -> logits [B, C, T, V]."""
        states = self.head_inputs(codes, context, context_mask)
        logits = torch.einsum("bctd,cvd->bctv", states, self.head_weight)
        bias = self.trained_head_bias
        # In place: the product's backward does not need it, and the logits are the largest
        # activation of a step.
        return logits if bias is None else logits.add_(bias[:, None])

    def token_losses(
        self, codes: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced cross-entropy of every token, fp32 [B, C, T]: the heads and the
        loss fused, so the step never holds the logits more than once."""
        states = self.head_inputs(codes, context, context_mask)
        return level_cross_entropy(states, self.head_weight, self.trained_head_bias, codes)
