"""Slow, literal re-statements of patterns.md used to check the fast plans."""

from __future__ import annotations

import numpy as np


def stack_positions(steps: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(t, j, step computed, last step visible) for every stack position that is computed."""
    num_levels, num_timesteps = steps.shape
    last = int(steps.max())
    positions = []
    for t in range(num_timesteps):
        full_step = int(steps[-1, t]) + 1
        full_computed = full_step <= last
        for j in range(num_levels):
            death = int(steps[-1, t]) if full_computed else last
            positions.append((t, j, int(steps[j, t]), death))
        if full_computed:
            positions.append((t, num_levels, full_step, last))
    return positions


def live_keys_per_step(positions: list[tuple[int, int, int, int]]) -> dict[int, int]:
    computed_steps = sorted({step for _, _, step, _ in positions})
    return {
        s: sum(1 for _, _, step, death in positions if step <= s <= death) for s in computed_steps
    }
