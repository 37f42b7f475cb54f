"""Fully sharded data parallel (FSDP2's `fully_shard`) under Lightning's
`ModelParallelStrategy`: each of a model's repeated blocks is one shard unit, so a rank holds
1/N of the weights, gradients and optimizer state and gathers one block at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from lightning_sdm.errors import UserInputError


def shard_blocks(
    model: nn.Module,
    mesh: Any,
    block_types: tuple[type[nn.Module], ...],
    entry_methods: tuple[str, ...] = (),
) -> None:
    """Shard every block of `block_types`, then the rest of `model` as one unit. `mesh` is
    the strategy's device mesh; only its data-parallel dimension is used. FSDP gathers a
    unit's weights in its `forward`; `entry_methods` are the model's other methods that
    training enters it through (the diffusion loss), gathered the same way."""
    from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

    if isinstance(model, FSDPModule):  # configure_model runs again on a second fit
        return
    names = mesh.mesh_dim_names or ()
    if "tensor_parallel" in names and mesh["tensor_parallel"].size() > 1:
        raise UserInputError(
            "the models shard their weights across data-parallel ranks only: set the "
            "strategy's tensor_parallel_size to 1 and data_parallel_size to the device count"
        )
    data_parallel = mesh["data_parallel"] if "data_parallel" in names else mesh
    blocks = [module for module in model.modules() if isinstance(module, block_types)]
    if not blocks:
        wanted = " or ".join(block.__name__ for block in block_types) or "named"
        raise UserInputError(f"{type(model).__name__} has no {wanted} blocks to shard")
    for block in blocks:
        fully_shard(block, mesh=data_parallel)
    fully_shard(model, mesh=data_parallel)
    for method in entry_methods:
        register_fsdp_forward_method(model, method)


@contextmanager
def whole_parameters(model: nn.Module) -> Iterator[None]:
    """Gather a sharded model's weights on every rank (a collective: all ranks enter) and
    keep them gathered through any forward calls, so one rank alone can run code that does
    not go through `forward` (cached decoding) or calls it (the DiT's sampling loop).
    Nothing happens to a model that is not sharded."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2: nothing can be sharded
        yield
        return
    sharded = [module for module in model.modules() if isinstance(module, FSDPModule)]
    inner = {id(sub) for module in sharded for sub in module.modules() if sub is not module}
    for module in sharded:
        module.unshard()
        module.set_reshard_after_forward(False, recurse=False)  # no collective in forward
    try:
        yield
    finally:
        for module in reversed(sharded):
            # FSDP's defaults: blocks reshard after forward, the outermost unit does not
            module.set_reshard_after_forward(id(module) in inner, recurse=False)
            module.reshard()
