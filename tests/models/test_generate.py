"""generate(): shapes, ranges, seeds, prompts, sampling options, and learning from captions."""

import pytest
import torch

from lightning_sdm.models.sampling import SamplingConfig, sample_tokens
from lightning_sdm.models.text_to_music import TextToMusicLM
from tests.conftest import ALL_PATTERNS, tiny_model

CAPTIONS = ["slow cello in c minor", "bright marimba at 140 bpm", "noise"]


@pytest.mark.parametrize(("name", "k"), ALL_PATTERNS)
def test_generate_shape_range_and_seed(name, k):
    model = tiny_model(name, k)
    first = model.generate(CAPTIONS, 11, seed=7)
    again = model.generate(CAPTIONS, 11, seed=7)
    other = model.generate(CAPTIONS, 11, seed=8)
    assert first.shape == (3, 4, 11) and first.dtype == torch.long
    assert first.min() >= 0 and first.max() < model.cardinality
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize(("name", "k"), [("delay", 1), ("stack_delay", 3)])
def test_a_prompt_samples_the_same_alone_and_inside_a_batch(name, k):
    model = tiny_model(name, k)
    settings = SamplingConfig(temperature=1.0, top_k=0, cfg_scale=2.0)
    alone = model.generate([CAPTIONS[1]], 10, sampling=settings, seed=[7])
    batch = model.generate(CAPTIONS, 10, sampling=settings, seed=[3, 7, 5])
    assert torch.equal(alone[0], batch[1])
    assert not torch.equal(batch[0], batch[1])  # the batch mates draw from their own seeds
    # One int seeds row r with seed + r.
    assert torch.equal(model.generate(CAPTIONS, 10, sampling=settings, seed=6)[1], alone[0])


def test_a_seed_per_row_must_match_the_captions():
    with pytest.raises(ValueError, match="2 seeds for 3 captions"):
        tiny_model("delay", 1).generate(CAPTIONS, 4, seed=[1, 2])


def test_on_step_is_called_once_per_decoding_step():
    model = tiny_model("stack_delay", 3)
    calls = []
    model.generate(CAPTIONS[:1], 9, seed=0, on_step=lambda: calls.append(1))
    assert len(calls) == model.lm.layout(9).num_decoding_steps


def test_prompt_tokens_are_continued_not_resampled():
    model = tiny_model("stack_delay", 2)
    prompt = torch.randint(
        0, model.cardinality, (3, 4, 5), generator=torch.Generator().manual_seed(0)
    )
    codes = model.generate(CAPTIONS, 12, prompt_tokens=prompt, seed=1)
    assert torch.equal(codes[..., :5], prompt)
    assert codes.shape == (3, 4, 12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt_tokens": torch.zeros(3, 3, 2, dtype=torch.long)}, "prompt_tokens must be"),
        ({"prompt_tokens": torch.zeros(3, 4, 20, dtype=torch.long)}, "prompt length"),
        ({"prompt_tokens": torch.full((3, 4, 2), 99)}, "prompt tokens must lie"),
    ],
)
def test_bad_prompts_fail_clearly(kwargs, message):
    model = tiny_model("delay", 1)
    with pytest.raises(ValueError, match=message):
        model.generate(CAPTIONS, 10, **kwargs)


def test_bad_arguments_fail_clearly():
    model = tiny_model("delay", 1)
    with pytest.raises(TypeError, match="list of captions"):
        model.generate("one caption", 4)
    with pytest.raises(ValueError, match="at least one caption"):
        model.generate([], 4)
    with pytest.raises(ValueError, match="num_timesteps"):
        model.generate(["x"], 0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=1.5)


def test_greedy_is_deterministic_without_a_seed_and_matches_top_k_one():
    model = tiny_model("stack", 1)
    greedy = model.generate(CAPTIONS, 6, sampling=SamplingConfig(temperature=0))
    top_one = model.generate(CAPTIONS, 6, sampling=SamplingConfig(top_k=1), seed=3)
    assert torch.equal(greedy, top_one)


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(2000, 1)
    generator = torch.Generator().manual_seed(0)
    top_two = sample_tokens(logits, SamplingConfig(top_k=2), generator)
    assert set(top_two.tolist()) == {0, 1}
    # Softmax mass: 0.64, 0.24, 0.09, ...: top_p 0.8 keeps the first two tokens only.
    nucleus = sample_tokens(logits, SamplingConfig(top_k=0, top_p=0.8), generator)
    assert set(nucleus.tolist()) == {0, 1}
    everything = sample_tokens(logits, SamplingConfig(top_k=0), generator)
    assert set(everything.tolist()) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize(
    ("settings", "kept"),
    [
        (SamplingConfig(top_k=0), 5),
        (SamplingConfig(top_k=3), 3),
        (SamplingConfig(top_k=0, top_p=0.8), 2),
        (SamplingConfig(top_k=3, top_p=0.95, temperature=2.0), 3),
    ],
)
def test_samples_follow_the_renormalised_distribution(settings, kept):
    # Token j's logit ranks order[j]-th: the candidates' ids must map back to the tokens.
    order = torch.tensor([3, 0, 4, 1, 2])
    logits = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0])[order]
    draws = 40_000
    tokens = sample_tokens(logits.repeat(draws, 1), settings, torch.Generator().manual_seed(0))
    scaled = (logits / settings.temperature).softmax(dim=-1)
    expected = torch.where(order < kept, scaled, 0.0)
    expected = expected / expected.sum()
    frequencies = torch.bincount(tokens, minlength=5) / draws
    assert (frequencies - expected).abs().max() <= 0.01


def test_guidance_changes_the_samples():
    model = tiny_model("delay", 1)
    plain = model.generate(CAPTIONS, 8, sampling=SamplingConfig(cfg_scale=1.0), seed=0)
    guided = model.generate(CAPTIONS, 8, sampling=SamplingConfig(cfg_scale=3.0), seed=0)
    assert not torch.equal(plain, guided)


@pytest.mark.parametrize(("name", "k"), [("stack_delay", 3), ("delay", 1)])
def test_overfit_model_generates_the_sequence_of_its_caption(name, k):
    """A tiny model trained on two captions generates the right one for each."""
    model = tiny_model(name, k, dim=64, cfg_dropout=0.3).train()
    captions = ["a calm piano melody in c major", "loud distorted guitar riff"]
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, model.cardinality, (2, 4, 8), generator=generator)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    torch.manual_seed(0)
    for _ in range(250):
        texts = model.conditioner.cfg_dropout(captions)
        logits = model(targets, texts)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 2), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    greedy = SamplingConfig(temperature=0)
    assert torch.equal(model.generate(captions, 8, sampling=greedy), targets)
    assert torch.equal(model.generate(captions[::-1], 8, sampling=greedy), targets.flip(0))
    # Default sampling (temperature 1, top-k 250, CFG 3) picks the caption's sequence too,
    # up to the odd low-probability token.
    sampled = model.generate(captions, 8, seed=0)
    own = (sampled == targets).float().flatten(1).mean(dim=1)
    other = (sampled == targets.flip(0)).float().flatten(1).mean(dim=1)
    assert torch.all(own >= 0.9) and torch.all(other < 0.3)


def test_saved_model_loads_back_and_generates_the_same(tmp_path):
    model = tiny_model("stack_delay", 3)
    model.save_pretrained(tmp_path / "model")
    loaded = TextToMusicLM.from_pretrained(tmp_path / "model").eval()
    assert loaded.config.lm == model.config.lm
    assert loaded.config.text.pretrained == str(tmp_path / "model" / "text_encoder")
    assert torch.equal(model.generate(CAPTIONS, 9, seed=2), loaded.generate(CAPTIONS, 9, seed=2))


def test_loading_a_directory_that_is_not_a_model_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved lightning_sdm model"):
        TextToMusicLM.from_pretrained(tmp_path)
