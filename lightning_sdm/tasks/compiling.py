"""`model.compile`: the model's repeated blocks compiled with `torch.compile`, one block
at a time (regional compilation). Identical blocks share one compiled graph, so compiling
costs about one block's time rather than the whole model's, and each block's elementwise
work (norms, modulation, activations, residual adds) runs fused, forward and backward.
The blocks are compiled in place (`nn.Module.compile`): parameter names, checkpoints and
exports are those of the uncompiled model."""

from __future__ import annotations

from typing import Any

from torch import nn


def is_compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def compile_blocks(
    model: nn.Module, block_types: tuple[type[nn.Module], ...], **options: Any
) -> int:
    """Compile every module of `block_types` in `model` not compiled yet (`options` go to
    `torch.compile`); how many were."""
    compiled = 0
    for module in model.modules():
        if isinstance(module, block_types) and not is_compiled(module):
            module.compile(**options)
            compiled += 1
    return compiled
