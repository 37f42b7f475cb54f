"""`lightning-sdm fit|validate|test|predict`: LightningCLI over the LM task and token shards."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_only

from lightning_sdm.callbacks.samples import SampleGeneration
from lightning_sdm.data.datamodule import TokenShardsDataModule
from lightning_sdm.tasks.lm_task import TextToMusicTask
from lightning_sdm.tracking import default_logger

SUBCOMMANDS = ("fit", "validate", "test", "predict")


class LogConfigToLoggers(SaveConfigCallback):
    """Writes config.yaml beside the logs (as Lightning does) and logs it to the trackers."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = self.parser.dump(self.config, skip_none=False, format="json")
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": json.loads(config)})


class RunSummary(Callback):
    """Says where the run's checkpoints, samples and logs are when fitting ends."""

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        lines = ["", "Run finished:"]
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and getattr(checkpoint, "dirpath", None):
            last = getattr(checkpoint, "last_model_path", "") or "(none)"
            lines.append(f"  checkpoints: {checkpoint.dirpath}  (last: {last})")
        for callback in trainer.callbacks:
            if isinstance(callback, SampleGeneration) and callback.written:
                lines.append(f"  samples:     {Path(callback.written[-1]).parent}")
        for logger in trainer.loggers:
            where = getattr(logger, "log_dir", None) or logger.save_dir
            lines.append(f"  logs:        {where} ({type(logger).__name__})")
        print("\n".join(lines))


class SdmCLI(LightningCLI):
    """LightningCLI with our default tracker and safe checkpoint loading."""

    @staticmethod
    def _safely(method: Any, **kwargs: Any) -> Any:
        # Our checkpoints hold tensors and plain types only, so they load with weights_only.
        if kwargs.get("weights_only") is None:
            kwargs["weights_only"] = True
        return method(**kwargs)

    def fit(self, **kwargs: Any) -> Any:
        return self._safely(self.trainer.fit, **kwargs)

    def validate(self, **kwargs: Any) -> Any:
        return self._safely(self.trainer.validate, **kwargs)

    def test(self, **kwargs: Any) -> Any:
        return self._safely(self.trainer.test, **kwargs)

    def predict(self, **kwargs: Any) -> Any:
        return self._safely(self.trainer.predict, **kwargs)

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer_config = self._get(self.config_init, "trainer", default={})
        if trainer_config.get("logger") in (None, True):
            root = trainer_config.get("default_root_dir") or os.getcwd()
            kwargs["logger"] = default_logger(root)
        return super().instantiate_trainer(**kwargs)


def run_training_cli(argv: Sequence[str] | None) -> SdmCLI:
    return SdmCLI(
        TextToMusicTask,
        TokenShardsDataModule,
        args=None if argv is None else list(argv),
        save_config_callback=LogConfigToLoggers,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [RunSummary()]},
        seed_everything_default=0,
    )
