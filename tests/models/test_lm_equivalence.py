"""Teacher-forced training logits equal cached decoding logits, and nothing leaks."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_sdm.conditioning import EMPTY_CONDITION
from lightning_sdm.nn.cached_decoding import StepDecoder
from tests.conftest import ALL_PATTERNS, tiny_config, tiny_model

CAPTIONS = ["warm rhodes chords at 90 bpm in d minor", "fast techno"]


def random_codes(model, batch, T, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cardinality, (batch, model.num_levels, T), generator=generator)


@pytest.mark.parametrize(("name", "k"), ALL_PATTERNS)
@pytest.mark.parametrize("T", [1, 6, 13])
def test_teacher_forced_logits_equal_cached_decoding(name, k, T):
    model = tiny_model(name, k)
    codes = random_codes(model, 2, T)
    trained = model(codes, CAPTIONS)
    cached = model.score_cached(codes, CAPTIONS)
    assert trained.shape == (2, 4, T, model.cardinality)
    assert (trained - cached).abs().max() <= 1e-4


@pytest.mark.parametrize(("name", "k"), ALL_PATTERNS)
def test_equality_holds_in_the_cfg_doubled_batch(name, k):
    model = tiny_model(name, k)
    codes = random_codes(model, 2, 9, seed=1)
    doubled_texts = CAPTIONS + [EMPTY_CONDITION] * 2
    doubled_codes = torch.cat([codes, codes])
    cached = model.score_cached(doubled_codes, doubled_texts)
    trained_conditional = model(codes, CAPTIONS)
    trained_unconditional = model(codes, [EMPTY_CONDITION] * 2)
    assert (cached[:2] - trained_conditional).abs().max() <= 1e-4
    assert (cached[2:] - trained_unconditional).abs().max() <= 1e-4
    # The condition matters: conditional and unconditional rows differ.
    assert (trained_conditional - trained_unconditional).abs().max() > 1e-3


@pytest.mark.parametrize(("name", "k"), ALL_PATTERNS)
def test_no_leak_from_tokens_decoded_at_or_after_a_step(name, k):
    model = tiny_model(name, k)
    T = 8
    codes = random_codes(model, 1, T, seed=2)
    steps = model.lm.layout(T).token_steps
    base = model(codes, CAPTIONS[:1])
    generator = torch.Generator().manual_seed(3)
    changed_somewhere = False
    for step in sorted(set(steps.flatten().tolist())):
        later = steps >= step
        perturbed = codes.clone()
        noise = torch.randint(1, model.cardinality, codes.shape, generator=generator)
        perturbed[:, later] = (codes[:, later] + noise[:, later]) % model.cardinality
        logits = model(perturbed, CAPTIONS[:1])
        unaffected = steps <= step
        assert (logits[:, unaffected] - base[:, unaffected]).abs().max() <= 1e-5
        if (~unaffected).any():
            difference = (logits[:, ~unaffected] - base[:, ~unaffected]).abs().max()
            changed_somewhere |= bool(difference > 1e-4)
    # The check can fail: later predictions do depend on earlier tokens.
    assert changed_somewhere


@pytest.mark.parametrize(("name", "k"), [("delay", 1), ("stack", 1), ("stack_delay", 3)])
def test_no_leak_through_gradients(name, k):
    model = tiny_model(name, k)
    T = 6
    codes = random_codes(model, 1, T, seed=4)
    layout = model.lm.layout(T)
    steps = layout.token_steps
    present = layout.input_index >= 0
    input_steps = torch.where(present, steps.flatten()[layout.input_index.clamp(min=0)], -1)
    captured = {}

    def capture(module, args):
        args[0].retain_grad()  # the position inputs entering the decoder
        captured["inputs"] = args[0]

    model.lm.decoder.register_forward_pre_hook(capture)
    for level in range(4):
        for t in range(T):
            model(codes, CAPTIONS[:1])[0, level, t].sum().backward()
            grad = captured["inputs"].grad[0].abs().sum(dim=-1)  # [N]
            # Positions holding a token sampled at or after G(level, t) get no gradient.
            forbidden = (input_steps >= steps[level, t]).any(dim=0)
            assert torch.all(grad[forbidden] == 0.0)
            assert grad[~forbidden].sum() > 0


@st.composite
def model_cases(draw):
    name = draw(st.sampled_from(["delay", "flat", "stack", "stack_delay", "parallel"]))
    return (
        name,
        draw(st.sampled_from([1, 2, 3, 4, 5])),
        draw(st.integers(1, 10)),
        draw(st.integers(1, 5)),
    )


@settings(max_examples=12)
@given(model_cases())
def test_property_equality_and_no_leak_over_random_sizes(case):
    name, k, T, C = case
    model = tiny_model(name, k, num_levels=C, num_layers=1)
    codes = random_codes(model, 1, T, seed=T * 7 + C)
    base = model(codes, CAPTIONS[:1])
    assert (base - model.score_cached(codes, CAPTIONS[:1])).abs().max() <= 1e-4
    steps = model.lm.layout(T).token_steps
    middle = int(steps.flatten().median())
    perturbed = codes.clone()
    perturbed[:, steps >= middle] = (perturbed[:, steps >= middle] + 1) % model.cardinality
    unaffected = steps <= middle
    assert (model(perturbed, CAPTIONS[:1])[:, unaffected] - base[:, unaffected]).abs().max() <= 1e-5


@pytest.mark.parametrize(("name", "k"), ALL_PATTERNS)
def test_cache_holds_only_the_live_key_bound(name, k, monkeypatch):
    model = tiny_model(name, k)
    allocated = []
    original = StepDecoder.new_cache

    def spy(self, num_slots, context, context_mask):
        cache = original(self, num_slots, context, context_mask)
        allocated.append(cache)
        return cache

    monkeypatch.setattr(StepDecoder, "new_cache", spy)
    T = 40
    model.generate(CAPTIONS, T, seed=0)
    layout = model.lm.layout(T)
    (cache,) = allocated
    assert cache.num_slots == layout.max_live_keys
    if name.startswith("stack"):
        # Evicted partial stacks free their slots: far fewer slots than positions.
        assert cache.num_slots < layout.num_positions // 3
        assert cache.num_slots <= T + 4 * 3 // 2 + (4 if name == "stack" else 0)


@pytest.mark.parametrize(("name", "k"), ALL_PATTERNS)
def test_static_shape_steps_give_the_same_logits(name, k):
    # Attending over every slot under the visibility mask must see exactly the live keys.
    model = tiny_model(name, k)
    codes = random_codes(model, 2, 11, seed=3)
    sliced = model.score_cached(codes, CAPTIONS)
    static = model.score_cached(codes, CAPTIONS, static_shapes=True)
    assert (sliced - static).abs().max() <= 1e-5
    assert (model(codes, CAPTIONS) - static).abs().max() <= 1e-4


@pytest.mark.parametrize(("name", "k"), ALL_PATTERNS)
def test_bf16_decoding_stays_close_to_fp32(name, k):
    model = tiny_model(name, k)
    codes = random_codes(model, 2, 9, seed=4)
    full = model.score_cached(codes, CAPTIONS)
    reduced = model.score_cached(codes, CAPTIONS, precision="bf16")
    assert reduced.dtype == torch.float32
    assert 0 < (full - reduced).abs().max() <= 0.05 * full.abs().max()
    sampled = model.generate(CAPTIONS, 9, seed=0, precision="bf16")
    assert sampled.shape == codes.shape and sampled.dtype == torch.long
    model.lm.set_inference_precision("bf16")  # a bf16 model kept as such
    assert model.lm.head_weight.dtype == torch.bfloat16
    # A bf16 call embeds in the model's fp32 and casts; a bf16 model embeds in bf16.
    kept = model.score_cached(codes, CAPTIONS)
    assert (kept - reduced).abs().max() <= 0.05 * full.abs().max()


def test_a_bf16_call_leaves_the_model_exactly_as_it_was():
    """An fp32 run after a bf16 run gives the fp32 logits, not bf16-rounded ones."""
    model = tiny_model("stack_delay", 3)
    codes = random_codes(model, 2, 9, seed=4)
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    before = model.score_cached(codes, CAPTIONS)
    model.generate(CAPTIONS, 9, seed=0, precision="bf16")
    model.score_cached(codes, CAPTIONS, precision="bf16")
    assert torch.equal(model.score_cached(codes, CAPTIONS), before)
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == weights[name].dtype and torch.equal(tensor, weights[name]), name


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="bf16"):
        tiny_model("delay", 1).lm.set_inference_precision("fp8")


def prepared_weights(model) -> int:
    """What a decode prepares: per layer the fused self-attention query/key/value, its
    output, the cross-attention query and output, the FFN's two; then one head per level."""
    return 6 * len(model.lm.decoder.layers) + model.num_levels


@pytest.mark.parametrize(("name", "k"), ALL_PATTERNS)
def test_packed_weights_give_the_logits_of_plain_matmuls(name, k, packed_layer_counts):
    model = tiny_model(name, k)
    codes = random_codes(model, 2, 11, seed=5)
    packed = model.score_cached(codes, CAPTIONS)
    plain = model.score_cached(codes, CAPTIONS, pack_weights=False)
    # Every projection of every layer went through a packed weight, and only when asked.
    assert packed_layer_counts == [prepared_weights(model)]
    assert (packed - plain).abs().max() <= 1e-4
    assert (model(codes, CAPTIONS) - packed).abs().max() <= 1e-4


def test_auto_takes_the_path_measured_faster_for_each_shape_and_a_forced_path_measures_nothing(
    monkeypatch, packed_layer_counts
):
    from lightning_sdm.nn import packed_linear

    measured = []

    def measured_paths(choose):
        def fastest(weights, rows):
            measured.append(rows)
            return {packed_linear.shape_name(w): choose(w) for w in weights}

        return fastest

    model = tiny_model("delay", 1)
    codes = random_codes(model, 2, 11, seed=5)
    reference = model.score_cached(codes, CAPTIONS, pack_weights=False)
    monkeypatch.setattr(packed_linear, "fastest_paths", measured_paths(lambda w: "linear"))
    model.generate(CAPTIONS, 5, seed=0)
    assert packed_layer_counts == [] and measured == [4]  # 2 captions + CFG, 1 position
    monkeypatch.setattr(packed_linear, "fastest_paths", measured_paths(lambda w: "packed"))
    model.generate(CAPTIONS, 5, seed=0)
    assert packed_layer_counts == [prepared_weights(model)]
    model.generate(CAPTIONS, 5, seed=0, pack_weights=False)
    model.generate(CAPTIONS, 5, seed=0, pack_weights=True)
    assert measured == [4, 4] and len(packed_layer_counts) == 2
    # Shapes measured apart: square weights on one path, the rest on the other.
    square = measured_paths(lambda w: "packed" if w.shape[0] == w.shape[1] else "linear")
    monkeypatch.setattr(packed_linear, "fastest_paths", square)
    mixed = model.score_cached(codes, CAPTIONS)
    layers = len(model.lm.decoder.layers)
    assert packed_layer_counts[-1] == 3 * layers  # self out, cross query, cross out
    assert (mixed - reference).abs().max() <= 1e-4
    summary = model.lm.matmul_path(1, 11)
    assert f"{model.lm.config.dim}x{model.lm.config.dim} packed" in summary and "linear" in summary


@pytest.mark.parametrize("name", ["flat", "delay", "parallel"])
def test_frame_positions_keep_teacher_forcing_equal_to_cached_decoding_and_leak_nothing(name):
    model = tiny_model(name, 1, token_positions="frame")
    for T in (1, 7):
        codes = random_codes(model, 2, T, seed=T)
        doubled = torch.cat([codes, codes])
        cached = model.score_cached(doubled, CAPTIONS + [EMPTY_CONDITION] * 2)
        assert (model(codes, CAPTIONS) - cached[:2]).abs().max() <= 1e-4
        assert (model(codes, [EMPTY_CONDITION] * 2) - cached[2:]).abs().max() <= 1e-4
    T = 7
    codes = random_codes(model, 1, T, seed=5)
    steps = model.lm.layout(T).token_steps
    base = model(codes, CAPTIONS[:1])
    middle = int(steps.flatten().median())
    perturbed = codes.clone()
    perturbed[:, steps >= middle] = (perturbed[:, steps >= middle] + 1) % model.cardinality
    logits = model(perturbed, CAPTIONS[:1])
    assert (logits[:, steps <= middle] - base[:, steps <= middle]).abs().max() <= 1e-5
    assert (logits[:, steps > middle] - base[:, steps > middle]).abs().max() > 1e-4


def test_frame_positions_change_what_flat_positions_encode():
    by_step = tiny_model("flat", 1)
    by_frame = tiny_model("flat", 1, token_positions="frame")
    assert by_step.lm.level_embedding is None and by_frame.lm.level_embedding is not None
    by_frame.lm.level_embedding.weight.data.zero_()  # left: the positions' sinusoids differ
    by_frame.load_state_dict(by_step.state_dict(), strict=False)
    codes = random_codes(by_step, 1, 5)
    assert (by_step(codes, CAPTIONS[:1]) - by_frame(codes, CAPTIONS[:1])).abs().max() > 1e-3


@pytest.mark.parametrize("pattern", ["stack", "stack_delay", "depth"])
def test_frame_positions_on_a_pattern_that_has_them_is_one_line(pattern):
    from lightning_sdm.errors import UserInputError

    with pytest.raises(UserInputError, match="token_positions applies to token patterns"):
        tiny_config(pattern, 1, token_positions="frame")
    with pytest.raises(UserInputError, match="token_positions must be one of"):
        tiny_config("flat", 1, token_positions="time")
