"""The pairs of a blind A/B test: two systems' wavs matched by the prompt they came from
(generate's JSON sidecars say which; a same-named .txt caption also does)."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import soundfile

from lightning_sdm.errors import UserInputError, first_line
from lightning_sdm.text_files import UTF8_WITH_OPTIONAL_MARK

SYSTEMS = ("A", "B")


@dataclass(frozen=True)
class Pair:
    pair_id: str  # stable across restarts: the prompt and its occurrence
    prompt: str
    wavs: dict[str, Path]  # system ("A"/"B") -> wav
    # system -> `audio_digest` of its wav when the test was paired: what raters hear, so
    # an answer names the audio it judged and a file regenerated since is noticed.
    audio: dict[str, str] = field(default_factory=dict)
    # system -> (size, modification time) of its wav then: a cheap check before offering it.
    stamps: dict[str, tuple[int, int]] = field(default_factory=dict)

    def changed(self) -> str | None:
        """Why a wav of this pair is no longer the one paired (removed, rewritten), or None."""
        for system, wav in self.wavs.items():
            try:
                now = wav.stat()
            except OSError as error:
                return f"{wav} cannot be read ({error.strerror or error})"
            if self.stamps and (now.st_size, now.st_mtime_ns) != self.stamps[system]:
                return f"{wav} changed"
        return None


def audio_digest(data: bytes) -> str:
    """A short content hash of a wav's bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class PairingResult:
    pairs: list[Pair]
    systems: dict[str, str]  # "A"/"B" -> the directory, for the answers and the report
    left_out: list[str] = field(default_factory=list)  # one line per wav or prompt, and why

    def summary(self) -> str:
        lines = [f"{len(self.pairs)} pairs of {self.systems['A']} (A) and {self.systems['B']} (B)"]
        if self.left_out:
            lines.append(f"left out ({len(self.left_out)}):")
            lines += [f"  {line}" for line in self.left_out]
        return "\n".join(lines)


def wav_prompt(wav: Path) -> str | None:
    """The prompt a wav was generated from: its JSON sidecar's, else its .txt caption."""
    sidecar = wav.with_suffix(".json")
    if sidecar.is_file():
        try:
            prompt = json.loads(sidecar.read_text(encoding=UTF8_WITH_OPTIONAL_MARK)).get("prompt")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            prompt = None
        if isinstance(prompt, str) and prompt.strip():
            return prompt.strip()
    caption = wav.with_suffix(".txt")
    if caption.is_file():
        text = caption.read_text(encoding=UTF8_WITH_OPTIONAL_MARK, errors="replace").strip()
        return text or None
    return None


def _readable(wav: Path) -> str | None:
    """Why the wav cannot be played, or None."""
    try:
        info = soundfile.info(str(wav))
    except Exception as error:  # soundfile raises several types for corrupt files
        return f"unreadable audio ({first_line(error)})"
    if info.frames == 0:
        return "empty audio"
    return None


def _system_wavs(directory: Path, name: str, left_out: list[str]) -> dict[str, list[Path]]:
    if not directory.is_dir():
        raise UserInputError(f"system {name}: {directory} is not a directory")
    wavs = sorted(directory.glob("*.wav"))
    if not wavs:
        raise UserInputError(f"system {name}: {directory} holds no .wav files")
    by_prompt: dict[str, list[Path]] = defaultdict(list)
    for wav in wavs:
        problem = _readable(wav)
        prompt = wav_prompt(wav) if problem is None else None
        if problem is None and prompt is None:
            problem = "no prompt (no generate sidecar .json or .txt caption beside it)"
        if problem is not None:
            left_out.append(f"{wav}: {problem}")
            continue
        by_prompt[prompt].append(wav)
    return by_prompt


def pair_systems(
    dir_a: str | Path, dir_b: str | Path, prompts_file: str | Path | None = None
) -> PairingResult:
    """The k-th wav of a prompt in A against the k-th of the same prompt in B (by file
    name); wavs without a partner, unreadable ones and (with a prompts file) other prompts'
    are left out and listed."""
    left_out: list[str] = []
    # Absolute: the answers name the systems the same wherever serve was started.
    systems = {"A": str(Path(dir_a).resolve()), "B": str(Path(dir_b).resolve())}
    if systems["A"] == systems["B"]:  # every answer would compare a file with itself
        raise UserInputError(f"systems A and B are the same folder, {systems['A']}")
    found = {s: _system_wavs(Path(systems[s]), s, left_out) for s in SYSTEMS}
    wanted = _read_prompts(Path(prompts_file)) if prompts_file is not None else None
    prompts = list(dict.fromkeys([*found["A"], *found["B"]]))
    pairs: list[Pair] = []
    for prompt in prompts:
        a, b = found["A"].get(prompt, []), found["B"].get(prompt, [])
        if wanted is not None and prompt not in wanted:
            left_out += [f"{wav}: prompt {prompt!r} is not in {prompts_file}" for wav in a + b]
            continue
        for k in range(max(len(a), len(b))):
            if k >= len(a) or k >= len(b):
                wav, other = (a[k], "B") if k < len(a) else (b[k], "A")
                left_out.append(f"{wav}: no wav of prompt {prompt!r} in {other} to pair with")
                continue
            wavs = {"A": a[k], "B": b[k]}
            stamps = {system: _stamp(wav) for system, wav in wavs.items()}
            audio = {system: audio_digest(wav.read_bytes()) for system, wav in wavs.items()}
            pairs.append(Pair(_pair_id(prompt, k), prompt, wavs, audio, stamps))
    for prompt in wanted or []:
        if not found["A"].get(prompt) and not found["B"].get(prompt):
            left_out.append(f"prompt {prompt!r} from {prompts_file}: no wav in either system")
    if not pairs:
        raise UserInputError(
            "no pairs: no prompt has a wav in both systems\n"
            + "\n".join(f"  {line}" for line in left_out)
        )
    return PairingResult(pairs, systems, left_out)


def _stamp(wav: Path) -> tuple[int, int]:
    status = wav.stat()
    return status.st_size, status.st_mtime_ns


def _pair_id(prompt: str, occurrence: int) -> str:
    return hashlib.sha256(f"{occurrence}\0{prompt}".encode()).hexdigest()[:12]


def _read_prompts(path: Path) -> set[str]:
    """The prompts of a text file (one per line) or of generate's JSONL."""
    from lightning_sdm.generation.requests import read_requests

    return {request.prompt for request in read_requests(None, str(path), 1.0, 0)}
