"""Codebook patterns: schedules, representations, training layouts and decoding plans."""

from lightning_sdm.patterns.layout import DecodingStep, PatternLayout, Representation
from lightning_sdm.patterns.pattern import PATTERN_NAMES, Pattern, make_pattern
from lightning_sdm.patterns.schedules import (
    SCHEDULE_NAMES,
    DelaySchedule,
    ExplicitSchedule,
    FlatSchedule,
    InterleavedSchedule,
    InvalidScheduleError,
    ParallelSchedule,
    Schedule,
    make_schedule,
)

__all__ = [
    "PATTERN_NAMES",
    "SCHEDULE_NAMES",
    "DecodingStep",
    "DelaySchedule",
    "ExplicitSchedule",
    "FlatSchedule",
    "InterleavedSchedule",
    "InvalidScheduleError",
    "ParallelSchedule",
    "Pattern",
    "PatternLayout",
    "Representation",
    "Schedule",
    "make_pattern",
    "make_schedule",
]
