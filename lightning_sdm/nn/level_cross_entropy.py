"""Level heads and cross-entropy fused into one autograd step.

The logits (B x C x T x V) are a training step's largest activation. Through `einsum` +
`F.cross_entropy` a step holds them several times over: the product, a contiguous copy for
the loss, the log-softmax, its gradient and a permuted copy for the heads' backward. Here
each level's logits are computed into one fp32 buffer that becomes the softmax in place and
then the logits' gradient in place, so one buffer is all the step holds. Written by hand
because PyTorch has no fused linear + cross-entropy on CPU.
"""

from __future__ import annotations

import torch

__all__ = ["level_cross_entropy"]


def level_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
) -> torch.Tensor:
    """Per-token cross-entropy of each level's head, fp32.

    hidden [B, C, T, D], weight [C, V, D], bias [C, V] or None, targets [B, C, T] ->
    losses [B, C, T]. Equal to `F.cross_entropy` over `einsum("bctd,cvd->bctv") + bias`
    (its gradients too), under autocast as well (the products run in autocast's dtype, the
    softmax in fp32).
    """
    batch, levels, frames, _ = hidden.shape
    by_level = hidden.transpose(0, 1).reshape(levels, batch * frames, -1)
    level_targets = targets.transpose(0, 1).reshape(levels, batch * frames)
    losses = _LevelCrossEntropy.apply(by_level, weight, bias, level_targets)
    return losses.view(levels, batch, frames).transpose(0, 1)


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    device = tensor.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return tensor.dtype


class _LevelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        """hidden [C, N, D], weight [C, V, D], bias [C, V], targets [C, N] -> losses [C, N]."""
        dtype = _compute_dtype(hidden)
        with torch.autocast(hidden.device.type, enabled=False):
            hidden_c, weight_c = hidden.to(dtype), weight.to(dtype)
            logits = torch.bmm(hidden_c, weight_c.transpose(1, 2)).float()
            if bias is not None:
                logits.add_(bias.float()[:, None])
            target_logits = logits.gather(-1, targets[..., None]).squeeze(-1)
            peak = logits.amax(dim=-1, keepdim=True)
            probs = logits.sub_(peak).exp_()  # in place: the one logits-sized buffer
            total = probs.sum(dim=-1, keepdim=True)
            probs.div_(total)
            losses = (peak + total.log()).squeeze(-1) - target_logits
        ctx.save_for_backward(hidden_c, weight_c, probs, targets)
        ctx.input_dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.backward_done = False
        return losses

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_losses: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        if ctx.backward_done:
            raise RuntimeError(
                "level_cross_entropy's backward reuses its buffer: it runs once per forward "
                "(retain_graph is not supported)"
            )
        ctx.backward_done = True
        hidden_c, weight_c, probs, targets = ctx.saved_tensors
        hidden_dtype, weight_dtype, bias_dtype = ctx.input_dtypes
        scale = grad_losses.float()[..., None]
        grad_logits = probs.mul_(scale)  # d loss / d logits = softmax − one-hot, scaled
        grad_logits.scatter_add_(-1, targets[..., None], -scale)
        grad_hidden = grad_weight = grad_bias = None
        low = grad_logits.to(hidden_c.dtype)
        if ctx.needs_input_grad[0]:
            grad_hidden = torch.bmm(low, weight_c).to(hidden_dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.bmm(low.transpose(1, 2), hidden_c).to(weight_dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_logits.sum(dim=1).to(bias_dtype)
        return grad_hidden, grad_weight, grad_bias, None
