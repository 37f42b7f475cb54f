"""Signal measures: they separate what they should."""

import math

import torch

from lightning_sdm.metrics import chroma_similarity, log_mel_distance, pitch_clarity, si_snr

RATE = 16000
TIME = torch.arange(RATE * 2) / RATE


def tone(frequency: float) -> torch.Tensor:
    return 0.5 * torch.sin(2 * math.pi * frequency * TIME)


def noise(seed: int = 0) -> torch.Tensor:
    return 0.3 * torch.randn(TIME.shape, generator=torch.Generator().manual_seed(seed))


def test_si_snr_ignores_scale_and_falls_with_noise():
    assert si_snr(0.1 * tone(440), tone(440))[0] > 60
    clean = si_snr(tone(440) + 0.01 * noise(), tone(440))[0]
    noisy = si_snr(tone(440) + 0.3 * noise(), tone(440))[0]
    assert clean > noisy > 0


def test_pitch_clarity_is_high_for_a_tone_middling_for_a_chord_low_for_noise():
    single = pitch_clarity(tone(261.63), RATE)[0]
    triad = pitch_clarity(tone(261.63) + tone(329.63) + tone(392.0), RATE)[0]
    hiss = pitch_clarity(noise(), RATE)[0]
    assert single > 10 and 2.5 < triad < 4.5 and hiss < 2


def test_chroma_similarity_tells_notes_apart_but_not_octaves():
    assert chroma_similarity(tone(440), tone(440), RATE)[0] > 0.99
    assert chroma_similarity(tone(220), tone(440), RATE)[0] > 0.95  # same pitch class
    assert chroma_similarity(tone(311.13), tone(440), RATE)[0] < 0.2  # a tritone apart


def test_log_mel_distance_is_zero_for_identical_audio_and_grows_with_difference():
    assert log_mel_distance(tone(440), tone(440), RATE)[0] < 1e-4
    near = log_mel_distance(tone(440) + 0.001 * noise(), tone(440), RATE)[0]
    far = log_mel_distance(noise(1), tone(440), RATE)[0]
    assert 0 < near < far
