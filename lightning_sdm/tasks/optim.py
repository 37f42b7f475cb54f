"""AdamW with the paper's settings and a linear warm-up into a cosine decay."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lightning_sdm.errors import UserInputError, require_positive


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    eps: float = 1e-8
    warmup_steps: int = 4000
    min_lr_ratio: float = 0.0  # the cosine ends at lr * min_lr_ratio

    def __post_init__(self) -> None:
        require_positive("optim", lr=self.lr, eps=self.eps)
        if self.lr > 1.0:
            raise UserInputError(
                f"optim.lr {self.lr} would diverge at once (AdamW steps each weight by about "
                "lr): use at most 1"
            )
        if not all(0 <= beta < 1 for beta in self.betas):
            raise UserInputError(f"optim.betas must lie in [0, 1), got {self.betas}")
        if not 0 <= self.weight_decay < float("inf") or self.warmup_steps < 0:
            raise UserInputError("optim.weight_decay and optim.warmup_steps cannot be negative")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserInputError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: no decay on norms, biases and embeddings."""
    decay, no_decay = [], []
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        # head_bias is [C, V]: a bias by role, so the name decides as well as the rank.
        if parameter.dim() < 2 or "embedding" in name or name.endswith("bias"):
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier at an optimizer step."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# Devices with PyTorch's fused AdamW kernel: one pass over each parameter instead of the
# foreach path's several (a third of the optimizer's time on a CPU).
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def fused_adamw_applies(groups: list[dict]) -> bool:
    """Plain floating tensors on a device with the fused kernel; sharded (DTensor) or other
    tensor subclasses take the default path."""
    parameters = [p for group in groups for p in group["params"]]
    return bool(parameters) and all(
        p.device.type in FUSED_ADAMW_DEVICES
        and p.is_floating_point()
        and type(p.data) is torch.Tensor
        for p in parameters
    )


def trainer_allows_fused(trainer: Any) -> bool:
    """Lightning refuses gradient clipping under mixed precision with an optimizer that
    unscales its own gradients, as the fused one does; such runs take the foreach path."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    clips = bool(trainer.gradient_clip_val)
    return not (clips and isinstance(trainer.precision_plugin, MixedPrecision))


def keep_optimizers_clippable(trainer: Any) -> None:
    """A run resumed with clipping under mixed precision from a checkpoint of a fused run:
    the checkpoint's param groups restore `fused=True`, which Lightning would refuse to clip.
    Switch those groups to the default path (same state, same update)."""
    if trainer_allows_fused(trainer):
        return
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            if group.get("fused"):
                group["fused"] = False


def build_optimizer(
    module: nn.Module, config: OptimConfig, total_steps: int, fused: bool = True
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (fused where the kernel exists and `fused` allows) on the warm-up + cosine
    schedule."""
    groups = parameter_groups(module, config.weight_decay)
    optimizer = torch.optim.AdamW(
        groups,
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        fused=(fused and fused_adamw_applies(groups)) or None,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(step, config.warmup_steps, total_steps, config.min_lr_ratio),
    )
    return optimizer, schedule
