"""Task configs arrive as dataclasses (YAML through LightningCLI) or as the plain dicts a
checkpoint stores (so it loads with `weights_only=True`)."""

from __future__ import annotations

from typing import Any


def config_from(value: Any, kind: type) -> Any:
    """The dataclass `kind` from itself, a dict (lists back to tuples), or None."""
    if value is None or isinstance(value, kind):
        return value
    if isinstance(value, dict):
        return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    raise TypeError(f"expected {kind.__name__} or dict, got {type(value).__name__}")
