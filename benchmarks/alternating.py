"""Two runs timed alternating (A B B A ...) in one process, so a shared machine's drift
falls on both alike: the ratio of their medians and of each pair."""

from __future__ import annotations

import statistics
from collections.abc import Callable


def paired_ratio(
    first: Callable[[], float], second: Callable[[], float], pairs: int
) -> dict[str, float | list[float]]:
    """Each run returns its seconds. `second`'s over `first`'s: the ratio of the medians,
    each median, and each pair's ratio."""
    seconds: tuple[list[float], list[float]] = ([], [])
    for index in range(pairs):
        for side in (0, 1) if index % 2 == 0 else (1, 0):
            seconds[side].append((first, second)[side]())
    first_s, second_s = (statistics.median(each) for each in seconds)
    return {
        "ratio": second_s / first_s, "first_s": first_s, "second_s": second_s,
        "pair_ratios": [b / a for a, b in zip(*seconds, strict=True)],
    }  # fmt: skip
