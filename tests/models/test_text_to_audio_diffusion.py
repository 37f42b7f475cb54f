"""The latent diffusion model: guidance rescale, span masks, the masked loss, sampling
that keeps given frames and does not depend on batch mates, save/load, learning."""

import pytest
import torch

from lightning_sdm.conditioning import TextConditionerConfig
from lightning_sdm.models.dit import DiTConfig
from lightning_sdm.models.guidance import guide
from lightning_sdm.models.masking import MaskingConfig, span_mask
from lightning_sdm.models.text_to_audio_diffusion import (
    DiffusionSamplingConfig,
    TextToAudioDiffusion,
    TextToAudioDiffusionConfig,
)

FAST = DiffusionSamplingConfig(steps=4, cfg_scale=3.0, cfg_rescale=0.75)


def tiny_model(seed: int = 0, **masking) -> TextToAudioDiffusion:
    torch.manual_seed(seed)
    config = TextToAudioDiffusionConfig(
        dit=DiTConfig(latent_channels=6, dim=32, depth=2, num_heads=4, ada_rank=4, context_dim=32),
        text=TextConditionerConfig(cfg_dropout=0.0),
        masking=MaskingConfig(**masking),
        latent_mean=0.5,
        latent_std=2.0,
    )
    return TextToAudioDiffusion(config)


def test_guidance_rescale_matches_the_formula_on_known_tensors():
    positive = torch.tensor([[[1.0, 3.0]]])  # std sqrt(2)
    negative = torch.tensor([[[1.0, 1.0]]])
    cfg = guide(positive, negative, scale=2.0)  # 1 + 2 (pos - neg) = [1, 5]
    assert torch.equal(cfg, torch.tensor([[[1.0, 5.0]]]))
    # v_re = v_cfg std(pos) / std(cfg) = [1, 5] * sqrt(2) / sqrt(8) = [0.5, 2.5]
    mixed = guide(positive, negative, scale=2.0, rescale=0.75)
    assert torch.allclose(mixed, 0.75 * torch.tensor([[[0.5, 2.5]]]) + 0.25 * cfg)
    assert torch.equal(guide(positive, negative, 2.0, rescale=1.0), torch.tensor([[[0.5, 2.5]]]))


def test_span_masks_follow_their_settings():
    g = torch.Generator().manual_seed(0)
    partial = span_mask(400, 100, MaskingConfig(full_mask_fraction=0.0), g)
    share = partial.float().mean(dim=1)
    assert share.min() > 0 and share.max() <= 1
    assert 0.3 < share.mean() < 0.6  # spans overlap: a little under E[ratio] = 0.625
    runs = torch.diff(partial.int(), dim=1)  # masked frames come in runs that start and end
    starts = (runs == 1).nonzero()
    ends = (runs == -1).nonzero()
    assert len(starts) > 0 and len(ends) > 0
    full = span_mask(400, 100, MaskingConfig(full_mask_fraction=0.75), g)
    assert abs(full.all(dim=1).float().mean() - 0.75) < 0.08
    with pytest.raises(ValueError, match="ratio_min"):
        MaskingConfig(ratio_min=0.0)


def test_the_loss_reads_only_the_frames_to_generate(monkeypatch):
    model = tiny_model(full_mask_fraction=0.0)
    latents = torch.randn(2, 6, 40)
    frames = torch.ones(2, 40, dtype=torch.bool)
    seen = {}
    original = model.predict

    def spy(noisy, given, to_generate, *args, **kwargs):
        seen["to_generate"] = to_generate.clone()
        out = original(noisy, given, to_generate, *args, **kwargs)
        seen["prediction"] = out
        out.retain_grad()
        return out

    monkeypatch.setattr(model, "predict", spy)
    result = model.training_loss(latents, frames, ["a", "b"], torch.Generator().manual_seed(1))
    result.loss.backward()
    mask = seen["to_generate"]
    assert 0 < mask.float().mean() < 1
    gradient = seen["prediction"].grad.abs().sum(dim=1)
    assert bool((gradient[~mask] == 0).all()) and bool((gradient[mask] > 0).all())
    assert torch.isclose(result.generated_share, mask.float().mean())


def test_generation_keeps_given_frames_and_rows_do_not_depend_on_batch_mates():
    model = tiny_model().eval()
    for parameter in model.dit.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    given = torch.randn(1, 6, 16)
    to_generate = torch.zeros(1, 16, dtype=torch.bool)
    to_generate[:, 8:] = True  # continue the first half
    out = model.generate(["a"], 16, sampling=FAST, seed=3, given=given, to_generate=to_generate)
    assert torch.equal(out[:, :, :8], given[:, :, :8])
    assert not torch.allclose(out[:, :, 8:], given[:, :, 8:])
    alone = model.generate(["a slow organ"], 16, sampling=FAST, seed=[7])
    batch = model.generate(["fast drums", "a slow organ", "x"], 16, sampling=FAST, seed=[1, 7, 2])
    assert torch.allclose(alone[0], batch[1], atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])
    eta = DiffusionSamplingConfig(steps=4, eta=1.0)
    first = model.generate(["a"], 16, sampling=eta, seed=5)
    assert torch.equal(first, model.generate(["a"], 16, sampling=eta, seed=5))


def test_generation_checks_its_inputs():
    model = tiny_model().eval()
    with pytest.raises(TypeError, match="list of captions"):
        model.generate("a", 8)
    with pytest.raises(ValueError, match="num_frames"):
        model.generate(["a"], 0)
    with pytest.raises(ValueError, match="given latents must be"):
        model.generate(["a"], 8, given=torch.zeros(1, 6, 5), to_generate=torch.ones(1, 5))
    with pytest.raises(ValueError, match="to_generate needs"):
        model.generate(["a"], 8, to_generate=torch.ones(1, 8))
    with pytest.raises(ValueError, match="context_dim"):
        wide = DiTConfig(context_dim=64, dim=32, depth=2, num_heads=4)
        TextToAudioDiffusion(TextToAudioDiffusionConfig(dit=wide))


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model().eval()
    model.set_latent_stats(-1.0, 3.0)
    model.save_pretrained(tmp_path / "dit")
    loaded = TextToAudioDiffusion.from_pretrained(tmp_path / "dit")
    assert torch.equal(loaded.latent_stats, torch.tensor([-1.0, 3.0]))
    assert torch.equal(
        model.generate(["a"], 8, sampling=FAST, seed=0),
        loaded.generate(["a"], 8, sampling=FAST, seed=0),
    )


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    model = tiny_model()
    latents = torch.randn(4, 6, 1).repeat(1, 1, 24) + 0.1 * torch.randn(4, 6, 24)
    frames = torch.ones(4, 24, dtype=torch.bool)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss() -> float:
        with torch.no_grad():
            values = [
                model.training_loss(latents, frames, ["a"] * 4, torch.Generator().manual_seed(s))
                .loss.item()
                for s in range(8)
            ]  # fmt: skip
        return sum(values) / len(values)

    before = loss()
    for step in range(60):
        result = model.training_loss(
            latents, frames, ["a"] * 4, torch.Generator().manual_seed(step)
        )
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
    assert loss() < 0.7 * before


def test_the_loss_averages_each_sample_over_its_own_frames_then_the_samples():
    from lightning_sdm.models.text_to_audio_diffusion import per_sample_masked_mean

    # sample 0: 4 frames to generate, error 1 each; sample 1: 1 frame, error 3; sample 2:
    # nothing to generate (left out, not counted as a zero)
    values = torch.zeros(3, 2, 4)
    values[0] = 1.0
    values[1, :, 0] = 3.0
    weights = torch.zeros(3, 2, 4)
    weights[0] = 1.0
    weights[1, :, 0] = 1.0
    assert per_sample_masked_mean(values, weights).item() == pytest.approx((1.0 + 3.0) / 2)
    # pooled over all frames it would be (8 * 1 + 2 * 3) / 10 = 1.4
    nothing = per_sample_masked_mean(values, torch.zeros_like(weights))
    assert nothing.item() == 0.0


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_every_step_count_gives_finite_latents(eta):
    """diffusers' variance at t = 999 of a zero-terminal-SNR schedule is slightly negative;
    with eta > 0 its square root was NaN at 39 of the step counts 1-100."""
    from lightning_sdm.models.text_to_audio_diffusion import DiffusionConfig

    for steps in range(1, 101):
        scheduler = DiffusionConfig().scheduler()
        scheduler.set_timesteps(steps)
        x = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(steps))
        for timestep in scheduler.timesteps:
            velocity = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(1))
            generator = torch.Generator().manual_seed(0)
            x = scheduler.step(velocity, timestep, x, eta=eta, generator=generator).prev_sample
        assert torch.isfinite(x).all(), f"{steps} steps"


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_the_steps_equal_diffusers_wherever_its_are_finite(eta):
    from diffusers import DDIMScheduler

    from lightning_sdm.models.text_to_audio_diffusion import DiffusionConfig

    for steps in (1, 2, 4, 5, 8, 10):
        ours = DiffusionConfig().scheduler()
        theirs = DDIMScheduler.from_config(ours.config)
        ours.set_timesteps(steps)
        theirs.set_timesteps(steps)
        x_ours = x_theirs = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(3))
        for timestep in ours.timesteps:
            v = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(int(timestep)))
            rows = [torch.Generator().manual_seed(r) for r in range(2)]
            x_ours = ours.step(v, timestep, x_ours, eta=eta, generator=rows).prev_sample
            rows = [torch.Generator().manual_seed(r) for r in range(2)]
            x_theirs = theirs.step(v, timestep, x_theirs, eta=eta, generator=rows).prev_sample
        if torch.isfinite(x_theirs).all():
            assert torch.equal(x_ours, x_theirs), f"{steps} steps"
