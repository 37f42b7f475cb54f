"""VGGish: the log-mel frontend of the original, the architecture's shapes, local weights."""

import pytest
import torch

from lightning_sdm.errors import UserInputError
from lightning_sdm.metrics.frechet import FrechetAudioDistance
from lightning_sdm.metrics.vggish import (
    VGGish,
    VGGishEmbedder,
    log_mel_patches,
    mel_matrix,
    patches_for,
)


def band_centres_hz() -> torch.Tensor:
    """Each mel band's peak frequency, from the matrix itself."""
    frequencies = torch.linspace(0, 8000, 257)
    return frequencies[mel_matrix().argmax(0)]


def test_a_tone_lights_the_band_at_its_frequency():
    t = torch.arange(32000) / 16000
    patches = log_mel_patches(0.5 * torch.sin(2 * torch.pi * 1000 * t))
    assert patches.shape == (patches_for(2.0), 1, 96, 64) == (2, 1, 96, 64)
    loudest = patches.mean(dim=(0, 1, 2)).argmax()
    assert abs(float(band_centres_hz()[loudest]) - 1000) < 60
    # the frontend's range: nothing below 125 Hz or above 7.5 kHz, the DC bin unused
    weights = mel_matrix()
    frequencies = torch.linspace(0, 8000, 257)
    assert weights[frequencies < 125].sum() == 0 and weights[frequencies > 7500].sum() == 0
    assert weights[0].sum() == 0


def test_short_clips_give_one_padded_patch():
    assert log_mel_patches(torch.zeros(1000)).shape == (1, 1, 96, 64)


def test_local_weights_load_and_embed_one_vector_per_patch(tmp_path):
    torch.manual_seed(0)
    torch.save(VGGish().state_dict(), tmp_path / "vggish.pth")
    embedder = VGGishEmbedder(tmp_path / "vggish.pth")
    clips = [torch.randn(16000 * 3), torch.randn(8000)]
    embeddings = embedder.embed(clips)
    assert [e.shape for e in embeddings] == [(3, 128), (1, 128)]
    assert (embeddings[0] >= 0).all()  # the embedding layer ends in a ReLU, as the original
    metric = FrechetAudioDistance(embedder)
    metric.update(clips, sample_rate=16000, real=True)
    metric.update([c * 0.1 for c in clips], sample_rate=16000, real=False)
    assert int(metric.compute()["real_frames"]) == 4


def test_missing_or_foreign_weights_are_refused(tmp_path):
    with pytest.raises(UserInputError, match="needs its weights as a local state dict"):
        VGGishEmbedder(tmp_path / "nowhere.pth")
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserInputError, match="is not a VGGish state dict"):
        VGGishEmbedder(tmp_path / "other.pth")
