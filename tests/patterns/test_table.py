"""patterns.md's Table 1, from the real plans at T = 1500, C = 4."""

import pytest

from lightning_sdm.patterns import make_pattern
from tests.patterns.oracle import live_keys_per_step, stack_positions

T, C = 1500, 4


@pytest.mark.parametrize(
    ("name", "k", "steps", "keys"),
    [
        ("parallel", 1, T, T),
        ("delay", 1, T + C - 1, T + C - 1),
        ("flat", 1, C * T, C * T),
        # The full stack is computed in the same step as the next empty stack, replacing
        # its partial stacks: T + C - 1 live keys at most, within the table's T + C.
        ("stack", 1, C * T, T + C - 1),
        ("stack_delay", 1, T + C - 1, T + C * (C - 1) // 2),
        ("stack_delay", 2, 1505, 1505),
        ("stack_delay", 3, 1509, 1504),
        ("stack_delay", 4, 1515, 1504),
    ],
)
def test_decoding_steps_and_cache_keys_match_table(name, k, steps, keys):
    layout = make_pattern(name, k=k).layout(T, C)
    assert layout.num_decoding_steps == steps
    assert layout.max_live_keys == keys
    assert layout.num_slots == keys


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_stack_delay_keys_agree_with_literal_oracle(k):
    layout = make_pattern("stack_delay", k=k).layout(T, C)
    oracle = live_keys_per_step(stack_positions(layout.token_steps.numpy()))
    assert max(oracle.values()) == layout.max_live_keys
    assert layout.block_live_keys.tolist() == [oracle[s] for s in layout.block_step.tolist()]
    assert layout.max_live_keys <= T + C * (C - 1) // 2


def test_stack_keys_bound():
    layout = make_pattern("stack").layout(T, C)
    assert layout.max_live_keys <= T + C
    oracle = live_keys_per_step(stack_positions(layout.token_steps.numpy()))
    assert max(oracle.values()) == layout.max_live_keys
