"""What to generate: prompts from the command line, a text file or a JSONL, each with its
own duration and seed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning_sdm.errors import UserInputError
from lightning_sdm.text_files import read_user_text

JSONL_KEYS = {"prompt", "seconds", "seed"}
MAX_SEED = 2**63 - 1  # torch.Generator's seeds are 64-bit; prompt i draws from seed + i


@dataclass(frozen=True)
class GenerationRequest:
    index: int  # position among all requests: names the output files
    prompt: str
    seconds: float
    seed: int


def check_first_seed(seed: int, prompts: int, name: str) -> None:
    """Prompt i draws from seed + i: every one of them must be a seed torch takes."""
    if not 0 <= seed <= MAX_SEED - prompts:
        raise UserInputError(
            f"{name} must be in [0, {MAX_SEED - prompts}] (prompt i uses seed + i), got {seed}"
        )


@dataclass(frozen=True)
class PromptList:
    """Prompts read and checked, waiting only for the default duration (which may come
    from the model's frame rate): read before a model loads, so a bad file costs nothing."""

    entries: tuple[tuple[str, float | None, int | None], ...]
    seed: int

    def requests(self, seconds: float) -> list[GenerationRequest]:
        """A request without its own seed gets `seed + index`, so each prompt's output is
        fixed however the requests are batched."""
        _check_seconds(seconds, "--seconds")
        return [
            GenerationRequest(
                index=index,
                prompt=prompt,
                seconds=seconds if own_seconds is None else float(own_seconds),
                seed=self.seed + index if own_seed is None else int(own_seed),
            )
            for index, (prompt, own_seconds, own_seed) in enumerate(self.entries)
        ]


def read_prompts(prompts: Sequence[str] | None, prompt_file: str | None, seed: int) -> PromptList:
    """Command-line prompts first, then the file's (read once: a pipe or `<(...)` works)."""
    entries: list[tuple[str, float | None, int | None]] = [(p, None, None) for p in prompts or []]
    if prompt_file is not None:
        entries += _read_file(Path(prompt_file))
    if not entries:
        raise UserInputError("nothing to generate: give --prompt TEXT or --prompt_file FILE")
    check_first_seed(seed, len(entries), "--seed")
    for index, (prompt, own_seconds, own_seed) in enumerate(entries):
        if own_seed is not None and not 0 <= own_seed <= MAX_SEED:
            raise UserInputError(
                f"prompt {index + 1} ({prompt!r}): seed must be in [0, {MAX_SEED}]"
            )
        if own_seconds is not None:
            _check_seconds(own_seconds, f"prompt {index + 1} ({prompt!r})")
    return PromptList(tuple(entries), seed)


def read_requests(
    prompts: Sequence[str] | None,
    prompt_file: str | None,
    seconds: float,
    seed: int,
) -> list[GenerationRequest]:
    """Command-line prompts first, then the file's, each `seconds` long unless it says."""
    return read_prompts(prompts, prompt_file, seed).requests(seconds)


def _check_seconds(seconds: float, where: str) -> None:
    if not 0 < seconds < float("inf"):
        raise UserInputError(f"{where}: the duration must be positive, got {seconds} s")


def _read_file(path: Path) -> list[tuple[str, float | None, int | None]]:
    try:
        lines = read_user_text(path).splitlines()
    except FileNotFoundError as error:
        raise UserInputError(f"prompt file {path} not found") from error
    except IsADirectoryError as error:
        message = f"prompt file {path} is a folder: give a text or JSONL file"
        raise UserInputError(message) from error
    except OSError as error:
        raise UserInputError(f"prompt file {path} is unreadable: {error}") from error
    entries = (
        _read_jsonl(path, lines)
        if path.suffix == ".jsonl"
        else [(line.strip(), None, None) for line in lines if line.strip()]
    )
    if not entries:
        raise UserInputError(f"prompt file {path} holds no prompts")
    return entries


def _read_jsonl(path: Path, lines: list[str]) -> list[tuple[str, float | None, int | None]]:
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserInputError(f"{where}: not JSON ({error.msg})") from error
        if not isinstance(item, dict):
            raise UserInputError(f'{where}: expected an object like {{"prompt": ...}}')
        unknown = set(item) - JSONL_KEYS
        if unknown:
            raise UserInputError(
                f"{where}: unknown keys {sorted(unknown)} (known: {sorted(JSONL_KEYS)})"
            )
        prompt = item.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserInputError(f'{where}: "prompt" must be a non-empty string')
        seconds, seed = item.get("seconds"), item.get("seed")
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int | float)
        ):
            raise UserInputError(f'{where}: "seconds" must be a number')
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise UserInputError(f'{where}: "seed" must be an integer')
        entries.append((prompt.strip(), seconds, seed))
    return entries
