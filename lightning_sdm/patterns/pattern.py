"""A codebook pattern: a schedule paired with a representation, plus its cached layouts."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from lightning_sdm.errors import UserInputError
from lightning_sdm.patterns.layout import PatternLayout, Representation
from lightning_sdm.patterns.schedules import (
    DelaySchedule,
    FlatSchedule,
    InterleavedSchedule,
    ParallelSchedule,
    Schedule,
    make_schedule,
    validate_schedule_grid,
)

PATTERN_NAMES = ("parallel", "delay", "flat", "stack", "stack_delay")


@dataclass(frozen=True)
class Pattern:
    """(schedule, representation); hashable so its layouts are built once per (T, C)."""

    schedule: Schedule
    representation: Representation
    name: str = ""

    def layout(self, num_timesteps: int, num_levels: int) -> PatternLayout:
        return _build_layout(self, num_timesteps, num_levels)

    def describe(self) -> str:
        schedule, representation = self.schedule.name, self.representation
        return f"{self.name or 'custom'} [{schedule} schedule, {representation} representation]"


@lru_cache(maxsize=64)
def _build_layout(pattern: Pattern, num_timesteps: int, num_levels: int) -> PatternLayout:
    steps = pattern.schedule.grid(num_levels, num_timesteps)
    validate_schedule_grid(
        steps, representation_is_stack=pattern.representation is Representation.STACK
    )
    return PatternLayout(steps, pattern.representation)


def make_pattern(name: str, k: int = 1, schedule: str | None = None) -> Pattern:
    """Build a named pattern; `schedule` overrides its default (e.g. delay + interleaved).

    `k` is the interleave of stack-delay (and of any `interleaved` schedule).
    """
    defaults: dict[str, tuple[Schedule, Representation]] = {
        "parallel": (ParallelSchedule(), Representation.TOKEN),
        "delay": (DelaySchedule(), Representation.TOKEN),
        "flat": (FlatSchedule(), Representation.TOKEN),
        "stack": (FlatSchedule(), Representation.STACK),
        "stack_delay": (InterleavedSchedule(k=k), Representation.STACK),
    }
    key = name.replace("-", "_")
    if key not in defaults:
        raise UserInputError(f"unknown pattern {name!r}; choose one of {', '.join(PATTERN_NAMES)}")
    default_schedule, representation = defaults[key]
    chosen = make_schedule(schedule, k=k) if schedule else default_schedule
    label = key if key != "stack_delay" else f"stack_delay(k={k})"
    if schedule:
        label = f"{key}+{chosen.name}"
    return Pattern(schedule=chosen, representation=representation, name=label)
