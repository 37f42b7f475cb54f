"""The answers of a listening test: one JSON line per answer, appended and synced to disk
before it is acknowledged, so a crash loses nothing; who has answered what, for resuming
and for refusing a second answer to the same pair."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from lightning_sdm.errors import UserInputError
from lightning_sdm.listening.pairs import SYSTEMS, Pair

CHOICES = ("A", "B", "none")  # "none": no preference
RATER_PATTERN = re.compile(r"^[\w.@+-]{1,64}$")


class AlreadyAnswered(Exception):
    """This rater has answered this pair."""


class AnswerNotSaved(Exception):
    """The answer could not be written whole (a full disk, an I/O error): nothing is kept."""


TORN_SUFFIX = ".torn"  # where a torn last line found at start is set aside


@dataclass(frozen=True)
class Answer:
    rater: str
    pair_id: str
    prompt: str
    choice: str  # "A", "B" or "none"
    heard_first: str  # which system played as the first sample
    system_a: str
    system_b: str
    time: str
    # The digests of the two wavs as heard (`pairs.audio_digest`); empty in answers saved
    # before they were recorded.
    audio_a: str = ""
    audio_b: str = ""

    @property
    def audio(self) -> tuple[str, str]:
        return self.audio_a, self.audio_b


AUDIO_FIELDS = {"audio_a", "audio_b"}


@dataclass
class ReadAnswers:
    answers: list[Answer]
    bad_lines: list[str]  # "LINE: why", for the report and the server's start message


SHOWN_BAD_LINES = 10


def some_bad_lines(lines: list[str], limit: int = SHOWN_BAD_LINES) -> list[str]:
    """The first `limit` skipped lines and how many more: a wrong file given as the answers
    (a prompts JSONL, a binary) would otherwise print a line for every line it holds."""
    if len(lines) <= limit:
        return list(lines)
    return [*lines[:limit], f"... and {len(lines) - limit:,} more"]


def check_rater(rater: str) -> str:
    rater = rater.strip()
    if not RATER_PATTERN.match(rater):
        raise UserInputError(
            "a rater id is 1 to 64 letters, digits or . _ - @ + (no spaces), got "
            + (repr(rater) if len(rater) <= 80 else f"{len(rater)} characters")
        )
    return rater


def read_answers(path: str | Path) -> ReadAnswers:
    """Every well-formed line; the others reported by line number (a line cut short by a
    crash is one of them) and skipped."""
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"answers file {path} is a folder: give the .jsonl file serve wrote")
    if not path.is_file():
        raise UserInputError(f"answers file {path} not found")
    answers, bad = [], []
    names = {f.name for f in Answer.__dataclass_fields__.values()}
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                bad.append(f"{path}:{number}: not JSON ({error.msg})")
                continue
            if not isinstance(item, dict) or set(item) not in (names, names - AUDIO_FIELDS):
                bad.append(f"{path}:{number}: expected the keys {sorted(names)}")
                continue
            if item["choice"] not in CHOICES or item["heard_first"] not in SYSTEMS:
                bad.append(f"{path}:{number}: choice must be A, B or none")
                continue
            answers.append(Answer(**item))
    return ReadAnswers(answers, bad)


class AnswerLog:
    """Answers of one A/B test (its two systems) in a JSONL, shared by the server's threads.

    Each answer is one whole line or nothing: a failed write is truncated back, and a torn
    last line found at start (a kill or a full disk during a write) is moved to
    `ANSWERS.torn` rather than written onto.
    """

    def __init__(
        self, path: str | Path, systems: dict[str, str], pairs: list[Pair] | None = None
    ) -> None:
        self.path = Path(path)
        self.systems = systems
        self._lock = threading.Lock()
        self._answered: set[tuple[str, str]] = set()
        self.bad_lines: list[str] = []
        self.set_aside: str | None = None  # the torn tail found at start, if any
        self.other_tests = 0  # answers in the file that compared other systems
        # Answers to these systems' folders given to other audio (files regenerated since):
        # kept in the file, not counted as answered, reported apart.
        self.earlier_audio = 0
        _check_writable(self.path)
        self.set_aside = _set_aside_torn_tail(self.path)
        read = read_answers(self.path)
        self.bad_lines = read.bad_lines
        heard = {
            pair.pair_id: (pair.audio.get("A", ""), pair.audio.get("B", "")) for pair in pairs or []
        }
        for answer in read.answers:
            if (answer.system_a, answer.system_b) != (systems["A"], systems["B"]):
                self.other_tests += 1
            elif (
                answer.audio_a and answer.pair_id in heard and answer.audio != heard[answer.pair_id]
            ):
                self.earlier_audio += 1
            else:
                self._answered.add((answer.rater, answer.pair_id))

    def answered(self, rater: str) -> set[str]:
        with self._lock:
            return {pair for who, pair in self._answered if who == rater}

    def record(self, rater: str, pair: Pair, choice: str, heard_first: str) -> Answer:
        if choice not in CHOICES:
            raise UserInputError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
        answer = Answer(
            rater=rater,
            pair_id=pair.pair_id,
            prompt=pair.prompt,
            choice=choice,
            heard_first=heard_first,
            system_a=self.systems["A"],
            system_b=self.systems["B"],
            time=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            audio_a=pair.audio.get("A", ""),
            audio_b=pair.audio.get("B", ""),
        )
        line = (json.dumps(asdict(answer), ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if (rater, pair.pair_id) in self._answered:
                raise AlreadyAnswered(f"{rater} has already answered this pair")
            _append_whole_line(self.path, line)  # on the disk before anyone hears "saved"
            self._answered.add((rater, pair.pair_id))
        return answer


def _check_writable(path: Path) -> None:
    """At start, not at the first answer: one line naming the file and the reason."""
    if path.is_dir():
        raise UserInputError(f"answers file {path} is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab"):
            pass
    except OSError as error:
        raise UserInputError(f"answers file {path} cannot be written: {error.strerror}") from None


def _set_aside_torn_tail(path: Path) -> str | None:
    """Move a last line without its newline to ANSWERS.torn; say what was moved."""
    with path.open("rb+") as handle:
        data = handle.read()
        if not data or data.endswith(b"\n"):
            return None
        cut = data.rfind(b"\n") + 1
        with open(path.with_name(path.name + TORN_SUFFIX), "ab") as aside:
            aside.write(data[cut:] + b"\n")
            aside.flush()
            os.fsync(aside.fileno())
        handle.truncate(cut)
        handle.flush()
        os.fsync(handle.fileno())
    fragment = data[cut:].decode("utf-8", errors="replace")
    return f"a torn last line ({len(data) - cut} bytes: {fragment[:60]!r}) was moved to " + str(
        path.with_name(path.name + TORN_SUFFIX)
    )


def _append_whole_line(path: Path, line: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.fstat(descriptor).st_size
        try:
            written = 0
            while written < len(line):
                written += os.write(descriptor, line[written:])
            os.fsync(descriptor)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(descriptor, start)  # no half line for the next answer to glue to
            raise AnswerNotSaved(
                f"the answer was not saved ({error.strerror or error}); please try again"
            ) from error
    finally:
        os.close(descriptor)


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode()).digest()


def rater_order(rater: str, pairs: list[Pair], salt: str) -> list[Pair]:
    """The rater's own shuffled order of the pairs: the same on every reload and restart."""
    return sorted(pairs, key=lambda pair: _digest(salt, "order", rater, pair.pair_id))


def heard_first(rater: str, pair: Pair, salt: str) -> str:
    """Which system plays first for this rater and pair (A or B, half the time each)."""
    return SYSTEMS[_digest(salt, "side", rater, pair.pair_id)[0] % 2]
