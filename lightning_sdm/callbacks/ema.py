"""EMA whose decay ramps up from the first update, so a short run's average is its recent
weights and not its starting ones.

With a fixed decay d the average keeps d^n of the weights of its first update after n
updates: a 1000-step fine-tune at d = 0.999 exported an adapter that had moved 37 % of the
way its training went (a linear drift), and its samples along the run showed less still.
The ramp `min(d, (1 + n) / (10 + n))` (TensorFlow's `num_updates` form) averages over about
the last tenth of the updates until that is longer than d's own horizon, then is plain d:
long runs end as before.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch import Tensor


def warmed_decay(decay: float, updates: int) -> float:
    """The decay of the update after `updates` earlier ones."""
    return min(decay, (1 + updates) / (10 + updates))


class WarmupEMA(EMAWeightAveraging):
    """Lightning's `EMAWeightAveraging` (a copy of the whole module, swapped in for
    validation, saved as the checkpoint's weights) with the decay ramped up.

    Args:
        decay: The average keeps at most `decay` of itself per update.
        warmup: Ramp the decay up from the first update (False: a fixed decay from the start,
            as Lightning's own callback).
        update_every_n_steps: Update every N optimizer steps.
        update_starting_at_step: First step to update at (default: the first).
        update_starting_at_epoch: First epoch to update at.
        device: Where the average lives (default: the module's device; "cpu" saves GPU memory).
        use_buffers: Average the buffers too.
    """

    def __init__(
        self,
        decay: float = 0.999,
        warmup: bool = True,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
    ) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        super().__init__(
            device=device,
            use_buffers=use_buffers,
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
            update_starting_at_epoch=update_starting_at_epoch,
        )
        if warmup:  # AveragedModel copies at its first update, then calls this with n >= 1
            self._kwargs.update(avg_fn=None, multi_avg_fn=_warmed_average(decay))


def _warmed_average(decay: float) -> Any:
    """torch's EMA over lists of tensors (one call per device and dtype), decay ramped."""

    @torch.no_grad()
    def average(averaged: list[Tensor], current: list[Tensor], updates: Tensor) -> None:
        weight = 1 - warmed_decay(decay, int(updates))
        if torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0]):
            torch._foreach_lerp_(averaged, current, weight)
        else:  # integer buffers, as torch's own EMA treats them
            for mean, value in zip(averaged, current, strict=True):
                mean.copy_(mean * (1 - weight) + value * weight)

    return average
