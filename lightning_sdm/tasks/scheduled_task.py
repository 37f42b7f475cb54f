"""What the LM and diffusion tasks share in training: one AdamW over `model` on the
warm-up + cosine schedule, stepped per optimizer step, and the gradient norm logged."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import grad_norm
from torch import nn

from lightning_sdm.tasks.optim import OptimConfig, build_optimizer


class ScheduledAdamWTask(L.LightningModule):
    """Subclasses set `self.model` and `self.optim_config` in their __init__."""

    model: nn.Module
    optim_config: OptimConfig

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        norms = grad_norm(self.model, norm_type=2)
        if "grad_2.0_norm_total" in norms:
            self.log("train/grad_norm", norms["grad_2.0_norm_total"])

    def configure_optimizers(self) -> dict[str, Any]:
        total = int(self.trainer.estimated_stepping_batches)
        optimizer, schedule = build_optimizer(self.model, self.optim_config, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
