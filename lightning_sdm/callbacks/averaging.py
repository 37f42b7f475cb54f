"""The averaged (EMA) weights of a run, whichever callback keeps them: Lightning's weight
averaging (a copy of the whole module) or TrainableEMA (the trainable weights, swapped in).
Callbacks that sample or evaluate ask here, and only here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging

from lightning_sdm.callbacks.trainable_ema import TrainableEMA


@contextlib.contextmanager
def averaged_weights(
    trainer: L.Trainer, pl_module: L.LightningModule
) -> Iterator[L.LightningModule]:
    """The module to read the averaged weights from for the duration (the module itself
    when no averaging runs).

    Lightning keeps its average in `_average_model` (an AveragedModel around a copy of the
    module) and offers no public accessor; reading it avoids swapping weights under the
    training loop.
    """
    module = pl_module
    for callback in trainer.callbacks:
        if isinstance(callback, WeightAveraging) and callback._average_model is not None:
            module = callback._average_model.module
    with contextlib.ExitStack() as stack:
        for callback in trainer.callbacks:
            if isinstance(callback, TrainableEMA):
                stack.enter_context(callback.averaged(module))
        yield module
