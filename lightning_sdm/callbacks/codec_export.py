"""Save the trained codec as an EncodecModel directory when fitting ends (EMA weights)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback


class SaveCodec(Callback):
    """Writes `save_pretrained` of the codec task's model, loadable as `codec.pretrained`.

    Runs after weight averaging has copied the EMA weights into the model (fit end), on
    rank 0.

    Args:
        directory: Where to write; default RUN/codec.
    """

    def __init__(self, directory: str | None = None) -> None:
        super().__init__()
        self.directory = directory
        self.saved: Path | None = None

    def target(self, run_dir: str | Path) -> Path:
        return Path(self.directory) if self.directory else Path(run_dir) / "codec"

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # On every rank: trainer.log_dir broadcasts, which rank 0 alone must not do.
        directory = self.target(trainer.log_dir or trainer.default_root_dir)
        if trainer.is_global_zero:
            pl_module.save_codec(directory)
        self.saved = directory
        trainer.strategy.barrier("save_codec")
