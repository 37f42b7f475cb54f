"""Decoding schedules G(i, t): the step at which token (level i, timestep t) is sampled.

A schedule is data: any representation works with any valid schedule, so schedules
are small frozen objects that render the full [C, T] step grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lightning_sdm.errors import UserInputError


class InvalidScheduleError(ValueError):
    """A schedule grid that no pattern can decode."""


@dataclass(frozen=True)
class Schedule:
    """Base class; subclasses define `_steps` over broadcast level/time index arrays."""

    @property
    def name(self) -> str:
        raise NotImplementedError

    def _steps(self, levels: np.ndarray, times: np.ndarray, num_levels: int) -> np.ndarray:
        raise NotImplementedError

    def grid(self, num_levels: int, num_steps_time: int) -> np.ndarray:
        """Return G as an int64 array of shape [C, T]."""
        if num_levels < 1 or num_steps_time < 1:
            raise ValueError(f"need C >= 1 and T >= 1, got C={num_levels}, T={num_steps_time}")
        levels = np.arange(num_levels, dtype=np.int64)[:, None]
        times = np.arange(num_steps_time, dtype=np.int64)[None, :]
        steps = np.broadcast_to(
            self._steps(levels, times, num_levels), (num_levels, num_steps_time)
        )
        return np.ascontiguousarray(steps, dtype=np.int64)


@dataclass(frozen=True)
class ParallelSchedule(Schedule):
    """G(i, t) = t: every level of a timestep in one step."""

    @property
    def name(self) -> str:
        return "parallel"

    def _steps(self, levels: np.ndarray, times: np.ndarray, num_levels: int) -> np.ndarray:
        return times + 0 * levels


@dataclass(frozen=True)
class DelaySchedule(Schedule):
    """G(i, t) = t + i (MusicGen's delay)."""

    @property
    def name(self) -> str:
        return "delay"

    def _steps(self, levels: np.ndarray, times: np.ndarray, num_levels: int) -> np.ndarray:
        return times + levels


@dataclass(frozen=True)
class FlatSchedule(Schedule):
    """G(i, t) = C·t + i: one token per step."""

    @property
    def name(self) -> str:
        return "flat"

    def _steps(self, levels: np.ndarray, times: np.ndarray, num_levels: int) -> np.ndarray:
        return num_levels * times + levels


@dataclass(frozen=True)
class InterleavedSchedule(Schedule):
    """G(i, t) = t + (t mod (k+1))·(k−1) + i, the stack-delay paper's interleaving.

    k = 1 is the delay order; larger k keeps timesteps decoded in the same step far apart.
    """

    k: int = 1

    def __post_init__(self) -> None:
        if self.k < 1:
            raise UserInputError(f"interleave k must be >= 1, got {self.k}")

    @property
    def name(self) -> str:
        return f"interleaved(k={self.k})"

    def _steps(self, levels: np.ndarray, times: np.ndarray, num_levels: int) -> np.ndarray:
        return times + (times % (self.k + 1)) * (self.k - 1) + levels


@dataclass(frozen=True)
class ExplicitSchedule(Schedule):
    """A user-given step grid (e.g. loaded from a file); must match the requested C and T."""

    steps: tuple[tuple[int, ...], ...]

    @property
    def name(self) -> str:
        return "explicit"

    def grid(self, num_levels: int, num_steps_time: int) -> np.ndarray:
        array = np.asarray(self.steps, dtype=np.int64)
        if array.shape != (num_levels, num_steps_time):
            raise InvalidScheduleError(
                f"explicit schedule has shape {array.shape}, "
                f"expected ({num_levels}, {num_steps_time})"
            )
        return array


SCHEDULE_NAMES = ("parallel", "delay", "flat", "interleaved")


def make_schedule(name: str, k: int = 1) -> Schedule:
    """Build a schedule by name; `k` only matters for `interleaved`."""
    match name:
        case "parallel":
            return ParallelSchedule()
        case "delay":
            return DelaySchedule()
        case "flat":
            return FlatSchedule()
        case "interleaved":
            return InterleavedSchedule(k=k)
    raise UserInputError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULE_NAMES)}")


def validate_schedule_grid(steps: np.ndarray, representation_is_stack: bool) -> None:
    """Raise InvalidScheduleError unless the grid can be decoded by the representation.

    Steps must be non-negative. The stack representation feeds level j the levels below it
    of the same timestep, so G must increase strictly with the level at fixed t. The token
    representation has one output head per level per step, so it needs at most one token
    per (level, step) instead (parallel, with G(i, t) = t, is valid there).
    """
    if steps.ndim != 2:
        raise InvalidScheduleError(f"schedule grid must be [C, T], got shape {steps.shape}")
    if (steps < 0).any():
        raise InvalidScheduleError("schedule steps must be >= 0")
    if representation_is_stack:
        not_increasing = np.argwhere(np.diff(steps, axis=0) <= 0)
        if not_increasing.size:
            level, time = (int(x) for x in not_increasing[0])
            raise InvalidScheduleError(
                "the stack representation needs G to increase with the level at fixed t, but "
                f"G({level + 1}, {time}) = {steps[level + 1, time]} <= G({level}, {time}) = "
                f"{steps[level, time]}"
            )
        return
    for level, row in enumerate(steps):
        values, counts = np.unique(row, return_counts=True)
        if (counts > 1).any():
            raise InvalidScheduleError(
                f"the token representation needs one token per level and step, but level "
                f"{level} has {counts.max()} tokens at step {values[counts.argmax()]}"
            )
