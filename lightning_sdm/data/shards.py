"""WebDataset shards of token grids, written atomically, plus their sidecars and index.

A shard `shard-000042.tar` exists only once complete: it is written under a temporary
name and renamed. Its sidecar `shard-000042.json` (written first) lists its keys and
lengths, so resuming and indexing never need to open the tar files.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds

from lightning_sdm.codecs.identity import CodecIdentity
from lightning_sdm.data.storage import ShardLocation, is_url, open_shard
from lightning_sdm.errors import MissingFile

SHARD_FORMAT = "shard-{:06d}.tar"
INDEX_FILE = "index.json"
TEMP_SUFFIX = ".tmp"


@dataclass
class TokenizedItem:
    key: str
    codes: np.ndarray  # int16 [C, T]
    caption: str
    metadata: dict[str, Any]
    seconds: float
    source: str
    source_sample_rate: int
    latents: np.ndarray | None = None  # float16 [D, T]
    fingerprint: dict[str, Any] | None = None  # the source's path, size and mtime

    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[-1])

    def to_sample(self) -> dict[str, Any]:
        sample = {
            "__key__": self.key,
            "codes.npy": _npy_bytes(self.codes),
            "json": json.dumps(
                {
                    "caption": self.caption,
                    "metadata": self.metadata,
                    "seconds": self.seconds,
                    "num_frames": self.num_frames,
                    "source": self.source,
                    "source_sample_rate": self.source_sample_rate,
                },
                ensure_ascii=False,
                default=str,
            ).encode("utf-8"),
        }
        if self.latents is not None:
            sample["latents.npy"] = _npy_bytes(self.latents)
        return sample


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_json_atomic(path: Path, data: Any) -> None:
    temp = path.with_name(path.name + TEMP_SUFFIX)
    temp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(temp, path)


@dataclass
class _OpenShard:
    number: int
    temp_path: Path
    handle: Any
    writer: wds.TarWriter
    keys: list[str] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    sources: list[dict[str, Any] | None] = field(default_factory=list)
    seconds: float = 0.0
    bytes: int = 0


class ShardWriter:
    """Fills shards up to `max_items` or `max_bytes` and publishes each one atomically."""

    def __init__(
        self,
        directory: Path,
        numbers: Iterator[int],
        max_items: int,
        max_bytes: int,
        codec_identity: CodecIdentity,
        on_publish: Callable[[str], None] | None = None,
    ) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("shards need max_items >= 1 and max_bytes >= 1")
        self.directory = directory
        self.numbers = numbers
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.codec_identity = codec_identity
        self.on_publish = on_publish  # called with each published shard's name
        self.written: list[str] = []
        self._open: _OpenShard | None = None

    def write(self, item: TokenizedItem) -> None:
        sample = item.to_sample()
        size = sum(len(v) for k, v in sample.items() if k != "__key__")
        current = self._open
        if current is not None and current.keys and current.bytes + size > self.max_bytes:
            self.finish()
        current = self._open or self._start()
        current.writer.write(sample)
        current.keys.append(item.key)
        current.frames.append(item.num_frames)
        current.sources.append(item.fingerprint)
        current.seconds += item.seconds
        current.bytes += size
        if len(current.keys) >= self.max_items:
            self.finish()

    def _start(self) -> _OpenShard:
        number = next(self.numbers)
        temp_path = self.directory / (SHARD_FORMAT.format(number) + TEMP_SUFFIX)
        handle = temp_path.open("wb")
        self._open = _OpenShard(number, temp_path, handle, wds.TarWriter(handle, encoder=False))
        return self._open

    def finish(self) -> None:
        """Publish the open shard: sidecar first, then the tar under its final name."""
        current, self._open = self._open, None
        if current is None:
            return
        current.writer.close()
        current.handle.close()
        name = SHARD_FORMAT.format(current.number)
        write_json_atomic(
            self.directory / sidecar_name(name),
            {
                "shard": name,
                "keys": current.keys,
                "sample_frames": current.frames,
                "sources": current.sources,
                "num_samples": len(current.keys),
                "num_frames": int(sum(current.frames)),
                "audio_seconds": current.seconds,
                "codec": self.codec_identity.to_dict(),
            },
        )
        os.replace(current.temp_path, self.directory / name)
        self.written.append(name)
        if self.on_publish is not None:
            self.on_publish(name)

    def abandon(self) -> None:
        """Drop the open shard (its items were never published and will be redone)."""
        current, self._open = self._open, None
        if current is not None:
            current.handle.close()
            current.temp_path.unlink(missing_ok=True)


def sidecar_name(shard_name: str) -> str:
    return shard_name.removesuffix(".tar") + ".json"


def shard_number(name: str) -> int:
    return int(name.removeprefix("shard-").removesuffix(".tar"))


def clean_incomplete(directory: Path) -> list[str]:
    """Remove what a killed run left behind: temporary files and sidecars without a shard."""
    removed = []
    for temp in directory.glob(f"*{TEMP_SUFFIX}"):
        temp.unlink()
        removed.append(temp.name)
    for sidecar in directory.glob("shard-*.json"):
        if not (directory / (sidecar.stem + ".tar")).exists():
            sidecar.unlink()
            removed.append(sidecar.name)
    return removed


def completed_shards(directory: Path) -> list[dict[str, Any]]:
    """Sidecars of every published shard, in shard order."""
    shards = []
    for tar in sorted(directory.glob("shard-*.tar")):
        sidecar = directory / sidecar_name(tar.name)
        if not sidecar.is_file():
            raise RuntimeError(f"{tar} has no sidecar {sidecar.name}; the output folder is damaged")
        shards.append(json.loads(sidecar.read_text(encoding="utf-8")))
    return shards


def published_shards(location: ShardLocation) -> list[dict[str, Any]]:
    """Sidecars of every published shard of a folder or URL, in shard order. At a URL a
    sidecar is uploaded after its shard, so a sidecar there means a whole shard."""
    if not location.remote:
        folder = Path(location.location)
        return completed_shards(folder) if folder.is_dir() else []
    names = [n for n in location.names("shard-*.json") if n.startswith("shard-")]
    return [location.read_json(name) for name in names]


def load_index(directory: Path) -> dict[str, Any]:
    path = Path(directory) / INDEX_FILE
    if not path.is_file():
        raise MissingFile(f"{path} not found: run `lightning-sdm tokenize` to make shards")
    return json.loads(path.read_text(encoding="utf-8"))


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A raw tar sample -> key, codes int16 [C, T], info dict (and latents if stored)."""
    decoded = {
        "key": sample["__key__"],
        "codes": np.load(io.BytesIO(sample["codes.npy"]), allow_pickle=False),
        "info": json.loads(sample["json"]),
    }
    if "latents.npy" in sample:
        decoded["latents"] = np.load(io.BytesIO(sample["latents.npy"]), allow_pickle=False)
    return decoded


def read_shard(path: Path | str) -> Iterator[dict[str, Any]]:
    """Decoded samples of one shard (a local path or a URL), in order, streamed."""
    with open_shard(str(path)) as stream:
        files = wds.tariterators.tar_file_expander([{"stream": stream, "url": str(path)}])
        for sample in wds.tariterators.group_by_keys(files):
            yield decode_sample(sample)


def shard_problem(path: str | Path, expected_samples: int | None = None) -> str | None:
    """Why a shard cannot be read whole, from its member headers alone (no data is read):
    a truncated or corrupt tar, or fewer samples than its index says. None when sound."""
    path = Path(path)
    try:
        size = path.stat().st_size
        keys: set[str] = set()
        with tarfile.open(path, "r:") as archive:
            for member in archive:
                if member.offset_data + member.size > size:
                    return f"truncated: {member.name} ends past the file's {size} bytes"
                keys.add(member.name.split(".", 1)[0])
    except (tarfile.TarError, OSError, EOFError) as error:
        return f"unreadable tar ({error})"
    if expected_samples is not None and len(keys) != expected_samples:
        return f"holds {len(keys)} samples, its index says {expected_samples}"
    return None


def read_shard_resilient(
    path: Path | str, retries: int = 1, on_failure: Any = None, backoff: float = 0.0
) -> Iterator[dict[str, Any]]:
    """`read_shard`, read again (past what was already given, so nothing is given twice)
    when it fails, after `backoff * 2**attempt` seconds; after `retries` failures
    `on_failure(path, error)` decides: it returns to skip the rest of the shard, or
    raises."""
    given = 0
    where = path if is_url(path) else Path(path)
    for attempt in range(retries + 1):
        try:
            for index, sample in enumerate(read_shard(where)):
                if index >= given:
                    given += 1
                    yield sample
            return
        except Exception as error:  # tar, npy, JSON and network errors alike
            if attempt == retries:
                if on_failure is None:
                    raise
                on_failure(path, error)
                return
            time.sleep(backoff * 2**attempt)
