"""The answers of a listening test: one JSON line per answer, appended and synced to disk
before it is acknowledged, so a crash loses nothing; who has answered what, for resuming
and for refusing a second answer to the same pair."""

from __future__ import annotations

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


@dataclass
class ReadAnswers:
    answers: list[Answer]
    bad_lines: list[str]  # "LINE: why", for the report and the server's start message


def check_rater(rater: str) -> str:
    rater = rater.strip()
    if not RATER_PATTERN.match(rater):
        raise UserInputError(
            "a rater id is 1 to 64 letters, digits or . _ - @ + (no spaces), got " + repr(rater)
        )
    return rater


def read_answers(path: str | Path) -> ReadAnswers:
    """Every well-formed line; the others reported by line number (a line cut short by a
    crash is one of them) and skipped."""
    path = Path(path)
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
            if not isinstance(item, dict) or set(item) != names:
                bad.append(f"{path}:{number}: expected the keys {sorted(names)}")
                continue
            if item["choice"] not in CHOICES or item["heard_first"] not in SYSTEMS:
                bad.append(f"{path}:{number}: choice must be A, B or none")
                continue
            answers.append(Answer(**item))
    return ReadAnswers(answers, bad)


class AnswerLog:
    """Answers of one A/B test (its two systems) in a JSONL, shared by the server's threads."""

    def __init__(self, path: str | Path, systems: dict[str, str]) -> None:
        self.path = Path(path)
        self.systems = systems
        self._lock = threading.Lock()
        self._answered: set[tuple[str, str]] = set()
        self.bad_lines: list[str] = []
        self.other_tests = 0  # answers in the file that compared other systems
        if self.path.is_file():
            read = read_answers(self.path)
            self.bad_lines = read.bad_lines
            for answer in read.answers:
                if (answer.system_a, answer.system_b) == (systems["A"], systems["B"]):
                    self._answered.add((answer.rater, answer.pair_id))
                else:
                    self.other_tests += 1
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)

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
        )
        line = json.dumps(asdict(answer), ensure_ascii=False) + "\n"
        with self._lock:
            if (rater, pair.pair_id) in self._answered:
                raise AlreadyAnswered(f"{rater} has already answered this pair")
            # One write of the whole line, then to the disk before anyone hears "saved".
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            self._answered.add((rater, pair.pair_id))
        return answer


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode()).digest()


def rater_order(rater: str, pairs: list[Pair], salt: str) -> list[Pair]:
    """The rater's own shuffled order of the pairs: the same on every reload and restart."""
    return sorted(pairs, key=lambda pair: _digest(salt, "order", rater, pair.pair_id))


def heard_first(rater: str, pair: Pair, salt: str) -> str:
    """Which system plays first for this rater and pair (A or B, half the time each)."""
    return SYSTEMS[_digest(salt, "side", rater, pair.pair_id)[0] % 2]
