"""The depth decoder: teacher-forced logits equal cached decoding logits, no prediction sees
its own frame-level or a later one, and it generates, saves and loads like a pattern LM."""

import pytest
import torch

from lightning_sdm.conditioning import EMPTY_CONDITION
from lightning_sdm.errors import UserInputError
from lightning_sdm.models.depth_lm import DepthLM
from lightning_sdm.models.lm import LMConfig
from lightning_sdm.models.sampling import SamplingConfig
from lightning_sdm.models.text_to_music import TextToMusicLM
from tests.conftest import tiny_model

CAPTIONS = ["warm rhodes chords at 90 bpm in d minor", "fast techno"]


def random_codes(model, batch, frames, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, model.num_levels, frames)
    return torch.randint(0, model.cardinality, shape, generator=generator)


def test_the_depth_pattern_builds_the_depth_decoder():
    assert isinstance(tiny_model("depth").lm, DepthLM)


@pytest.mark.parametrize("frames", [1, 6, 13])
def test_teacher_forced_logits_equal_cached_decoding(frames):
    model = tiny_model("depth")
    codes = random_codes(model, 2, frames)
    trained = model(codes, CAPTIONS)
    cached = model.score_cached(codes, CAPTIONS)
    assert trained.shape == (2, 4, frames, model.cardinality)
    assert (trained - cached).abs().max() <= 1e-4


def test_equality_holds_in_the_cfg_doubled_batch_and_with_static_shapes():
    model = tiny_model("depth", seed=1)
    codes = random_codes(model, 2, 7, seed=1)
    cached = model.score_cached(
        torch.cat([codes, codes]), CAPTIONS + [EMPTY_CONDITION] * 2, static_shapes=True
    )
    conditional, unconditional = model(codes, CAPTIONS), model(codes, [EMPTY_CONDITION] * 2)
    assert (cached[:2] - conditional).abs().max() <= 1e-4
    assert (cached[2:] - unconditional).abs().max() <= 1e-4
    assert (conditional - unconditional).abs().max() > 1e-3  # the text reaches the logits


def decoding_order(levels, frames):
    """The step at which each (level, frame) is predicted: frame by frame, level by level."""
    return torch.arange(frames)[None] * levels + torch.arange(levels)[:, None]


def test_gradients_reach_only_the_embeddings_of_earlier_tokens():
    model = tiny_model("depth", seed=4)
    frames, levels = 4, model.num_levels
    codes = random_codes(model, 1, frames, seed=4)[0]
    temporal, depth = model.lm.token_embedding, model.lm.depth_token_embedding
    for level in range(levels):
        for frame in range(frames):
            model.zero_grad()
            model(codes[None], CAPTIONS[:1])[0, level, frame].sum().backward()
            # Temporal rows: tokens of earlier frames, and frame 0's start rows.
            allowed = {(i, int(codes[i, f])) for i in range(levels) for f in range(frame)}
            allowed |= {(i, model.lm.special_token) for i in range(levels)}
            touched = {tuple(i) for i in temporal.grad.abs().amax(-1).nonzero().tolist()}
            assert touched == allowed
            # Depth rows: the lower levels of this frame (row i + 1 reads level i).
            allowed = {(i + 1, int(codes[i, frame])) for i in range(level)}
            allowed.add((0, model.lm.special_token))  # the start of every frame
            touched = {tuple(i) for i in depth.grad.abs().amax(-1).nonzero().tolist()}
            assert touched == allowed


@pytest.mark.parametrize("delay", [0, 2])
def test_generation_counts_its_steps_and_keeps_a_prompt(delay):
    model = tiny_model("depth", seed=5, acoustic_delay=delay)
    calls = []
    prompt = random_codes(model, 2, 3, seed=5)
    codes = model.generate(
        CAPTIONS, 6, sampling=SamplingConfig(cfg_scale=3.0), prompt_tokens=prompt, seed=1,
        on_step=lambda: calls.append(1),
    )  # fmt: skip
    assert codes.shape == (2, 4, 6)
    assert torch.equal(codes[..., :3], prompt)
    assert (codes < model.cardinality).all()  # no special token left in the clip
    assert len(calls) == model.lm.decoding_steps(6) == (6 + delay) * (1 + 4)
    assert model.lm.max_cache_keys(6) == 6 + delay + 4
    again = model.generate(CAPTIONS, 6, sampling=SamplingConfig(cfg_scale=3.0),
                           prompt_tokens=prompt, seed=1)  # fmt: skip
    assert torch.equal(codes, again)  # per-row seeds: repeatable


def test_save_and_load_keep_the_logits(tmp_path):
    model = tiny_model("depth", seed=6)
    model.save_pretrained(tmp_path / "depth")
    loaded = TextToMusicLM.from_pretrained(tmp_path / "depth")
    codes = random_codes(model, 1, 5)
    assert isinstance(loaded.lm, DepthLM)
    assert torch.equal(model(codes, CAPTIONS[:1]), loaded(codes, CAPTIONS[:1]))


def test_a_depth_width_the_heads_do_not_divide_is_refused_in_one_line():
    with pytest.raises(UserInputError, match="depth_dim 30 is not divisible by depth_heads 4"):
        LMConfig(pattern="depth", depth_dim=30, depth_heads=4)


@pytest.mark.parametrize(("frames", "delay"), [(1, 1), (1, 2), (6, 1), (7, 2)])
def test_with_an_acoustic_delay_teacher_forcing_still_equals_cached_decoding(frames, delay):
    model = tiny_model("depth", seed=7, acoustic_delay=delay)
    codes = random_codes(model, 2, frames, seed=7)
    trained = model(codes, CAPTIONS)
    assert trained.shape == (2, 4, frames, model.cardinality)
    doubled = model.score_cached(
        torch.cat([codes, codes]), CAPTIONS + [EMPTY_CONDITION] * 2, static_shapes=True
    )
    assert (doubled[:2] - trained).abs().max() <= 1e-4
    assert (model.score_cached(codes, CAPTIONS) - trained).abs().max() <= 1e-4


@pytest.mark.parametrize(("delay", "per_level"), [(0, False), (2, False), (1, True)])
def test_no_prediction_sees_a_token_of_its_own_step_or_later_in_the_delayed_order(delay, per_level):
    model = tiny_model("depth", seed=8, acoustic_delay=delay, weights_per_level=per_level)
    frames = 4
    codes = random_codes(model, 1, frames, seed=8)
    order = model.lm.token_steps(frames)
    if delay:  # level 1 of frame 0 waits for level 0 of frame `delay`
        assert order[1, 0] > order[0, delay]
    else:
        assert torch.equal(order, decoding_order(model.num_levels, frames))
    base = model(codes, CAPTIONS[:1])
    generator = torch.Generator().manual_seed(9)
    steps = sorted(set(order.flatten().tolist()))
    for index, step in enumerate(steps):
        later = order >= step
        noise = torch.randint(1, model.cardinality, codes.shape, generator=generator)
        perturbed = torch.where(later, (codes + noise) % model.cardinality, codes)
        unchanged = (model(perturbed, CAPTIONS[:1]) - base).abs().amax(dim=-1)[0] <= 1e-6
        assert unchanged[order <= step].all(), f"a prediction up to step {step} saw a later token"
        if index + 1 < len(steps):  # and the next prediction does see this one
            assert not unchanged[order == steps[index + 1]].all()


def test_an_acoustic_delay_is_refused_in_one_line_where_it_means_nothing():
    with pytest.raises(UserInputError, match="applies to the depth decoder"):
        LMConfig(pattern="delay", depth_acoustic_delay=1)
    with pytest.raises(UserInputError, match="depth_weights_per_level applies to the depth"):
        LMConfig(pattern="stack", depth_weights_per_level=True)
    with pytest.raises(UserInputError, match="must be >= 0 frames"):
        LMConfig(pattern="depth", depth_acoustic_delay=-1)


@pytest.mark.parametrize(("frames", "delay"), [(1, 0), (6, 0), (5, 1)])
def test_with_weights_per_level_teacher_forcing_still_equals_cached_decoding(frames, delay):
    model = tiny_model("depth", seed=11, acoustic_delay=delay, weights_per_level=True)
    codes = random_codes(model, 2, frames, seed=11)
    trained = model(codes, CAPTIONS)
    doubled = model.score_cached(
        torch.cat([codes, codes]), CAPTIONS + [EMPTY_CONDITION] * 2, static_shapes=True
    )
    assert (doubled[:2] - trained).abs().max() <= 1e-4
    assert (model.score_cached(codes, CAPTIONS) - trained).abs().max() <= 1e-4
    unconditional = model(codes, [EMPTY_CONDITION] * 2)
    assert (doubled[2:] - unconditional).abs().max() <= 1e-4


def test_weights_per_level_give_each_level_its_own_projections_and_nothing_else():
    shared = tiny_model("depth", seed=12)
    per_level = tiny_model("depth", seed=12, weights_per_level=True)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    projections = sum(
        m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        for m in shared.lm.depth_decoder.modules()
        if isinstance(m, torch.nn.Linear)
    )
    levels = shared.num_levels
    assert count(per_level.lm) - count(shared.lm) == (levels - 1) * projections
    # Changing level 2's weights changes level 2's logits only (nothing below, nothing else).
    codes = random_codes(per_level, 1, 3, seed=12)
    before = per_level(codes, CAPTIONS[:1])
    with torch.no_grad():
        for module in per_level.lm.depth_decoder.modules():
            if hasattr(module, "at"):
                module.weight[2] += 0.05
    changed = (per_level(codes, CAPTIONS[:1]) - before).abs().amax(dim=(0, 2, 3)) > 1e-6
    assert changed.tolist() == [False, False, True, True]  # level 3 reads level 2's state


def test_a_model_with_weights_per_level_generates_saves_and_loads(tmp_path):
    model = tiny_model("depth", seed=13, weights_per_level=True)
    codes = model.generate(CAPTIONS, 4, sampling=SamplingConfig(cfg_scale=3.0), seed=2)
    assert codes.shape == (2, 4, 4) and (codes < model.cardinality).all()
    model.save_pretrained(tmp_path / "m")
    loaded = TextToMusicLM.from_pretrained(tmp_path / "m")
    assert loaded.config.lm.depth_weights_per_level
    assert torch.equal(loaded.generate(CAPTIONS, 4, sampling=SamplingConfig(cfg_scale=3.0),
                                       seed=2), codes)  # fmt: skip
