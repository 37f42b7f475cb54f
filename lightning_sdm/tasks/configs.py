"""Task configs arrive as dataclasses (YAML through LightningCLI) or as the plain dicts a
checkpoint stores (so it loads with `weights_only=True`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning_sdm.errors import UserInputError


def config_from(value: Any, kind: type) -> Any:
    """The dataclass `kind` from itself, a dict (lists back to tuples), or None."""
    if value is None or isinstance(value, kind):
        return value
    if isinstance(value, dict):
        return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    raise TypeError(f"expected {kind.__name__} or dict, got {type(value).__name__}")


def training_option_changes(
    directory: str,
    sections: Mapping[str, tuple[Any, Any, Any]],
    training_options: Mapping[str, tuple[str, ...]],
) -> dict[str, dict[str, Any]]:
    """The options a config starting from `directory` sets away from both its default and
    the saved model's, per section: (given, default, saved) configs. Only training options
    may change; an architecture option that differs is an error, not silently ignored."""
    changes: dict[str, dict[str, Any]] = {section: {} for section in sections}
    for section, (given, default, found) in sections.items():
        for name in given.to_dict():
            value = getattr(given, name)
            if value == getattr(default, name) or value == getattr(found, name):
                continue
            if name not in training_options[section]:
                raise UserInputError(
                    f"model.{section}.{name} = {value!r} differs from {directory}'s "
                    f"{getattr(found, name)!r}: init_from fixes the architecture (remove the "
                    "option, or train from scratch)"
                )
            changes[section][name] = value
    return changes


# Where the weights of a resumed run come from is the checkpoint, not this path: a moved
# copy of the same T5 may be named.
WEIGHTS_SOURCE_OPTIONS = frozenset({"pretrained"})


def resume_changes(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    training_options: Mapping[str, tuple[str, ...]],
) -> list[str]:
    """The architecture options a resumed run sets away from its checkpoint's, per model
    section (`training_options` names the sections and what may change in each): a
    resume continues the same model; another one starts from its weights with init_from."""
    changes = []
    for section, may_change in training_options.items():
        before, now = saved.get(section), current.get(section)
        if (before is None) != (now is None):  # an optional section (an adapter) added or gone
            changes.append(f"model.{section} {_given(now)} (checkpoint: {_given(before)})")
            continue
        if not isinstance(before, Mapping) or not isinstance(now, Mapping):
            continue
        for name in sorted(set(before) & set(now) - set(may_change) - WEIGHTS_SOURCE_OPTIONS):
            if before[name] != now[name]:
                option = f"model.{section}.{name}"
                changes.append(f"{option} {now[name]!r} (checkpoint: {before[name]!r})")
    return changes


def _given(section: Any) -> str:
    return "none" if section is None else "set"
