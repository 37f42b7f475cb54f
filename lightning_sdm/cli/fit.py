"""`lightning-sdm fit|validate|test|predict`: LightningCLI over the LM task and token shards."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lightning_sdm.atomic import remove_partials
from lightning_sdm.callbacks.codec_export import SaveCodec
from lightning_sdm.callbacks.metrics_plot import MetricsPlot
from lightning_sdm.callbacks.precision_check import SlowPrecisionCheck
from lightning_sdm.callbacks.preemption import ResumableRun
from lightning_sdm.callbacks.progress import StepProgress
from lightning_sdm.callbacks.samples import SampleGeneration
from lightning_sdm.cli.parsing import ErrorFirst
from lightning_sdm.data.datamodule import TokenShardsDataModule
from lightning_sdm.errors import UserInputError, first_line
from lightning_sdm.ranks import is_first_process
from lightning_sdm.runs.checkpoints import AtomicCheckpointIO, require_readable
from lightning_sdm.runs.plan import RUN_DIR_ENV, RunPlan, plan_run
from lightning_sdm.runs.tracking import METRICS_FILE, run_loggers
from lightning_sdm.tasks.lm_task import TextToMusicTask
from lightning_sdm.tasks.text_conditioned import TextConditionedTask

SUBCOMMANDS = ("fit", "validate", "test", "predict")
UNSHARDED_AVERAGING_WARNING = r".*WeightAveraging callback with a model that overrides"


class LogConfigToLoggers(SaveConfigCallback):
    """Writes config.yaml beside the logs (as Lightning does) and logs it to the trackers."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = self.parser.dump(self.config, skip_unset=False, format="json")
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": json.loads(config)})


class RefuseUnaskedRandomWeights(Callback):
    """fit stops before the first step when the text encoder or the shards' codec is random
    and the config did not ask for it (`pretrained: random`): it would train on noise."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        reasons = []
        if isinstance(pl_module, TextConditionedTask):
            reasons += pl_module.random_weights_unasked()
        datamodule = getattr(trainer, "datamodule", None)
        if isinstance(datamodule, TokenShardsDataModule):
            reasons += [r for r in [datamodule.random_codec_unasked()] if r]
        if reasons:
            raise UserInputError(reasons[0])


class RunSummary(Callback):
    """Says where the run's checkpoints, samples and logs are when fitting ends."""

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # trainer.log_dir broadcasts across ranks, which a rank-0-only hook must not do.
        csv_dirs = [lg.log_dir for lg in trainer.loggers if isinstance(lg, CSVLogger)]
        run_dir = csv_dirs[0] if csv_dirs else trainer.default_root_dir
        lines = ["", f"Run finished at step {trainer.global_step}: {run_dir}"]
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and getattr(checkpoint, "dirpath", None):
            last = getattr(checkpoint, "last_model_path", "")
            newest = last or getattr(checkpoint, "best_model_path", "")  # no save_last
            said = f"last: {last}" if last else f"newest: {newest}" if newest else "none saved"
            lines.append(f"  checkpoints: {checkpoint.dirpath}  ({said})")
        for callback in trainer.callbacks:
            if isinstance(callback, SampleGeneration) and callback.written:
                lines.append(f"  samples:     {Path(callback.written[-1]).parent}")
            if isinstance(callback, SaveCodec):
                target = callback.saved or callback.target(run_dir)
                saved = getattr(trainer.lightning_module, "saved_format", "a codec directory")
                lines.append(f"  codec:       {target}  ({saved}; use as codec.pretrained)")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                offline = os.environ.get("WANDB_MODE", "offline") != "online"
                hint = " (offline: upload with `wandb sync`)" if offline else ""
                lines.append(f"  W&B:         {Path(logger.save_dir) / 'wandb'}{hint}")
            elif isinstance(logger, CSVLogger):
                csv_path = Path(logger.log_dir) / METRICS_FILE
                lines.append(f"  metrics:     {csv_path}  (plot: {csv_path.with_suffix('.png')})")
        print("\n".join(lines))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _with_step_progress(trainer_config: dict[str, Any]) -> list[Callback]:
    """The configured callbacks, plus our step progress unless a bar is configured or off."""
    callbacks = _as_list(trainer_config.get("callbacks"))
    wanted = trainer_config.get("enable_progress_bar") is not False
    if wanted and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(StepProgress())
    return callbacks


def _with_atomic_checkpoints(trainer_config: dict[str, Any]) -> list[Any]:
    """The configured plugins, plus our checkpoint writer unless one is configured."""
    plugins = _as_list(trainer_config.get("plugins"))
    strategy = trainer_config.get("strategy")
    has_own = getattr(strategy, "_checkpoint_io", None) is not None
    if not has_own and not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


@contextlib.contextmanager
def _exported_run_dir(run_dir: Path | None) -> Iterator[None]:
    """Ranks that Lightning spawns re-run this command: they must pick rank 0's run folder."""
    if run_dir is None:
        yield
        return
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous


# Lightning's own checks of trainer settings against the data (val_check_interval longer
# than an epoch, ...) raise plain ValueErrors from these places: they are the user's to fix.
_LIGHTNING_SETTING_CHECKS = ("lightning/pytorch/loops/", "lightning/pytorch/trainer/connectors/")


def _as_user_error(error: ValueError) -> ValueError:
    """A ValueError Lightning raised about a trainer setting becomes one line."""
    if isinstance(error, UserInputError):
        return error
    frames = traceback.extract_tb(error.__traceback__)
    innermost = frames[-1].filename.replace(os.sep, "/") if frames else ""
    if any(place in innermost for place in _LIGHTNING_SETTING_CHECKS):
        return UserInputError(" ".join(str(error).split()))
    return error


def _class_path(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


class SdmArgumentParser(ErrorFirst, LightningArgumentParser):
    """LightningCLI's parser with our error handling."""


def _finish_wandb(trainer: L.Trainer) -> None:
    """Close the W&B run: otherwise a second fit in the same process logs into the first."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger._experiment.finish()
            logger._experiment = None


class SdmCLI(LightningCLI):
    """LightningCLI with one folder per run, our trackers and safe checkpoint loading.

    Any task and DataModule can be named with `class_path` (the codec task trains on
    `AudioCropsDataModule`); without one, `model` and `data` configure the LM task and
    the token shards, so LM configs need no class paths.
    """

    run_plan: RunPlan | None = None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.set_defaults(
            {
                "model": {"class_path": _class_path(TextToMusicTask)},
                "data": {"class_path": _class_path(TokenShardsDataModule)},
            }
        )

    def _parse_ckpt_path(self) -> None:
        """Lightning would load the whole checkpoint here and put its model options over the
        ones given, silently (`--model.lm.pattern delay` resumed a stack-delay run as
        stack-delay; a new dropout was dropped), and only for a file, not for `last` or a
        folder of shards. The model is built from the config instead; the task checks it
        against the checkpoint's when the weights load (`TextConditionedTask`), and a torn
        or empty checkpoint is named in one line here."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():
            require_readable(ckpt_path)

    def _safely(self, method: Any, **kwargs: Any) -> Any:
        # Our checkpoints hold tensors and plain types only, so they load with weights_only.
        if kwargs.get("weights_only") is None:
            kwargs["weights_only"] = True
        if self.run_plan is not None:
            kwargs["ckpt_path"] = self.run_plan.ckpt_path
        ended = False
        try:
            with _exported_run_dir(self.run_plan.run_dir if self.run_plan else None):
                result = method(**kwargs)
            ended = True
            return result
        except ValueError as error:
            converted = _as_user_error(error)
            if converted is error:
                raise
            raise converted from error
        finally:
            _finish_wandb(self.trainer)
            if not ended:
                self._forget_unstarted_run()

    def _forget_unstarted_run(self) -> None:
        """A run that failed before its first step (a data folder without shards, a
        device it lacks) leaves no `version_N` of W&B stubs behind to be mistaken for a
        run; one that wrote a checkpoint, a metric or a sample is kept whole."""
        plan = self.run_plan
        if plan is None or not plan.made or plan.resumed or self.trainer.global_step > 0:
            return
        kept = [plan.checkpoint_dir, plan.run_dir / "samples", plan.run_dir / METRICS_FILE]
        if any(path.exists() for path in kept):
            return
        shutil.rmtree(plan.run_dir, ignore_errors=True)

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
        kwargs["plugins"] = _with_atomic_checkpoints(trainer_config)
        if trainer_config.get("logger") not in (None, True):  # the user's own trackers, folders
            # first: its end-of-training save precedes weight averaging's (see ResumableRun)
            kwargs["callbacks"] = [ResumableRun(), *_as_list(trainer_config.get("callbacks"))]
            trainer = self._trainer_from(kwargs, trainer_config)
            _quiet_unsharded_averaging(trainer)
            return trainer
        root = Path(trainer_config.get("default_root_dir") or os.getcwd())
        self.run_plan = plan = plan_run(root, self._get(self.config_init, "ckpt_path"))
        if is_first_process():  # what a kill during a save left behind
            remove_partials(plan.checkpoint_dir)
            remove_partials(plan.run_dir, of=METRICS_FILE)
        kwargs["logger"] = run_loggers(plan.run_dir)
        callbacks = _with_step_progress(trainer_config)
        kwargs["callbacks"] = [ResumableRun(plan.checkpoint_dir), *callbacks]
        trainer = self._trainer_from(kwargs, trainer_config)
        _quiet_unsharded_averaging(trainer)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(plan.checkpoint_dir)
        if plan.resumed and plan.ckpt_path:
            rank_zero_info(f"resuming {plan.run_dir} from {plan.ckpt_path}")
        elif self._get(self.config_init, "ckpt_path") == "last":
            rank_zero_info(f"no last checkpoint under {root} yet: starting {plan.run_dir}")
        return trainer

    def _trainer_from(self, kwargs: dict[str, Any], config: Any) -> L.Trainer:
        """Lightning's Trainer, with an accelerator, device count or strategy this machine
        cannot run as one line naming the trainer options, not a traceback."""
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ModuleNotFoundError) as error:
            chosen = ", ".join(
                f"{name} {config.get(name, 'auto')!r}"
                for name in ("accelerator", "devices", "strategy")
            )
            raise UserInputError(f"trainer ({chosen}): {first_line(error)}") from error


def _quiet_unsharded_averaging(trainer: L.Trainer) -> None:
    """Lightning warns that weight averaging cannot shard whenever a task defines
    `configure_model`, which ours do for FSDP; only a sharded run needs to hear it."""
    if not isinstance(trainer.strategy, ModelParallelStrategy):
        warnings.filterwarnings("ignore", message=UNSHARDED_AVERAGING_WARNING)


def run_training_cli(argv: Sequence[str] | None) -> SdmCLI:
    return SdmCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=None if argv is None else list(argv),
        parser_class=SdmArgumentParser,
        save_config_callback=LogConfigToLoggers,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "callbacks": [
                RefuseUnaskedRandomWeights(),
                SlowPrecisionCheck(),
                MetricsPlot(),
                RunSummary(),
            ]
        },
        seed_everything_default=0,
    )
