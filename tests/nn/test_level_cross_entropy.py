import pytest
import torch
import torch.nn.functional as F

from lightning_sdm.nn.level_cross_entropy import level_cross_entropy
from tests.conftest import tiny_model

B, C, T, V, D = 3, 4, 7, 11, 5


def reference(hidden, weight, bias, targets):
    logits = torch.einsum("bctd,cvd->bctv", hidden, weight)
    if bias is not None:
        logits = logits + bias[:, None]
    losses = F.cross_entropy(logits.float().flatten(0, 2), targets.flatten(), reduction="none")
    return losses.view(targets.shape)


def inputs(seed: int, bias: bool):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, C, D, generator=generator).transpose(1, 2)  # not contiguous
    weight = torch.randn(C, V, D, generator=generator)
    head_bias = torch.randn(C, V, generator=generator) if bias else None
    targets = torch.randint(0, V, (B, C, T), generator=generator)
    leaves = [hidden.requires_grad_(), weight.requires_grad_()]
    if head_bias is not None:
        leaves.append(head_bias.requires_grad_())
    return hidden, weight, head_bias, targets, leaves


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_losses_and_gradients_equal_einsum_then_cross_entropy(seed, bias):
    hidden, weight, head_bias, targets, leaves = inputs(seed, bias)
    upstream = torch.rand(B, C, T, generator=torch.Generator().manual_seed(seed + 10))
    upstream[0, :, -2:] = 0  # padded frames: weight 0, as the task's mask gives them
    expected = reference(hidden, weight, head_bias, targets)
    fused = level_cross_entropy(hidden, weight, head_bias, targets)
    assert fused.dtype == torch.float32 and fused.shape == (B, C, T)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)
    want = torch.autograd.grad(expected, leaves, upstream)
    got = torch.autograd.grad(fused, leaves, upstream)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_under_bf16_autocast_products_run_in_bf16_and_gradients_keep_their_dtypes():
    hidden, weight, head_bias, targets, leaves = inputs(0, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = level_cross_entropy(hidden, weight, head_bias, targets)
        expected = reference(hidden, weight, head_bias, targets)
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, expected, rtol=2e-2, atol=2e-2)
    grads = torch.autograd.grad(fused.sum(), leaves)
    assert [g.dtype for g in grads] == [torch.float32] * 3
    want = torch.autograd.grad(reference(hidden, weight, head_bias, targets).sum(), leaves)
    for a, b in zip(grads, want, strict=True):
        assert (a - b).abs().max() < 0.05 * b.abs().max()


def test_a_frozen_head_gets_no_gradient_and_the_states_still_do():
    hidden, weight, _, targets, _ = inputs(0, False)
    frozen = weight.detach()
    (grad,) = torch.autograd.grad(level_cross_entropy(hidden, frozen, None, targets).sum(), hidden)
    (want,) = torch.autograd.grad(reference(hidden, frozen, None, targets).sum(), hidden)
    torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-5)


def test_a_second_backward_through_the_same_forward_is_refused_not_wrong():
    hidden, weight, head_bias, targets, _ = inputs(0, True)
    losses = level_cross_entropy(hidden, weight, head_bias, targets).sum()
    losses.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="retain_graph is not supported"):
        losses.backward()


@pytest.mark.parametrize(("pattern", "k"), [("delay", 1), ("stack_delay", 3), ("depth", 1)])
def test_every_lm_trains_on_the_loss_of_its_own_logits(pattern, k):
    model = tiny_model(pattern, k).train()
    codes = torch.randint(0, 16, (2, 4, 9), generator=torch.Generator().manual_seed(0))
    texts = ["a caption", ""]
    params = [p for p in model.lm.parameters() if p.requires_grad]
    logits = model(codes, texts)
    expected = F.cross_entropy(logits.flatten(0, 2), codes.flatten(), reduction="none")
    losses = model.token_losses(codes, texts)
    torch.testing.assert_close(losses, expected.view(codes.shape), rtol=1e-5, atol=1e-5)
    want = torch.autograd.grad(expected.mean(), params)
    got = torch.autograd.grad(losses.mean(), params)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
