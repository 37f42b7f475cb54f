"""A linear layer with its own weights at each position of a short fixed sequence (Moshi's
depth transformer uses one set of weights per codebook level)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class PositionwiseLinear(nn.Module):
    """x [..., P, in] -> [..., P, out], position p through weight[p] (and bias[p])."""

    def __init__(self, positions: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)  # nn.Linear's initialisation, per position
        self.weight = nn.Parameter(
            torch.empty(positions, out_features, in_features).uniform_(-bound, bound)
        )
        self.bias = (
            nn.Parameter(torch.empty(positions, out_features).uniform_(-bound, bound))
            if bias
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] != self.weight.shape[0]:
            raise ValueError(
                f"{x.shape[-2]} positions for a layer with weights for {self.weight.shape[0]}"
            )
        y = torch.einsum("...pi,poi->...po", x, self.weight)
        return y if self.bias is None else y + self.bias

    def at(self, position: int) -> nn.Linear:
        """A plain `nn.Linear` reading this position's weights in place (for decoding one
        position at a time)."""
        linear = nn.Linear(
            self.in_features, self.out_features, bias=self.bias is not None, device="meta"
        )
        linear.weight = nn.Parameter(self.weight[position].detach(), requires_grad=False)
        if self.bias is not None:
            linear.bias = nn.Parameter(self.bias[position].detach(), requires_grad=False)
        return linear


def position_view(module: nn.Module, position: int) -> nn.Module:
    """`module` with every `PositionwiseLinear` replaced by its `at(position)` view; all
    other parameters shared, nothing copied."""
    if isinstance(module, PositionwiseLinear):
        return module.at(position)
    view = copy.copy(module)
    view._modules = {
        name: position_view(child, position) for name, child in module._modules.items()
    }
    return view
