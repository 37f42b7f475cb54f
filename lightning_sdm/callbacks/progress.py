"""Training progress by global step, for a terminal or for a log file.

Lightning's bars count batches per epoch (a step-bounded run shows `Epoch 199/-2`) and
print nothing until the end when stdout is a file. This one counts optimizer steps
against `max_steps`: a bar on a terminal; a line every few steps (and at least once a
minute) when stdout is redirected, as under nohup or SLURM.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar
from tqdm import tqdm


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class StepProgress(ProgressBar):
    """`every_n_steps` = 0 picks about 50 lines per run (at most one per 1000 steps);
    `every_seconds` bounds the silence between lines in a log file."""

    def __init__(
        self,
        every_n_steps: int = 0,
        every_seconds: float = 60.0,
        stream: TextIO | None = None,
        terminal: bool | None = None,
    ) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps
        self.every_seconds = every_seconds
        self._stream = stream
        self._terminal = terminal
        self._enabled = True
        self._bar: tqdm | None = None
        self._total = 0
        self._first_step = 0
        self._started = 0.0
        self._last_line = (0, 0.0)  # (step, time)

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    @property
    def is_terminal(self) -> bool:
        if self._terminal is not None:
            return self._terminal
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _interval(self) -> int:
        return self.every_n_steps or max(1, min(self._total // 50, 1000))

    def _metrics(self, trainer: L.Trainer) -> dict[str, float]:
        """What the task logs for the progress bar (`prog_bar=True`: the LM's cross-entropy,
        the DiT's MSE, the codec's loss and SI-SNR), training before validation."""
        shown = {
            name: float(value)
            for name, value in trainer.progress_bar_metrics.items()
            if "/" in name and not isinstance(value, str)
        }
        return dict(sorted(shown.items(), key=lambda item: not item[0].startswith("train/")))

    def _status(self, trainer: L.Trainer) -> str:
        step = trainer.global_step
        elapsed = time.perf_counter() - self._started
        rate = (step - self._first_step) / elapsed if elapsed > 0 else 0.0
        parts = [f"step {step}/{self._total} ({100 * step / max(self._total, 1):.0f}%)"]
        parts += [f"{name} {value:.3f}" for name, value in self._metrics(trainer).items()]
        parts.append(f"{rate:.2f} step/s")
        parts.append(f"elapsed {_duration(elapsed)}")
        if rate > 0:
            parts.append(f"ETA {_duration((self._total - step) / rate)}")
        return " | ".join(parts)

    def _write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        max_steps = trainer.max_steps
        self._total = max_steps if max_steps > 0 else int(trainer.estimated_stepping_batches)
        self._first_step = trainer.global_step
        self._started = time.perf_counter()
        self._last_line = (trainer.global_step, self._started)
        if not self._enabled or not trainer.is_global_zero:
            return
        if self.is_terminal:
            self._bar = tqdm(
                total=self._total,
                initial=trainer.global_step,
                desc="train",
                unit="step",
                dynamic_ncols=True,
                file=self.stream,
            )
        else:
            self._write(f"training from step {trainer.global_step} to {self._total}")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        step = trainer.global_step
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(
                {name.split("/")[0]: f"{v:.3f}" for name, v in self._metrics(trainer).items()},
                refresh=False,
            )
            return
        last_step, last_time = self._last_line
        now = time.perf_counter()
        due = step - last_step >= self._interval() or now - last_time >= self.every_seconds
        if step > last_step and (due or step >= self._total):
            self._write(self._status(trainer))
            self._last_line = (step, now)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled or trainer.sanity_checking or not trainer.is_global_zero:
            return
        values = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith("val/") and value.numel() == 1
        }
        shown = ", ".join(f"{name} {value:.4f}" for name, value in sorted(values.items()))
        self._write(f"validation at step {trainer.global_step}: {shown or 'no metrics'}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._last_line[0] != trainer.global_step:
            self._write(self._status(trainer))
