"""Command-line parsing shared by every command: errors first, with a suggestion."""

from __future__ import annotations

import difflib
import re
import sys
from typing import Any, NoReturn

from jsonargparse import ArgumentParser


def did_you_mean(message: str, options: list[str]) -> str | None:
    """The known option closest to the unknown one a parse error names."""
    known = {option.lstrip("-") for option in options}
    # `--temprature` should find `--sampling.temperature`: match the last part too.
    by_name = {name: name for name in known} | {
        name.rsplit(".", 1)[-1]: name for name in known if "." in name
    }
    for word in re.findall(r"[\w][\w.\-]*", message):
        looks_like_option = "." in word or "_" in word or f"--{word}" in message
        if not looks_like_option or word in known:
            continue
        close = difflib.get_close_matches(word, by_name, n=1, cutoff=0.75)
        if close:
            return f"--{by_name[close[0]]}"
    return None


class ErrorFirst:
    """No abbreviated options (`--trainer.max_step` is an error, not max_steps), and the
    error first, with a suggestion, instead of pages of usage."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)  # type: ignore[misc]
        parser = getattr(ex, "subcommand_parser", None) or self
        options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
        lines = [f"error: {message.strip()}"]
        suggestion = did_you_mean(message, options)
        if suggestion:
            lines.append(f"did you mean {suggestion}?")
        lines.append(f"all options: {parser.prog.replace(' [options]', '')} --help")
        sys.stderr.write("\n".join(lines) + "\n")
        self.exit(2)


class CommandParser(ErrorFirst, ArgumentParser):
    """jsonargparse's parser with our error handling."""
