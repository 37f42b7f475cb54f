"""Find the audio items to tokenize: a folder with caption sidecars, a JSONL or a CSV manifest.

Discovery never raises on a bad item: it records why the item was rejected so a run
reports every problem at once and keeps every good item.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class Rejection:
    source: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason}


def sample_key(relative: Path) -> str:
    """A WebDataset-safe key: no dots (they start extensions), no directory separators."""
    stem = relative.with_suffix("").as_posix()
    return re.sub(r"[^A-Za-z0-9_\-]", "_", stem.replace("/", "__"))


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
        return path.read_bytes().decode("utf-8"), None
    except UnicodeDecodeError:
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


def from_folder(root: Path, allow_missing_captions: bool = False) -> list[SourceItem]:
    items = []
    for audio in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        caption, metadata, problem = _caption_from_sidecar(audio)
        if problem and problem.startswith("missing caption") and allow_missing_captions:
            caption, problem = "", None
        item = SourceItem(sample_key(audio.relative_to(root)), audio, caption, metadata, problem)
        items.append(_finish(item, allow_missing_captions))
    return items


def from_jsonl(manifest: Path, allow_missing_captions: bool = False) -> list[SourceItem]:
    """audiocraft's format: one {"path", "duration", "sample_rate", ...} per line.

    The caption comes from the info JSON beside the audio (same name, .json), as in audiocraft.
    """
    items = []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
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
        key = sample_key(_relative_or_name(path, manifest.parent))
        items.append(
            _finish(SourceItem(key, path, caption, metadata, problem), allow_missing_captions)
        )
    return items


def from_csv(manifest: Path, allow_missing_captions: bool = False) -> list[SourceItem]:
    """A CSV with a header holding at least `path` and `caption` columns."""
    items = []
    with manifest.open(newline="", encoding="utf-8") as handle:
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
            key = sample_key(_relative_or_name(path, manifest.parent))
            item = SourceItem(key, path, (row.get("caption") or "").strip(), metadata)
            items.append(_finish(item, allow_missing_captions))
    return items


def _relative_or_name(path: Path, root: Path) -> Path:
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        return Path(path.name)


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
        raise FileNotFoundError(f"input {source} does not exist")
    else:
        raise ValueError(f"input {source} must be a folder, a .jsonl or a .csv manifest")
    seen: set[str] = set()
    for item in items:
        if item.problem is None and item.key in seen:
            item.problem = f"duplicate key {item.key!r}"
        seen.add(item.key)
    return items
