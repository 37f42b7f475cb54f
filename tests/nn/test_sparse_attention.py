"""Block-sparse attention equals dense SDPA under the same mask, in both kernels."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_sdm.nn.sparse_attention import BlockSparseMask
from lightning_sdm.patterns import make_pattern


def stack_delay_mask(num_timesteps: int) -> tuple[torch.Tensor, torch.Tensor]:
    layout = make_pattern("stack_delay", k=3).layout(num_timesteps, 4)
    return layout.attention_mask, layout.attention_key_order


def random_qkv(size: int, seed: int = 0, grad: bool = False) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, size, 16, generator=generator).requires_grad_(grad) for _ in range(3)]


def test_the_chunked_kernel_gives_dense_outputs_and_gradients():
    mask, order = stack_delay_mask(60)
    plan = BlockSparseMask(mask, order, query_block=64, key_block=32)
    assert len(plan.chunks) > 1 and plan.scores_fraction < 0.6
    dense_inputs = random_qkv(mask.shape[0], grad=True)
    sparse_inputs = [t.detach().clone().requires_grad_() for t in dense_inputs]
    dense = F.scaled_dot_product_attention(*dense_inputs, attn_mask=mask)
    sparse = plan.attend(*sparse_inputs, kernel="chunked")
    assert (sparse - dense).abs().max() <= 1e-6
    weights = torch.randn_like(dense)
    (dense * weights).sum().backward()
    (sparse * weights).sum().backward()
    for a, b in zip(dense_inputs, sparse_inputs, strict=True):
        assert (a.grad - b.grad).abs().max() <= 1e-5


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(1, 90),
    query_block=st.integers(1, 40),
    key_block=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_any_mask_and_block_sizes_give_the_dense_output(size, query_block, key_block, seed):
    """The plan only skips key blocks no query of the chunk sees, whatever the mask."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(size, size, generator=generator) < 0.3
    mask |= torch.eye(size, dtype=torch.bool)  # every query sees a key
    order = torch.randperm(size, generator=generator)
    plan = BlockSparseMask(mask, order, query_block, key_block)
    q, k, v = random_qkv(size, seed)
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (plan.attend(q, k, v, kernel="chunked") - dense).abs().max() <= 1e-5


def test_the_key_order_makes_the_stack_layout_sparse():
    mask, order = stack_delay_mask(500)
    in_step_order = BlockSparseMask(mask, torch.arange(mask.shape[0]))
    planned = BlockSparseMask(mask, order)
    visible = mask.sum().item() / mask.numel()
    assert planned.scores_fraction < 0.25
    assert planned.scores_fraction < in_step_order.scores_fraction / 2
    assert planned.scores_fraction >= visible  # never fewer than the visible scores


def test_the_flex_kernel_gives_the_dense_output_without_gradients():
    """FlexAttention runs forward on CPU (it compiles once, a few seconds)."""
    mask, order = stack_delay_mask(60)
    plan = BlockSparseMask(mask, order)
    q, k, v = random_qkv(mask.shape[0])
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with torch.no_grad():
        assert (plan.attend(q, k, v, kernel="flex") - dense).abs().max() <= 1e-5


def test_clear_errors():
    mask, order = stack_delay_mask(10)
    with pytest.raises(ValueError, match="permutation"):
        BlockSparseMask(mask, order[:-1])
    with pytest.raises(ValueError, match="square bool"):
        BlockSparseMask(mask.float(), order)
    with pytest.raises(ValueError, match="at least one key"):
        BlockSparseMask(torch.zeros(3, 3, dtype=torch.bool), torch.arange(3))
    plan = BlockSparseMask(mask, order)
    q, k, v = random_qkv(mask.shape[0], grad=True)
    with pytest.raises(NotImplementedError, match="no backward on CPU"):
        plan.attend(q, k, v, kernel="flex")
    with pytest.raises(ValueError, match="no attention dropout"):
        plan.attend(q, k, v, dropout_p=0.1, kernel="flex")
    with pytest.raises(ValueError, match="covers"):
        plan.attend(q[:, :, :5], k, v)
    with pytest.raises(ValueError, match="kernel must be"):
        plan.attend(q, k, v, kernel="triton")
