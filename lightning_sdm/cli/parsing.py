"""Command-line parsing shared by every command: errors first, with a suggestion."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import sys
from typing import Any, NoReturn

from jsonargparse import ArgumentParser

from lightning_sdm.cli.repeated_keys import REPEATED, refuse_repeated_keys

refuse_repeated_keys()


def did_you_mean(message: str, options: list[str]) -> str | None:
    """The known option closest to the unknown one a parse error names."""
    known = {option.lstrip("-") for option in options}
    # `--temprature` should find `--sampling.temperature`: match the last part too.
    by_name = {name: name for name in known}
    for name in known:  # every dotted tail: `lm.dimm` finds `model.lm.dim`
        parts = name.split(".")
        for start in range(len(parts) - 1, 0, -1):
            by_name.setdefault(".".join(parts[start:]), name)
    for word in re.findall(r"[\w][\w.\-]*", message):
        looks_like_option = "." in word or "_" in word or f"--{word}" in message
        if not looks_like_option or word in known:
            continue
        close = difflib.get_close_matches(word, by_name, n=1, cutoff=0.75)
        if close:
            return f"--{by_name[close[0]]}"
    return None


def _subclass_problem(message: str) -> tuple[str, list[str]]:
    """jsonargparse explains a bad option of a `class_path` section as a failed union of
    every subtype; keep what went wrong with the class that was meant, and its options."""
    key = re.search(r'Parser key "([\w.]+)"', message)
    class_path = re.search(r"class_path '([\w.]+)'", message)
    if not (key and class_path and "Union subtypes" in message):
        return message, []
    problem = message.split(f"class_path '{class_path.group(1)}':", 1)[1]
    problem = problem.split("\n    - ", 1)[0].strip()
    typed = _type_problem(problem)
    if typed != problem:  # a value of the wrong type for one of the class's options
        return f"--{key.group(1)}.{typed.removeprefix('--')}", []
    module_name, _, class_name = class_path.group(1).rpartition(".")
    names: list[str] = []
    try:
        kind = getattr(importlib.import_module(module_name), class_name)
        for name, parameter in inspect.signature(kind).parameters.items():
            names.append(name)
            if dataclasses.is_dataclass(parameter.default):  # e.g. model.lm.dim
                names += [f"{name}.{f.name}" for f in dataclasses.fields(parameter.default)]
    except (ImportError, AttributeError, TypeError, ValueError):
        pass
    message = f"{key.group(1)} ({class_name}): {problem}"
    return message, [f"--{key.group(1)}.{name}" for name in names]


# What a plain type of an option accepts, in words.
TYPE_WORDS = {
    "float": "a number", "int": "a whole number", "bool": "true or false", "str": "text",
    "NoneType": "null",
}  # fmt: skip


def _type_problem(message: str) -> str:
    """jsonargparse explains a value of the wrong plain type or not among an option's
    choices over several lines (an optional one as a failed union with NoneType): say it
    in one. Any other type in the explanation: left as it is."""
    key = re.search(r'Parser key "([\w.]+)"', message)
    given = re.search(r"(?:Got value|Given value): (.*)", message)
    if not (key and given) or "class_path" in message:
        return message
    body = re.sub(r"Given value type: .*", "", message)
    choices = [
        value
        for group in re.findall(r"Literal\[([^\]]*)\]", body)
        for value in re.findall(r"'([^']*)'", group)
    ]
    body = re.sub(r"(?:typing\.)?Literal\[[^\]]*\]", "", body)
    kinds = re.findall(r"<class '([\w.]+)'>", body)
    if re.search(r"typing\.\w", body) or any(kind not in TYPE_WORDS for kind in kinds):
        return message
    words = [f"one of {', '.join(dict.fromkeys(choices))}"] if choices else []
    words += [TYPE_WORDS[kind] for kind in dict.fromkeys(kinds)]
    if not words:
        return message
    expected = "; or ".join(words) if choices else " or ".join(words)  # one of a, b; or null
    return f"--{key.group(1)}: expected {expected}, got {given.group(1).strip()!r}"


def _yaml_problem(message: str) -> str:
    """A config file that is not YAML: what and where in one line (PyYAML's explanation
    runs over three, about a "<unicode string>")."""
    if not message.startswith("Problems parsing config"):
        return message
    if REPEATED in message:  # valid YAML, but one value would be lost
        return message[message.index(REPEATED) :].splitlines()[0]
    where = re.search(r"line (\d+), column (\d+)", message)
    details = [line.strip() for line in message.splitlines()[1:] if line.strip()]
    what = next((line for line in details if not line.startswith("in ")), "")
    said = "a config file is not valid YAML"
    if where:
        said += f" at line {where.group(1)}, column {where.group(2)}"
    if what:
        said += f": {what}"
    if "cannot start any token" in message:
        said += " (YAML indents with spaces: a tab there?)"
    return said


def _unknown_in_group(message: str) -> str:
    """The dotted name of an option a config's group does not have ("Group 'trainer' does
    not accept option 'max_stepz'" -> trainer.max_stepz), for `did_you_mean`."""
    found = re.search(r"Group '([\w.]+)' does not accept option '([\w.]+)'", message)
    return f"{found.group(1)}.{found.group(2)}" if found else ""


def _options(parser: Any) -> list[str]:
    """A parser's --options and those of its subcommands (a config read by the root
    parser of LightningCLI is checked against fit's options)."""
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    for action in parser._actions:
        for subparser in getattr(action, "_name_parser_map", {}).values():
            options += _options(subparser)
    return list(dict.fromkeys(options))


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
        options = _options(parser)
        message, class_options = _subclass_problem(_type_problem(_yaml_problem(message)))
        lines = [f"error: {message.strip()}"]
        # A value of the wrong type, or a key given twice: the option exists, nothing to suggest.
        wrong_value = message.startswith(("--", REPEATED))
        unknown = _unknown_in_group(message)
        suggestion = (
            None if wrong_value else did_you_mean(f"{message} {unknown}", options + class_options)
        )
        if suggestion:
            lines.append(f"did you mean {suggestion}?")
        lines.append(f"all options: {parser.prog.replace(' [options]', '')} --help")
        sys.stderr.write("\n".join(lines) + "\n")
        self.exit(2)


class CommandParser(ErrorFirst, ArgumentParser):
    """jsonargparse's parser with our error handling."""
