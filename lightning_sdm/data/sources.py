"""Find the audio items to tokenize: a folder with caption sidecars, a JSONL or a CSV manifest.

Discovery never raises on a bad item: it records why the item was rejected so a run
reports every problem at once and keeps every good item.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_sdm.errors import MissingFile, UserInputError
from lightning_sdm.text_files import decode_user_text, read_user_text

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
# Fields of audiocraft's info JSON that describe the music, in caption order.
INFO_FIELDS = ("genre", "moods", "keywords", "instrument", "key", "bpm")


@dataclass
class SourceItem:
    key: str
    path: Path
    caption: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # why the item cannot be used, if it cannot
    # The path relative to the input's folder (absolute for files outside it): what names
    # the source across runs, so a moved catalogue is still recognised.
    relative: str = ""

    def fingerprint(self) -> dict[str, Any]:
        """What "the same source" means to a rerun: its path, size and modification time."""
        try:
            stat = self.path.stat()
        except OSError:
            return {"path": self.relative}
        return {"path": self.relative, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def with_distinct_key(self) -> None:
        """Add a short hash of the source path, for keys that would collide otherwise."""
        if not self.key.endswith(path_hash(self.relative)):
            self.key = f"{self.key}-{path_hash(self.relative)}"


@dataclass
class Rejection:
    source: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason}


def path_hash(relative: str) -> str:
    return hashlib.sha1(relative.encode("utf-8")).hexdigest()[:8]


def legacy_key(relative: str) -> str:
    """Keys of shard folders written before keys were made injective (ASCII only); files
    outside a manifest's folder were keyed by their name."""
    path = Path(relative)
    stem = (Path(path.name) if path.is_absolute() else path).with_suffix("").as_posix()
    return re.sub(r"[^A-Za-z0-9_\-]", "_", stem.replace("/", "__"))


def sample_key(relative: Path) -> str:
    """A WebDataset-safe key: no dots (they start extensions), no directory separators.

    Letters and digits of any script stay (`音楽.wav` -> `音楽`, `a/b.wav` -> `a__b`); whenever
    a character had to change (`rock song.wav`), a hash of the path follows, so distinct
    paths do not share a key (`rock_song-1a2b3c4d` vs `rock_song-5e6f7a8b` for
    `rock.song.wav`). Keys that still meet (`x.wav`, `x.flac`) are told apart by
    `make_keys_distinct`.
    """
    joined = relative.with_suffix("").as_posix().replace("/", "__")  # folders: a/b -> a__b
    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in joined)
    return safe if safe == joined else f"{safe}-{path_hash(relative.as_posix())}"


def caption_from_info(info: dict[str, Any]) -> str:
    """The text condition: the description, else the descriptive fields joined."""
    for name in ("description", "caption", "text", "prompt"):  # prompt: generate's sidecars
        value = info.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    parts = []
    for name in INFO_FIELDS:
        value = info.get(name)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value if v)
        if value not in (None, "", []):
            parts.append(f"{name}: {value}")
    return ", ".join(parts)


def _read_text(path: Path) -> tuple[str | None, str | None]:
    """(text, problem)."""
    try:
        return decode_user_text(path.read_bytes(), path.name), None
    except UserInputError:
        return None, f"caption file {path.name} is not UTF-8"
    except OSError as error:
        return None, f"caption file {path.name} unreadable: {error}"


def _caption_from_sidecar(audio: Path) -> tuple[str | None, dict[str, Any], str | None]:
    """The .txt caption wins when both exist; the .json still gives the metadata."""
    text_path, json_path = audio.with_suffix(".txt"), audio.with_suffix(".json")
    caption, metadata, problem = None, {}, None
    if json_path.is_file():
        caption, metadata, problem = _caption_from_info_file(json_path)
    if text_path.is_file():
        text, text_problem = _read_text(text_path)
        return (text.strip() if text else None), metadata, text_problem or problem
    if json_path.is_file():
        return caption, metadata, problem
    return None, {}, "missing caption (no .txt or .json sidecar)"


def _caption_from_info_file(json_path: Path) -> tuple[str | None, dict[str, Any], str | None]:
    text, problem = _read_text(json_path)
    if problem:
        return None, {}, problem
    try:
        info = json.loads(text or "")
    except json.JSONDecodeError as error:
        return None, {}, f"caption file {json_path.name} is not valid JSON: {error.msg}"
    if not isinstance(info, dict):
        return None, {}, f"caption file {json_path.name} does not hold a JSON object"
    return caption_from_info(info), info, None


def _finish(item: SourceItem, allow_missing_captions: bool) -> SourceItem:
    if item.problem is None and not item.caption:
        if allow_missing_captions:
            item.caption = ""
        else:
            item.problem = item.problem or "empty caption"
    return item


def _walk_audio(root: Path) -> tuple[list[Path], list[SourceItem]]:
    """Audio files under `root`, and a rejection for each folder that cannot be read
    (`Path.rglob` passes over those in silence)."""
    unreadable: list[SourceItem] = []

    def report(error: OSError) -> None:
        folder = Path(error.filename or root)
        reason = f"unreadable folder: {error.strerror or error}"
        unreadable.append(SourceItem("", folder, problem=reason, relative=str(folder)))

    found: list[Path] = []
    visited: set[str] = set()  # real paths: a symlink loop is walked once
    for folder, subfolders, names in os.walk(root, onerror=report, followlinks=True):
        visited.add(os.path.realpath(folder))
        subfolders[:] = [
            name for name in subfolders if os.path.realpath(Path(folder) / name) not in visited
        ]
        found += [Path(folder) / n for n in names if Path(n).suffix.lower() in AUDIO_SUFFIXES]
    return sorted(found), unreadable


def from_folder(root: Path, allow_missing_captions: bool = False) -> list[SourceItem]:
    """A file reached twice through links (a track linked into two genre folders) is
    tokenized once: a second copy in the shards would weigh it double in training."""
    audio_files, items = _walk_audio(root)
    first_name: dict[tuple[int, int], Path] = {}  # (device, inode) -> first name found
    for audio in audio_files:
        caption, metadata, problem = _caption_from_sidecar(audio)
        if problem and problem.startswith("missing caption") and allow_missing_captions:
            caption, problem = "", None
        relative = audio.relative_to(root)
        identity = _file_identity(audio)
        if identity in first_name:
            problem = f"duplicate: the same file as {first_name[identity].as_posix()} (a link)"
        elif identity is not None:
            first_name[identity] = relative
        item = SourceItem(sample_key(relative), audio, caption, metadata, problem)
        item.relative = relative.as_posix()
        items.append(_finish(item, allow_missing_captions))
    return items


def _file_identity(path: Path) -> tuple[int, int] | None:
    """The same for every name of one file (symbolic and hard links); None when it cannot
    be read (a broken link: reported when its audio is read)."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def from_jsonl(manifest: Path, allow_missing_captions: bool = False) -> list[SourceItem]:
    """audiocraft's format: one {"path", "duration", "sample_rate", ...} per line.

    The caption comes from the info JSON beside the audio (same name, .json), as in audiocraft.
    """
    items = []
    for number, line in enumerate(read_user_text(manifest).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            path = Path(entry["path"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            items.append(
                SourceItem(
                    f"line{number}", manifest, problem=f"bad manifest line {number}: {error}"
                )
            )
            continue
        path = path if path.is_absolute() else manifest.parent / path
        info_path = path.with_suffix(".json")
        caption, info, problem = None, {}, f"missing caption (no info file {info_path.name})"
        if info_path.is_file():
            caption, info, problem = _caption_from_info_file(info_path)
        if problem and problem.startswith("missing caption") and allow_missing_captions:
            caption, problem = "", None
        metadata = {**{k: v for k, v in entry.items() if k != "path"}, **info}
        item = _manifest_item(path, manifest, caption, metadata, problem)
        items.append(_finish(item, allow_missing_captions))
    return items


def from_csv(manifest: Path, allow_missing_captions: bool = False) -> list[SourceItem]:
    """A CSV with a header holding at least `path` and `caption` columns."""
    items = []
    with io.StringIO(read_user_text(manifest), newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "caption"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{manifest} needs columns path and caption; missing {sorted(missing)}"
            )
        for row in reader:
            path = Path(row["path"])
            path = path if path.is_absolute() else manifest.parent / path
            metadata = {k: v for k, v in row.items() if k not in ("path", "caption") and v}
            caption = (row.get("caption") or "").strip()
            item = _manifest_item(path, manifest, caption, metadata, None)
            items.append(_finish(item, allow_missing_captions))
    return items


def _manifest_item(
    path: Path,
    manifest: Path,
    caption: str | None,
    metadata: dict[str, Any],
    problem: str | None,
) -> SourceItem:
    """Keyed by the path relative to the manifest's folder, or by the name for files
    elsewhere (then named by their absolute path, so equal names stay distinct sources)."""
    try:
        relative = path.resolve().relative_to(manifest.parent.resolve())
        identity = relative.as_posix()
    except ValueError:
        relative, identity = Path(path.name), path.resolve().as_posix()
    item = SourceItem(sample_key(relative), path, caption, metadata, problem)
    item.relative = identity
    return item


def make_keys_distinct(items: list[SourceItem]) -> None:
    """The same source listed twice is a duplicate; distinct sources whose keys collide
    (`x.wav` and `x.flac`, a file outside a manifest's folder named like one inside) each
    get a hash of their path."""
    by_key: dict[str, list[SourceItem]] = {}
    for item in items:
        if item.problem is None:
            by_key.setdefault(item.key, []).append(item)
    for sharing in by_key.values():
        first_of_source: dict[str, SourceItem] = {}
        for item in sharing:
            if item.relative in first_of_source:
                item.problem = f"duplicate entry of {item.relative} (key {item.key!r})"
            else:
                first_of_source[item.relative] = item
        if len(first_of_source) > 1:
            for item in first_of_source.values():
                item.with_distinct_key()


def discover(source: str | Path, allow_missing_captions: bool = False) -> list[SourceItem]:
    """Items from a folder, a .jsonl or a .csv manifest; duplicate keys are marked."""
    source = Path(source)
    if source.is_dir():
        items = from_folder(source, allow_missing_captions)
    elif source.suffix == ".jsonl":
        items = from_jsonl(source, allow_missing_captions)
    elif source.suffix == ".csv":
        items = from_csv(source, allow_missing_captions)
    elif not source.exists():
        raise MissingFile(f"input {source} does not exist")
    else:
        raise ValueError(f"input {source} must be a folder, a .jsonl or a .csv manifest")
    make_keys_distinct(items)
    return items
