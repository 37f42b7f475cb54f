"""Which bytes a file holds, in 16 hex digits: names the weights that made an output, and
tells a model directory whose weights were replaced from the one something was trained over."""

from __future__ import annotations

import hashlib
from pathlib import Path

DIGEST_LIMIT = 1 << 30  # the first GB: cheap for large models, enough to tell two apart


def file_digest(path: Path, limit: int = DIGEST_LIMIT) -> str:
    """sha256 of the file's first `limit` bytes; of a folder's files in name order (a
    sharded checkpoint), not its subfolders."""
    digest = hashlib.sha256()
    remaining = limit
    files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path]
    for file in files:
        with file.open("rb") as handle:
            while remaining > 0 and (chunk := handle.read(min(1 << 20, remaining))):
                digest.update(chunk)
                remaining -= len(chunk)
    return digest.hexdigest()[:16]
