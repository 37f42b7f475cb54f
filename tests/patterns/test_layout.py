"""Properties patterns.md requires of every pattern and schedule, checked on the plans."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lightning_sdm.patterns import (
    ExplicitSchedule,
    InvalidScheduleError,
    Pattern,
    Representation,
    make_pattern,
    make_schedule,
)
from tests.conftest import ALL_PATTERNS
from tests.patterns.oracle import live_keys_per_step, stack_positions

SCHEDULES = ["parallel", "delay", "flat", "interleaved"]


@st.composite
def patterns_and_sizes(draw):
    representation = draw(st.sampled_from(list(Representation)))
    schedule = draw(
        st.sampled_from(SCHEDULES if representation is Representation.TOKEN else SCHEDULES[1:])
    )
    k = draw(st.sampled_from([1, 2, 3, 4, 5]))
    pattern = Pattern(
        make_schedule(schedule, k=k), representation, name=f"{representation}+{schedule}"
    )
    return pattern, draw(st.integers(1, 24)), draw(st.integers(1, 6))


def token_step(layout, flat_index):
    return int(layout.token_steps.flatten()[flat_index])


@given(patterns_and_sizes())
def test_every_token_predicted_exactly_once_at_its_step(case):
    pattern, T, C = case
    layout = pattern.layout(T, C)
    targets = layout.target_index[layout.target_index >= 0]
    assert sorted(targets.tolist()) == list(range(C * T))
    levels, positions = torch.nonzero(layout.target_index >= 0, as_tuple=True)
    for level, position in zip(levels.tolist(), positions.tolist(), strict=True):
        flat = int(layout.target_index[level, position])
        assert flat // T == level  # the head of level l predicts a level-l token
        assert int(layout.step[position]) == token_step(layout, flat)


@given(patterns_and_sizes(), st.integers(0, 2**31 - 1))
def test_grid_sequence_grid_round_trips(case, seed):
    pattern, T, C = case
    layout = pattern.layout(T, C)
    codes = torch.randint(0, 2048, (3, C, T), generator=torch.Generator().manual_seed(seed))
    sequence = layout.target_sequence(codes)
    assert sequence.shape == (3, C, layout.num_positions)
    assert torch.equal(layout.sequence_to_grid(sequence), codes)


@given(patterns_and_sizes())
def test_nothing_a_prediction_sees_was_sampled_at_or_after_its_step(case):
    """Structural no-leak: inputs of the query and of every key it sees come strictly earlier."""
    pattern, T, C = case
    layout = pattern.layout(T, C)
    mask = layout.attention_mask
    input_steps = torch.full(layout.input_index.shape, -1, dtype=torch.long)
    present = layout.input_index >= 0
    input_steps[present] = layout.token_steps.flatten()[layout.input_index[present]]
    latest_input = input_steps.max(dim=0).values  # [N], -1 when a position holds no token
    for position in range(layout.num_positions):
        step = int(layout.step[position])
        seen = torch.nonzero(mask[position]).flatten()
        assert position in seen.tolist()  # a query always sees its own key
        assert int(latest_input[seen].max()) < step


@given(patterns_and_sizes())
def test_inputs_are_what_the_representation_defines(case):
    pattern, T, C = case
    layout = pattern.layout(T, C)
    steps = layout.token_steps
    for position in range(layout.num_positions):
        held = {int(i) for i in layout.input_index[:, position] if i >= 0}
        if pattern.representation is Representation.STACK:
            t, j = int(layout.time_index[position]), int(layout.level_index[position])
            assert held == {level * T + t for level in range(j)}
        else:
            s = int(layout.step[position])
            assert held == {int(f) for f in torch.nonzero(steps.flatten() == s - 1).flatten()}


@given(patterns_and_sizes())
def test_visibility_is_the_one_rule_of_patterns_md(case):
    pattern, T, C = case
    layout = pattern.layout(T, C)
    if pattern.representation is Representation.TOKEN:
        causal = layout.step[None, :] <= layout.step[:, None]
        assert torch.equal(layout.attention_mask, causal)
        return
    positions = stack_positions(layout.token_steps.numpy())
    death = {(t, j): d for t, j, _, d in positions}
    for query in range(layout.num_positions):
        s = int(layout.step[query])
        for key in range(layout.num_positions):
            t, j = int(layout.time_index[key]), int(layout.level_index[key])
            expected = int(layout.step[key]) <= s <= death[(t, j)]
            assert bool(layout.attention_mask[query, key]) == expected


@given(patterns_and_sizes())
def test_cache_slots_are_reused_only_after_eviction_and_respect_the_bound(case):
    pattern, T, C = case
    layout = pattern.layout(T, C)
    holder: dict[int, int] = {}
    for block in layout.decoding_steps():
        for position in block.positions:
            slot = int(layout.slot[position])
            previous = holder.get(slot)
            assert previous is None or int(layout.last_visible[previous]) < block.step
            holder[slot] = position
        live = [p for p in holder.values() if int(layout.last_visible[p]) >= block.step]
        assert len(live) == block.live_keys
    assert layout.num_slots == layout.max_live_keys
    if pattern.representation is Representation.TOKEN:
        assert layout.num_slots == layout.num_positions
    else:
        oracle = live_keys_per_step(stack_positions(layout.token_steps.numpy()))
        assert layout.max_live_keys == max(oracle.values())
        schedule_steps = layout.token_steps.numpy()
        first_level_injective = len(np.unique(schedule_steps[0])) == T
        unit_offsets = (schedule_steps - schedule_steps[:1] == np.arange(C)[:, None]).all()
        if first_level_injective and unit_offsets:  # delay-like: stack-delay's bound
            assert layout.max_live_keys <= T + C * (C - 1) // 2
        assert layout.max_live_keys <= T + C * C


@given(patterns_and_sizes())
def test_decoding_plan_blocks_are_contiguous_steps(case):
    pattern, T, C = case
    layout = pattern.layout(T, C)
    seen = []
    for block in layout.decoding_steps():
        assert all(int(layout.step[p]) == block.step for p in block.positions)
        for level, t in block.sampled:
            assert int(layout.token_steps[level, t]) == block.step
        seen.extend(block.sampled)
    assert sorted(seen) == [(level, t) for level in range(C) for t in range(T)]


@given(patterns_and_sizes())
def test_attention_key_order_puts_long_lived_keys_first_and_keeps_each_run_in_step_order(case):
    pattern, T, C = case
    layout = pattern.layout(T, C)
    order = layout.attention_key_order
    assert sorted(order.tolist()) == list(range(layout.num_positions))
    forever = (layout.last_visible == layout.last_step)[order]
    boundary = int(forever.sum())
    assert bool(forever[:boundary].all()) and not bool(forever[boundary:].any())
    for run in (order[:boundary], order[boundary:]):
        assert bool((layout.step[run].diff() >= 0).all())


@pytest.mark.parametrize(("name", "k"), ALL_PATTERNS)
@pytest.mark.parametrize("T", [1, 2, 7, 31])
def test_named_patterns_predict_each_token_once(name, k, T):
    layout = make_pattern(name, k=k).layout(T, 4)
    assert layout.loss_mask.sum() == 4 * T
    assert layout.prediction_position.min() >= 0


def test_schedules_match_their_formulas():
    T, C = 20, 4
    t = np.arange(T)[None, :]
    i = np.arange(C)[:, None]
    assert (make_pattern("delay").layout(T, C).token_steps.numpy() == t + i).all()
    assert (make_pattern("flat").layout(T, C).token_steps.numpy() == C * t + i).all()
    for k in (1, 2, 3, 4):
        expected = t + (t % (k + 1)) * (k - 1) + i
        assert (make_pattern("stack_delay", k=k).layout(T, C).token_steps.numpy() == expected).all()


def test_a_schedule_combines_with_either_representation():
    delay_interleaved = make_pattern("delay", k=3, schedule="interleaved").layout(12, 4)
    stack_delay = make_pattern("stack_delay", k=3).layout(12, 4)
    assert torch.equal(delay_interleaved.token_steps, stack_delay.token_steps)
    assert delay_interleaved.representation is Representation.TOKEN


def test_stack_representation_rejects_a_schedule_that_does_not_increase_with_level():
    with pytest.raises(InvalidScheduleError, match="increase with the level"):
        make_pattern("stack", schedule="parallel").layout(5, 4)


def test_token_representation_rejects_two_tokens_of_one_level_in_one_step():
    pattern = Pattern(ExplicitSchedule(((0, 0, 1),)), Representation.TOKEN)
    with pytest.raises(InvalidScheduleError, match="one token per level and step"):
        pattern.layout(3, 1)


def test_explicit_schedule_shape_is_checked():
    pattern = Pattern(ExplicitSchedule(((0, 1),)), Representation.TOKEN)
    with pytest.raises(InvalidScheduleError, match="shape"):
        pattern.layout(3, 1)


def test_unknown_names_fail_clearly():
    with pytest.raises(ValueError, match="unknown pattern"):
        make_pattern("zigzag")
    with pytest.raises(ValueError, match="unknown schedule"):
        make_pattern("delay", schedule="zigzag")
    with pytest.raises(ValueError, match="interleave k"):
        make_pattern("stack_delay", k=0)


def test_layouts_are_built_once():
    pattern = make_pattern("stack_delay", k=2)
    assert pattern.layout(50, 4) is pattern.layout(50, 4)


def test_frame_positions_name_the_frame_and_level_each_position_predicts_first():
    from lightning_sdm.patterns import make_pattern

    flat = make_pattern("flat").layout(5, 4)
    time, level = flat.frame_positions
    assert time.tolist() == [s // 4 for s in range(20)]
    assert level.tolist() == [s % 4 for s in range(20)]
    delay = make_pattern("delay").layout(5, 4)  # the tail's steps hold the upper levels
    time, level = delay.frame_positions
    assert time.tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    assert level.tolist() == [0, 0, 0, 0, 0, 1, 2, 3]
