"""The sequence layout and decoding plan of a pattern for one grid size.

Training and cached decoding both read from this single object, so they cannot disagree
about which position predicts which token, what it sees, or when a key leaves the cache.
Positions are ordered by the step that computes them, so every decoding step is a
contiguous block of positions.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

import numpy as np
import torch

NO_TOKEN = -1


class Representation(StrEnum):
    """How the model sees what is already decoded (patterns.md)."""

    TOKEN = "token"
    STACK = "stack"


@dataclass(frozen=True)
class DecodingStep:
    """One forward pass of cached decoding, for inspection and display."""

    index: int
    step: int
    positions: range
    sampled: list[tuple[int, int]]  # (level, timestep) of each token sampled here
    evicted: list[int]  # positions whose keys leave the cache before this step
    live_keys: int  # keys in the cache while this step attends


class PatternLayout:
    """Everything derived from (schedule, representation, T, C); build via `Pattern.layout`."""

    def __init__(self, steps: np.ndarray, representation: Representation) -> None:
        self.representation = representation
        self.num_levels, self.num_timesteps = (int(n) for n in steps.shape)
        self.token_steps = torch.from_numpy(steps.copy())
        self.last_step = int(steps.max())
        if representation is Representation.TOKEN:
            fields = _token_positions(steps)
        else:
            fields = _stack_positions(steps, self.last_step)
        step, time_index, level_index, input_index, target_index, last_visible = fields
        self.num_positions = int(step.shape[0])
        self.step = torch.from_numpy(step)
        self.time_index = torch.from_numpy(time_index)
        self.level_index = torch.from_numpy(level_index)
        self.input_index = torch.from_numpy(input_index)
        self.target_index = torch.from_numpy(target_index)
        self.last_visible = torch.from_numpy(last_visible)

        block_steps, block_start = np.unique(step, return_index=True)
        self.block_step = torch.from_numpy(block_steps.astype(np.int64))
        self.block_start = torch.from_numpy(
            np.append(block_start, self.num_positions).astype(np.int64)
        )
        slots, extent, live, max_live = _allocate_slots(step, last_visible, block_steps)
        self.slot = torch.from_numpy(slots)
        self.block_extent = torch.from_numpy(extent)
        self.block_live_keys = torch.from_numpy(live)
        self.max_live_keys = max_live
        self.num_slots = int(slots.max()) + 1

        # Position predicting each grid token, so logits come out directly as [C, T].
        level, position = np.nonzero(target_index >= 0)
        flat = target_index[level, position]
        prediction_position = np.full(self.num_levels * self.num_timesteps, -1, dtype=np.int64)
        prediction_position[flat] = position
        self.prediction_position = torch.from_numpy(
            prediction_position.reshape(self.num_levels, self.num_timesteps)
        )
        # Per block, the sampled tokens as (level, timestep, offset within the block).
        order = np.lexsort((level, position))
        target_level, target_position = level[order], position[order]
        target_flat = flat[order]
        self.target_level = torch.from_numpy(target_level)
        self.target_time = torch.from_numpy(target_flat % self.num_timesteps)
        self.target_position = torch.from_numpy(target_position)
        self.target_block_start = torch.from_numpy(
            np.searchsorted(target_position, np.append(block_start, self.num_positions))
        )

    @property
    def num_decoding_steps(self) -> int:
        return int(self.block_step.shape[0])

    @property
    def loss_mask(self) -> torch.Tensor:
        """[C, N] bool: position n has a target at level l."""
        return self.target_index >= 0

    @cached_property
    def attention_mask(self) -> torch.Tensor:
        """[N, N] bool, True where query n may attend key m (the training mask).

        Query at step s sees keys computed at a step <= s that are still alive at s.
        """
        query_step = self.step[:, None]
        return (self.step[None, :] <= query_step) & (self.last_visible[None, :] >= query_step)

    @cached_property
    def frame_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per position, the (timestep, level) of the lowest-level token it predicts: its
        frame and level, for a model that encodes positions by frame instead of by step.
        A position predicting nothing takes its predecessor's."""
        has_target = self.target_index >= 0  # [C, N]
        level = has_target.int().argmax(dim=0)
        index = self.target_index.gather(0, level[None])[0]
        time = torch.where(index >= 0, index % self.num_timesteps, -1)
        for position in range(1, self.num_positions):  # rare (gaps in a schedule): carry
            if time[position] < 0:
                time[position], level[position] = time[position - 1], level[position - 1]
        return time.clamp(min=0), level.to(torch.int64)

    @cached_property
    def is_causal(self) -> bool:
        """Whether the training mask is plain causal (each position sees itself and every
        earlier one): then attention can run without a mask tensor."""
        size = self.attention_mask.shape[0]
        causal = torch.ones(size, size, dtype=torch.bool).tril()
        return bool(torch.equal(self.attention_mask, causal))

    @cached_property
    def attention_key_order(self) -> torch.Tensor:
        """[N] positions with the keys that stay visible to the last step first, then the
        rest, each in step order. In this order a query's visible keys form few blocks: a
        prefix of the long-lived keys and a short run of the others (for stack layouts, the
        full stacks so far and the few live partial stacks), which block-sparse attention
        exploits."""
        forever = self.last_visible == self.last_step
        return torch.cat([torch.nonzero(forever).squeeze(1), torch.nonzero(~forever).squeeze(1)])

    def to_sequence(self, codes: torch.Tensor, index: torch.Tensor, fill: int) -> torch.Tensor:
        """Gather grid codes [..., C, T] into sequence layout [..., C, N] along `index`."""
        flat = codes.flatten(-2)
        padded = torch.cat([flat, flat.new_full((*flat.shape[:-1], 1), fill)], dim=-1)
        safe = torch.where(index >= 0, index, flat.shape[-1]).to(codes.device)
        return padded[..., safe.flatten()].unflatten(-1, index.shape)

    def target_sequence(self, codes: torch.Tensor, ignore: int = -100) -> torch.Tensor:
        """Targets [..., C, N]; `ignore` where a level has no target."""
        return self.to_sequence(codes, self.target_index, ignore)

    def sequence_to_grid(self, targets: torch.Tensor) -> torch.Tensor:
        """Inverse of `target_sequence`: [..., C, N] back to [..., C, T]."""
        index = self.prediction_position.to(targets.device)
        return targets.gather(-1, index.expand(*targets.shape[:-2], *index.shape))

    def position_label(self, position: int) -> str:
        if self.representation is Representation.TOKEN:
            return f"s{int(self.step[position])}"
        return f"({int(self.time_index[position])},{int(self.level_index[position])})"

    def decoding_steps(self) -> Iterator[DecodingStep]:
        """The decoding plan, one entry per forward pass."""
        last_visible = self.last_visible.numpy()
        for block in range(self.num_decoding_steps):
            start, end = (int(x) for x in self.block_start[block : block + 2])
            step = int(self.block_step[block])
            previous = int(self.block_step[block - 1]) if block else -1
            t_start, t_end = (int(x) for x in self.target_block_start[block : block + 2])
            evicted = np.nonzero((last_visible >= previous) & (last_visible < step))[0]
            yield DecodingStep(
                index=block,
                step=step,
                positions=range(start, end),
                sampled=[
                    (int(level), int(time))
                    for level, time in zip(
                        self.target_level[t_start:t_end],
                        self.target_time[t_start:t_end],
                        strict=True,
                    )
                ],
                evicted=[int(p) for p in evicted],
                live_keys=int(self.block_live_keys[block]),
            )


def _token_positions(steps: np.ndarray) -> tuple[np.ndarray, ...]:
    """One position per step; input = tokens of step s−1, targets = tokens of step s."""
    num_levels, num_timesteps = steps.shape
    num_positions = int(steps.max()) + 1
    input_index = np.full((num_levels, num_positions), NO_TOKEN, dtype=np.int64)
    target_index = np.full((num_levels, num_positions), NO_TOKEN, dtype=np.int64)
    flat = np.arange(num_levels * num_timesteps, dtype=np.int64).reshape(steps.shape)
    for level in range(num_levels):
        target_index[level, steps[level]] = flat[level]
        feeds_next = steps[level] + 1 < num_positions
        input_index[level, steps[level][feeds_next] + 1] = flat[level][feeds_next]
    step = np.arange(num_positions, dtype=np.int64)
    forever = np.full(num_positions, num_positions - 1, dtype=np.int64)
    return step, step.copy(), np.zeros_like(step), input_index, target_index, forever


def _stack_positions(steps: np.ndarray, last_step: int) -> tuple[np.ndarray, ...]:
    """Positions (t, j), j in [0, C]; the full stack (t, C) replaces t's partial stacks."""
    num_levels, num_timesteps = steps.shape
    times = np.repeat(np.arange(num_timesteps, dtype=np.int64), num_levels + 1)
    levels = np.tile(np.arange(num_levels + 1, dtype=np.int64), num_timesteps)
    full_step = steps[-1] + 1
    step = np.where(levels < num_levels, steps[np.minimum(levels, num_levels - 1), times], 0)
    step = np.where(levels == num_levels, full_step[times], step)
    # A full stack computed after the last sampling step would serve nobody.
    keep = step <= last_step
    times, levels, step = times[keep], levels[keep], step[keep]
    order = np.lexsort((levels, times, step))
    times, levels, step = times[order], levels[order], step[order]

    num_positions = step.shape[0]
    input_index = np.full((num_levels, num_positions), NO_TOKEN, dtype=np.int64)
    target_index = np.full((num_levels, num_positions), NO_TOKEN, dtype=np.int64)
    for level in range(num_levels):
        below = levels > level
        input_index[level, below] = level * num_timesteps + times[below]
        at = levels == level
        target_index[level, at] = level * num_timesteps + times[at]
    has_full = full_step <= last_step
    partial_last_visible = np.where(has_full, steps[-1], last_step)
    last_visible = np.where(levels == num_levels, last_step, partial_last_visible[times])
    return step, times, levels, input_index, target_index, last_visible.astype(np.int64)


def _allocate_slots(
    step: np.ndarray, last_visible: np.ndarray, block_steps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Give every position a cache slot, reusing slots of evicted keys (lowest first).

    Returns per-position slots, per-block slot extent (attention reads slots [0, extent)),
    per-block live-key counts, and the largest live count (= number of slots needed).
    """
    num_positions = step.shape[0]
    slots = np.empty(num_positions, dtype=np.int64)
    by_last_visible = np.argsort(last_visible, kind="stable")
    free: list[int] = []
    next_slot = 0
    expired = 0
    live = 0
    position = 0
    extents = np.empty(block_steps.shape[0], dtype=np.int64)
    live_counts = np.empty(block_steps.shape[0], dtype=np.int64)
    extent = 0
    for block, current in enumerate(block_steps):
        while expired < num_positions and last_visible[by_last_visible[expired]] < current:
            # A key dies no earlier than the step that wrote it, so its slot is set.
            heapq.heappush(free, int(slots[by_last_visible[expired]]))
            live -= 1
            expired += 1
        while position < num_positions and step[position] == current:
            if free:
                slots[position] = heapq.heappop(free)
            else:
                slots[position] = next_slot
                next_slot += 1
            extent = max(extent, int(slots[position]) + 1)
            live += 1
            position += 1
        extents[block] = extent
        live_counts[block] = live
    return slots, extents, live_counts, int(live_counts.max())
