"""The probe's arithmetic: an oracle model reconstructs exactly, a model that predicts
nothing useful does no better than predicting zero, and doing nothing gets worse with t."""

from __future__ import annotations

import pytest
import torch

from lightning_sdm.metrics.diffusion_probe import format_probe, reconstruction_probe
from tests.conftest import save_tiny_dit_with_codec


@pytest.fixture
def dit(tmp_path):
    from lightning_sdm.models.text_to_audio_diffusion import TextToAudioDiffusion

    return TextToAudioDiffusion.from_pretrained(save_tiny_dit_with_codec(tmp_path / "dit"))


def test_an_oracle_reconstructs_and_zero_velocity_does_not(dit, monkeypatch):
    latents = torch.randn(2, 16, 24, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 24, dtype=torch.bool)
    clean = dit.normalise(latents)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))  # the probe's
    alphas = dit.scheduler.alphas_cumprod

    def oracle(noisy, given, to_generate, timesteps, texts, frame_mask=None):
        a = alphas[timesteps[0]]
        return a.sqrt() * noise - (1 - a).sqrt() * clean  # the true velocity on the path

    monkeypatch.setattr(dit, "predict", oracle)
    rows = reconstruction_probe(dit, latents, mask, ["a", "b"], steps=5)
    assert [row.noise_level for row in rows] == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert all(row.one_step < 1e-6 and row.denoised < 1e-6 for row in rows)
    doing_nothing = [row.noisy_input for row in rows]
    assert doing_nothing == sorted(doing_nothing) and doing_nothing[-1] > 1

    monkeypatch.setattr(dit, "predict", lambda x, *args, **kwargs: torch.zeros_like(x))
    blind = reconstruction_probe(dit, latents, mask, ["a", "b"], steps=5)
    assert blind[-1].one_step > 0.5  # x_t scaled by sqrt(alpha): mostly noise at t = 0.9
    assert "one step" in format_probe(blind)
