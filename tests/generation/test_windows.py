import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_sdm.generation import WindowPlan, generate_in_windows
from tests.conftest import tiny_model


def recording_generator(calls, seed=0):
    """A window generator that keeps its prompt and fills the rest with fresh numbers."""
    counter = iter(range(seed, 10**9))

    def window(length, context, index):
        calls.append((length, None if context is None else context.clone(), index))
        fresh = torch.tensor([next(counter) for _ in range(length)]).expand(1, 2, length)
        if context is None:
            return fresh.clone()
        return torch.cat([context, fresh[..., context.shape[-1] :]], dim=-1)

    return window


@settings(max_examples=60, deadline=None)
@given(
    window=st.integers(2, 12),
    stride_fraction=st.floats(0.05, 0.95),
    total=st.integers(1, 60),
    prompt=st.integers(0, 30),
)
def test_windows_keep_the_previous_frames_and_stitch_to_the_asked_length(
    window, stride_fraction, total, prompt
):
    stride = min(window - 1, max(1, round(stride_fraction * window)))
    plan = WindowPlan(window=window, stride=stride)
    given_prompt = torch.arange(-prompt, 0).expand(1, 2, prompt).clone() if prompt else None
    if prompt >= total:
        with pytest.raises(ValueError, match="nothing would be generated"):
            generate_in_windows(recording_generator([]), total, plan, given_prompt)
        return
    calls = []
    codes = generate_in_windows(recording_generator(calls), total, plan, given_prompt)
    assert codes.shape == (1, 2, total)
    if given_prompt is not None:
        assert torch.equal(codes[..., :prompt], given_prompt)
    produced = 0 if given_prompt is None else prompt
    for length, context, index in calls:
        assert length <= window
        if index > 0 or (given_prompt is not None and prompt >= window):
            assert context.shape[-1] == plan.context  # a continuation keeps window - stride
        if context is not None:
            # The kept tokens are exactly the last frames of what existed before the call.
            assert torch.equal(context, codes[..., produced - context.shape[-1] : produced])
            produced += length - context.shape[-1]
        else:
            produced += length
    assert produced == total


def test_a_stride_must_leave_context_inside_the_window():
    with pytest.raises(ValueError, match="shorter than the window"):
        WindowPlan(window=10, stride=10)
    with pytest.raises(ValueError, match="must be positive"):
        WindowPlan(window=10, stride=0)


@pytest.mark.parametrize(("name", "k"), [("delay", 1), ("flat", 1), ("stack_delay", 3)])
def test_the_model_continues_its_own_windows_for_any_pattern(name, k):
    model = tiny_model(name, k)
    calls = []

    def window(length, context, index):
        codes = model.generate(["a"], length, prompt_tokens=context, seed=index)
        calls.append((context, codes))
        return codes

    codes = generate_in_windows(window, 23, WindowPlan(window=10, stride=6))
    assert codes.shape == (1, 4, 23)
    assert [c.shape[-1] for c, _ in calls[1:]] == [4, 4, 4]
    for (_, before), (_, after) in itertools.pairwise(calls):
        assert torch.equal(after[..., :4], before[..., -4:])
