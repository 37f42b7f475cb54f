"""A deterministic train/validation split by item key, for any number of shards.

An item is held out when a hash of its key falls below `fraction`: the same items on every
machine, rank and rerun, and adding items never moves an old one across the split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass


def key_position(key: str) -> float:
    """Where a key falls in [0, 1): uniform over keys, stable across processes."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class KeySplit:
    """`fraction` of the keys by hash; `forced` holds the one key taken when none falls
    below it (small data), so validation is never empty."""

    fraction: float
    forced: frozenset[str] = frozenset()

    @classmethod
    def over(cls, keys: Iterable[str], fraction: float) -> KeySplit:
        if not 0 < fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
        keys = list(keys)
        if len(keys) < 2:
            raise ValueError(f"val_fraction needs at least 2 items to split, found {len(keys)}")
        split = cls(fraction)
        if not any(split.is_val(k) for k in keys):
            split = cls(fraction, frozenset({min(keys, key=key_position)}))
        if all(split.is_val(k) for k in keys):
            split = cls(0.0, frozenset({min(keys, key=key_position)}))
        return split

    def is_val(self, key: str) -> bool:
        return key in self.forced or key_position(key) < self.fraction


@dataclass(frozen=True)
class KeyFilter:
    """Picklable (DataLoader workers get a copy): keeps one side of a split."""

    split: KeySplit
    validation: bool

    def __call__(self, key: str) -> bool:
        return self.split.is_val(key) == self.validation
