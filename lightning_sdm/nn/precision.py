"""A module's floating-point weights in another dtype for the length of a block.

Decoding in bf16 halves the bytes each step reads; casting the model in place for it
would leave fp32 callers afterwards with bf16-rounded weights. Here the fp32 tensors are
kept aside and put back exactly on exit (the block costs the bf16 copy's memory).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def parameters_in(module: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Within the block, `module`'s floating parameters and buffers are `dtype`; after it,
    the very tensors they were before (also when the block raises)."""
    originals: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point() and tensor.dtype != dtype:
                originals.append((tensor, tensor.data))
                tensor.data = tensor.data.to(dtype)
        yield
    finally:
        for tensor, data in originals:
            tensor.data = data
