"""What the LM and diffusion tasks share in training: one AdamW over `model` on the
warm-up + cosine schedule, stepped per optimizer step, and the gradient norm logged."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_sdm.tasks.compiling import compile_blocks
from lightning_sdm.tasks.optim import (
    OptimConfig,
    build_optimizer,
    keep_optimizers_clippable,
    trainer_allows_fused,
)
from lightning_sdm.tasks.sharding import shard_blocks


def gradient_norm(model: nn.Module) -> torch.Tensor | None:
    """The global L2 norm of the gradients. Lightning's `grad_norm` cannot take sharded
    (DTensor) gradients; here each one's norm is reduced across ranks first."""
    norms = []
    for parameter in model.parameters():
        if parameter.grad is None:
            continue
        norm = torch.linalg.vector_norm(parameter.grad.detach().float())
        if hasattr(norm, "full_tensor"):  # a sharded gradient: its norm over all ranks
            norm = norm.full_tensor()
        norms.append(norm)
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else None


class ScheduledAdamWTask(L.LightningModule):
    """Subclasses set `self.model` and `self.optim_config` in their __init__, and name the
    model's repeated blocks in `shard_units` (FSDP's unit of sharding) and the methods
    other than `forward` their steps call on the model in `shard_entry_methods`."""

    model: nn.Module
    optim_config: OptimConfig
    shard_units: tuple[type[nn.Module], ...] = ()
    shard_entry_methods: tuple[str, ...] = ()  # model methods, besides forward, steps call
    compile_blocks: bool = False  # `model.compile`: the shard units compiled one by one

    def configure_model(self) -> None:
        """Under `ModelParallelStrategy` (FSDP2), shard the model one block at a time; with
        `compile_blocks`, then compile each block (`tasks.compiling`)."""
        if self.device_mesh is not None:
            shard_blocks(self.model, self.device_mesh, self.shard_units, self.shard_entry_methods)
        if self.compile_blocks:
            count = compile_blocks(self.model, self.shard_units)
            if count:
                rank_zero_info(
                    f"model.compile: {count} blocks compiled with torch.compile (the first "
                    "steps of training and of validation wait for the compiler)"
                )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        norm = gradient_norm(self.model)
        if norm is not None:
            self.log("train/grad_norm", norm)

    def on_train_start(self) -> None:
        keep_optimizers_clippable(self.trainer)  # after a checkpoint restored its optimizer

    def configure_optimizers(self) -> dict[str, Any]:
        total = int(self.trainer.estimated_stepping_batches)
        fused = trainer_allows_fused(self.trainer)
        optimizer, schedule = build_optimizer(self.model, self.optim_config, total, fused)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
