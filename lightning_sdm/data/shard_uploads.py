"""Tokenizing into a bucket: shards are written in a local staging folder as for a local
output, and each published shard goes up as soon as it is whole."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from lightning_sdm.data.shards import sidecar_name
from lightning_sdm.data.storage import ShardLocation


class ShardUploader:
    """Uploads each published shard to a URL: the tar first, then its sidecar (a sidecar
    at the URL is what marks a shard whole there, for resuming and for the index), then
    frees the local copies so staging never holds more than the open shard."""

    def __init__(self, location: ShardLocation, staging: Path | None = None) -> None:
        self.location = location
        self.staging = staging or Path(tempfile.mkdtemp(prefix="lightning-sdm-tokenize-"))
        self.uploaded: list[str] = []

    def __call__(self, shard: str) -> None:
        self.put(shard)
        self.put(sidecar_name(shard))
        self.uploaded.append(shard)

    def put(self, name: str) -> None:
        """One file of the staging folder to the URL, then gone from staging."""
        local = self.staging / name
        self.location.upload(local, name)
        local.unlink()

    def remove_staging(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
