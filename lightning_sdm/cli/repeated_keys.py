"""YAML with a key written twice is refused, not read as its last value.

PyYAML keeps the last of two equal keys in silence, so a config with two `trainer:` blocks
(a paste, a merge gone wrong) loses the first block's settings without a word. Every YAML
that jsonargparse reads (config files, `--x.y` values) is first checked here, then read as
before by its own loader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from jsonargparse import get_loader, set_loader

MERGE_TAG = "tag:yaml.org,2002:merge"
REPEATED = "a config gives a key twice:"


class RepeatedKey(yaml.YAMLError):
    """A mapping names one key twice."""


def first_repeated_key(stream: str) -> str | None:
    """'key' (lines A and B) of the first key a mapping of `stream` repeats, or None (also
    for text that is not YAML: its own loader says why)."""
    try:
        root = yaml.compose(stream, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    pending = [root] if root is not None else []
    while pending:
        node = pending.pop()
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                pending.append(value)
                if not isinstance(key, yaml.ScalarNode) or key.tag == MERGE_TAG:
                    continue  # `<<: *base` merges may be overridden by design
                line = key.start_mark.line + 1
                if key.value in seen:
                    return f"{key.value!r} (lines {seen[key.value]} and {line})"
                seen[key.value] = line
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
    return None


def _checked(load: Callable[[str], Any]) -> Callable[[str], Any]:
    def load_once_checked(stream: str) -> Any:
        repeated = first_repeated_key(stream) if isinstance(stream, str) else None
        if repeated:
            raise RepeatedKey(
                f"{REPEATED} {repeated}: the second would silently replace the first; keep one"
            )
        return load(stream)

    load_once_checked.checks_repeated_keys = True  # type: ignore[attr-defined]
    return load_once_checked


def refuse_repeated_keys() -> None:
    """Put the check in front of jsonargparse's YAML loader (once per process)."""
    load = get_loader("yaml")
    if not getattr(load, "checks_repeated_keys", False):
        set_loader("yaml", _checked(load), exceptions=(yaml.YAMLError,))
