"""Save the trained codec as an EncodecModel directory when fitting ends (EMA weights)."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from lightning_sdm.atomic import write_directory
from lightning_sdm.errors import UserInputError


class SaveCodec(Callback):
    """Writes `save_pretrained` of the codec task's model, loadable as `codec.pretrained`.

    Runs after weight averaging has copied the EMA weights into the model (fit end), on
    rank 0. A `directory` that already holds a codec is left as it is unless `overwrite`:
    shards tokenized with that codec decode with it and no other, so a second run (another
    setting, a few test steps) replacing it silently would leave them undecodable and the
    codec gone. That run's codec goes to RUN/codec instead, and the run says so.

    Args:
        directory: Where to write; default RUN/codec.
        overwrite: Replace what `directory` holds (whole, and only once the new one is
            written).
    """

    def __init__(self, directory: str | None = None, overwrite: bool = False) -> None:
        super().__init__()
        self.directory = directory
        self.overwrite = overwrite
        self.saved: Path | None = None
        self.kept: Path | None = None  # the earlier codec at `directory`, when left alone

    def target(self, run_dir: str | Path) -> Path:
        return Path(self.directory) if self.directory else Path(run_dir) / "codec"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A `directory` that is a file is said before training, not after it."""
        if self.directory and Path(self.directory).exists() and not Path(self.directory).is_dir():
            raise UserInputError(
                f"SaveCodec's directory {self.directory} is a file: give a folder to save the "
                "codec in"
            )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # On every rank: trainer.log_dir broadcasts, which rank 0 alone must not do.
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)
        wanted = self.target(run_dir)
        # Rank 0 decides (another rank looking later would see rank 0's own codec there).
        occupied = trainer.strategy.broadcast(wanted.is_dir() and any(wanted.iterdir()))
        kept = occupied and not self.overwrite and wanted != run_dir / "codec"
        directory = run_dir / "codec" if kept else wanted
        if trainer.is_global_zero:
            write_directory(directory, pl_module.save_codec, overwrite=True, purpose="codec export")
            if kept:
                print(
                    f"{wanted} already holds a codec, left as it is (shards tokenized with it "
                    f"decode with it alone); this run's codec is at {directory} (SaveCodec's "
                    "overwrite: true replaces it)",
                    file=sys.stderr,
                    flush=True,
                )
        self.saved, self.kept = directory, wanted if kept else None
        trainer.strategy.barrier("save_codec")
