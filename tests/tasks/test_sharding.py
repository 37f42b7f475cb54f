"""Sharding's plan and its refusals (two-process FSDP training: tests/test_training_cli.py)."""

import pytest
import torch
from torch import nn

from lightning_sdm.errors import UserInputError
from lightning_sdm.tasks.scheduled_task import gradient_norm
from lightning_sdm.tasks.sharding import shard_blocks, whole_parameters


class Mesh:
    """A device mesh's names and sizes, as shard_blocks reads them."""

    def __init__(self, **sizes: int) -> None:
        self.sizes = sizes
        self.mesh_dim_names = tuple(sizes)

    def __getitem__(self, name: str) -> "Mesh":
        return Mesh(**{name: self.sizes[name]})

    def size(self) -> int:
        (size,) = self.sizes.values()
        return size


def test_tensor_parallelism_and_models_without_blocks_are_refused():
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(UserInputError, match="set the strategy's tensor_parallel_size to 1"):
        shard_blocks(model, Mesh(data_parallel=1, tensor_parallel=2), (nn.Linear,))
    with pytest.raises(UserInputError, match="has no Conv1d blocks to shard"):
        shard_blocks(model, Mesh(data_parallel=2, tensor_parallel=1), (nn.Conv1d,))


def test_an_unsharded_model_is_left_as_it_is():
    model = nn.Linear(2, 2)
    before = model.weight.detach().clone()
    with whole_parameters(model):
        assert torch.equal(model.weight, before)


def test_gradient_norm_is_the_global_l2_norm():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    model(torch.randn(4, 3)).sum().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.allclose(gradient_norm(model), grads.norm())
    assert gradient_norm(nn.Linear(1, 1)) is None
