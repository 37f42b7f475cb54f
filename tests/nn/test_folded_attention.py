"""Cross-attention with folded projections is the same function as projecting queries and
outputs, in value and gradient, and runs only where it does at most half the work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_sdm.nn.attention import MultiHeadAttention
from lightning_sdm.nn.folded_attention import folded_attention, folding_pays


def unfolded(attention: MultiHeadAttention, x, context, mask) -> torch.Tensor:
    """The reference: project queries, SDPA, project outputs."""
    keys, values = attention.project_key_value(context)
    queries = attention.split_heads(attention.query(x))
    mixed = torch.nn.functional.scaled_dot_product_attention(queries, keys, values, mask)
    return attention.out(mixed.transpose(1, 2).flatten(-2))


def caption_mask(lengths: list[int], num_keys: int) -> torch.Tensor:
    return (torch.arange(num_keys) < torch.tensor(lengths)[:, None])[:, None, None, :]


@pytest.mark.parametrize("out_bias", [False, True])
@pytest.mark.parametrize("per_position_mask", [False, True])
def test_fold_equals_projections_in_value_and_gradient(out_bias, per_position_mask):
    torch.manual_seed(0)
    attention = MultiHeadAttention(64, 4, out_bias=out_bias)
    if out_bias:
        nn.init.normal_(attention.out.bias)
    x = torch.randn(3, 40, 64, requires_grad=True)
    context = torch.randn(3, 5, 64, requires_grad=True)
    mask = caption_mask([5, 2, 1], 5)
    if per_position_mask:  # a mask per query position, [B, 1, P, S]
        mask = mask.expand(3, 1, 40, 5).clone()
        mask[0, 0, :10, 1:] = False
    folded = attention.attend(x, *attention.project_key_value(context), mask)
    assert attention._folds(x, attention.project_key_value(context)[0], mask, False)
    reference = unfolded(attention, x, context, mask)
    torch.testing.assert_close(folded, reference, atol=1e-5, rtol=1e-5)

    grad = torch.randn_like(folded)
    params = [x, context, *attention.parameters()]
    got = torch.autograd.grad(folded, params, grad)
    want = torch.autograd.grad(reference, params, grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_fold_without_mask_and_under_bf16_autocast():
    torch.manual_seed(1)
    attention = MultiHeadAttention(64, 4)
    x, context = torch.randn(2, 30, 64), torch.randn(2, 3, 64)
    keys, values = attention.project_key_value(context)
    reference = unfolded(attention, x, context, None)
    torch.testing.assert_close(attention.attend(x, keys, values, None), reference)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = folded_attention(x, attention.query.weight, attention.out.weight, None, keys, values)
    torch.testing.assert_close(low.float(), reference, atol=0.05, rtol=0.05)


def test_folding_pays_only_for_a_short_context_and_a_long_sequence():
    # MusicGen-small's width and heads: a 4-token caption over 500 frames folds,
    assert folding_pays(num_heads=16, num_keys=4, dim=1024, positions=500)
    # a 64-token one (H·S = 1024 = D) does not, nor self-attention (S = P).
    assert not folding_pays(num_heads=16, num_keys=64, dim=1024, positions=500)
    assert not folding_pays(num_heads=8, num_keys=300, dim=512, positions=300)
    # nor a few positions, where folding S·D² costs more than it saves.
    assert not folding_pays(num_heads=8, num_keys=4, dim=512, positions=6)


def test_no_fold_where_it_would_change_the_function():
    torch.manual_seed(2)
    x, context = torch.randn(2, 40, 64), torch.randn(2, 3, 64)
    normed = MultiHeadAttention(64, 4, qk_norm=True)  # a norm of the queries is not linear
    keys, _ = normed.project_key_value(context)
    assert not normed._folds(x, keys, None, False)
    plain = MultiHeadAttention(64, 4)
    keys, _ = plain.project_key_value(context)
    assert plain._folds(x, keys, None, False)
    assert not plain._folds(x, keys, None, True)  # causal
    assert not plain._folds(x, keys, torch.zeros(2, 1, 1, 3), False)  # additive float mask
    plain.query = nn.Sequential(nn.Linear(64, 64, bias=False))  # a wrapped projection
    assert not plain._folds(x, keys, None, False)
