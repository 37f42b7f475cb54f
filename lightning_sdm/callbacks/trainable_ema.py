"""An EMA of the trainable weights only: for a LoRA run, a copy of a few MB where Lightning's
`EMAWeightAveraging` keeps a copy of the whole model (frozen base included)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lightning_sdm.callbacks.ema import warmed_decay

CURRENT_KEY = "trainable_ema_current"  # the raw (not averaged) trainable weights
UPDATES_KEY = "trainable_ema_updates"  # how many updates the average holds (the ramp's n)


class TrainableEMA(Callback):
    """Averages the parameters that train; validation, samples, checkpoints' `state_dict`
    and `export` see the average, as with Lightning's weight averaging.

    Args:
        decay: The average keeps at most `decay` of itself per update.
        every_n_steps: Update every N optimizer steps.
        warmup: Ramp the decay up from the first update (`lightning_sdm.callbacks.ema`),
            so a short run's average is its recent weights; False: a fixed decay.
    """

    def __init__(self, decay: float = 0.999, every_n_steps: int = 1, warmup: bool = True) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.every_n_steps = every_n_steps
        self.warmup = warmup
        self.updates = 0
        self._latest_step = 0  # the optimizer step last averaged
        self.shadow: dict[str, torch.Tensor] = {}
        self._raw: dict[str, torch.Tensor] | None = None

    def _trainable(self, pl_module: L.LightningModule) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in pl_module.named_parameters() if p.requires_grad}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and not self.shadow:
            self.shadow = {n: p.detach().clone() for n, p in self._trainable(pl_module).items()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Once per optimizer step: with gradient accumulation this hook runs for every
        # micro-batch, and averaging the same weights N times made the decay d^N.
        step = trainer.global_step
        if step <= self._latest_step or step % self.every_n_steps:
            return
        self._latest_step = step
        decay = warmed_decay(self.decay, self.updates) if self.warmup else self.decay
        for name, parameter in self._trainable(pl_module).items():
            self.shadow[name].lerp_(parameter.detach(), 1 - decay)
        self.updates += 1

    @contextmanager
    def averaged(self, pl_module: L.LightningModule) -> Iterator[None]:
        """The average in the module for the duration (nested uses are no-ops)."""
        if self._raw is not None:
            yield
            return
        trainable = self._trainable(pl_module)
        self._raw = {n: p.detach().clone() for n, p in trainable.items()}
        try:
            with torch.no_grad():
                for name, parameter in trainable.items():
                    parameter.copy_(self.shadow[name])
            yield
        finally:
            with torch.no_grad():
                for name, parameter in trainable.items():
                    parameter.copy_(self._raw[name])
            self._raw = None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._validation = self.averaged(pl_module)
            self._validation.__enter__()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        validation = getattr(self, "_validation", None)
        if validation is not None:
            validation.__exit__(None, None, None)
            self._validation = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = checkpoint["state_dict"]
        raw = self._raw or {n: p.detach() for n, p in self._trainable(pl_module).items()}
        checkpoint[CURRENT_KEY] = {n: t.clone().cpu() for n, t in raw.items()}
        checkpoint[UPDATES_KEY] = self.updates
        for name, value in self.shadow.items():
            state[name] = value.clone().cpu()

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        current = checkpoint.get(CURRENT_KEY)
        if current is None:
            return
        # Checkpoints from before the count: one update per every_n_steps steps.
        updates = checkpoint.get(UPDATES_KEY)
        steps = checkpoint.get("global_step", 0)
        self.updates = updates if updates is not None else steps // self.every_n_steps
        self._latest_step = steps
        trainable = self._trainable(pl_module)
        with torch.no_grad():
            for name, parameter in trainable.items():
                self.shadow[name] = checkpoint["state_dict"][name].to(parameter).clone()
                parameter.copy_(current[name])
