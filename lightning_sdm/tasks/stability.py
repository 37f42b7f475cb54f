"""Stop training on a non-finite loss, with the state from before the step saved."""

from __future__ import annotations

import lightning as L
import torch


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss was NaN or infinite."""


def stop_if_not_finite(module: L.LightningModule, loss: torch.Tensor) -> None:
    trainer = module.trainer
    not_finite = not bool(torch.isfinite(loss.detach()))
    if not trainer.strategy.reduce_boolean_decision(not_finite, all=False):
        return
    step = trainer.global_step
    folder = getattr(trainer.checkpoint_callback, "dirpath", None)
    folder = folder or f"{trainer.log_dir or trainer.default_root_dir}/checkpoints"
    path = f"{folder}/nonfinite-before-step{step}.ckpt"
    trainer.save_checkpoint(path, weights_only=False)  # the state before this step
    raise NonFiniteLossError(
        f"the training loss became {loss.item()} at step {step}; stopped. The state from "
        f"before this step is saved at {path}. Lower the learning rate, add gradient "
        "clipping (trainer.gradient_clip_val) or use bf16-mixed instead of 16-mixed."
    )
