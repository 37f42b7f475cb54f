"""A size-bounded local folder of remote shards, so an epoch that reads a shard again does
not download it again."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from lightning_sdm.data.storage import ShardLocation, with_retries


@dataclass(frozen=True)
class ShardCache:
    """Whole shards by URL under `directory`, at most `max_bytes` in all (the least recently
    read go first; a shard larger than the bound is read straight from its URL). Safe for
    several workers and ranks on one machine: a copy appears under its name only once
    complete."""

    directory: Path
    max_bytes: int

    def file_for(self, url: str) -> Path:
        digest = hashlib.sha1(url.encode("utf-8")).hexdigest()[:16]
        return self.directory / f"{digest}-{url.rsplit('/', 1)[-1]}"

    def local_copy(self, url: str) -> Path | None:
        """The cached copy of `url` (downloaded on a miss); None when it cannot fit."""
        target = self.file_for(url)
        if target.is_file():
            os.utime(target)  # recently read: evicted last
            return target
        folder = url.rpartition("/")[0]
        location = ShardLocation(folder)
        size = with_retries(lambda: location.fs.size(url), url)
        if size is None or size > self.max_bytes:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.part")
        try:
            with_retries(lambda: location.fs.get_file(url, str(partial)), url)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        self._evict(keep=target)
        return target

    def _evict(self, keep: Path) -> None:
        """Remove the least recently read copies until the folder fits its bound."""
        copies = []
        for path in self.directory.iterdir():
            if path.suffix == ".part" or path == keep:
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # another worker evicted it
                continue
            copies.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in copies) + keep.stat().st_size
        for _, size, path in sorted(copies):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
