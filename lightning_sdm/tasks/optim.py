"""AdamW with the paper's settings and a linear warm-up into a cosine decay."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def build_optimizer(
    module: nn.Module, config: OptimConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(
        parameter_groups(module, config.weight_decay),
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(step, config.warmup_steps, total_steps, config.min_lr_ratio),
    )
    return optimizer, schedule
