"""KLD, CLAP score, RTF and bootstrap intervals: the math on hand-built inputs, and the
transformers backends as tiny random models loaded from temp directories."""

import math
import warnings

import pytest
import torch

from lightning_sdm.errors import UserInputError
from lightning_sdm.metrics.embedders import ASTClassifier, ClapEmbedder, resample
from lightning_sdm.metrics.text_audio import (
    CLAPScore,
    KLDivergence,
    RealTimeFactor,
    bootstrap_interval,
    label_kl,
)
from tests.metrics.backends import save_tiny_ast, save_tiny_clap


def test_softmax_kl_matches_hand_computed_distributions():
    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    expected = 0.5 * math.log(2) + 0.25 * math.log(0.5)
    got = label_kl(p.log()[None], q.log()[None], "softmax")
    assert abs(float(got) - expected) < 1e-12
    assert float(label_kl(p.log()[None], p.log()[None])) == 0.0


def test_sigmoid_kl_is_a_mean_of_bernoulli_divergences():
    logit = lambda x: math.log(x / (1 - x))  # noqa: E731
    p, q = [0.9, 0.5], [0.5, 0.5]
    reference = torch.tensor([[logit(v) for v in p]], dtype=torch.float64)
    generated = torch.tensor([[logit(v) for v in q]], dtype=torch.float64)
    first = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert abs(float(label_kl(reference, generated, "sigmoid")) - first / 2) < 1e-9


def test_rtf_and_bootstrap():
    rtf = RealTimeFactor()
    rtf.update(2.0, 10.0)
    rtf.update(1.0, 5.0)
    assert abs(float(rtf.compute()) - 0.2) < 1e-12
    with pytest.raises(ValueError):
        rtf.update(1.0, 0.0)
    low, high = bootstrap_interval(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    assert 1.0 < low < 3.5 < high < 6.0
    assert bootstrap_interval(torch.full((5,), 2.0)) == (2.0, 2.0)


def test_clap_score_on_a_tiny_clap_is_a_mean_cosine(tmp_path):
    clap = ClapEmbedder(save_tiny_clap(tmp_path / "clap"))
    assert clap.sample_rate == 16000 and clap.dim == 8 and "weights" in clap.name
    wavs = [torch.randn(40000, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    texts = ["a harp", "an organ", "drums"]
    metric = CLAPScore(clap)
    metric.update(wavs, texts, sample_rate=32000)  # resampled to the model's 16 kHz
    # by hand: each clip's window embeddings (1.25 s at 16 kHz in 1 s windows) averaged
    audio = torch.stack([f.mean(0) for f in clap.embed([resample(w, 32000, 16000) for w in wavs])])
    expected = torch.nn.functional.cosine_similarity(audio, clap.embed_text(texts), dim=-1)
    assert abs(float(metric.compute()) - float(expected.mean())) < 1e-5
    assert clap.embed([resample(wavs[0], 32000, 16000)])[0].shape == (2, 8)


def test_a_caption_longer_than_clap_reads_is_cut_and_said_to_be(tmp_path):
    # Its text model has 64 positions, the first after the padding index: 63 tokens.
    clap = ClapEmbedder(save_tiny_clap(tmp_path / "clap"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clap.embed_text(["x" * 62])  # ByT5: a token per byte, + the end token: exactly 63
    with pytest.warns(UserWarning, match=r"longer than CLAP's text model reads \(63 tokens\)"):
        embedded = clap.embed_text(["a harp", "звон колоколов " * 40])
    assert embedded.shape == (2, 8) and torch.isfinite(embedded).all()


def test_kld_on_a_tiny_ast_pairs_clips(tmp_path):
    classifier = ASTClassifier(save_tiny_ast(tmp_path / "ast"))
    generator = torch.Generator().manual_seed(0)
    reference = [torch.randn(16000, generator=generator) for _ in range(2)]
    same = KLDivergence(classifier)
    same.update(reference, reference, sample_rate=16000)
    assert float(same.compute()) < 1e-9
    other = KLDivergence(classifier)
    other.update([torch.sin(torch.arange(16000) * 0.3)] * 2, reference, sample_rate=16000)
    assert float(other.compute()) > 0
    with pytest.raises(ValueError, match="2 generated clips for 1 references"):
        other.update(reference, reference[:1], sample_rate=16000)


def test_a_missing_backend_directory_names_the_metric(tmp_path):
    with pytest.raises(UserInputError, match="CLAP needs a local model directory"):
        ClapEmbedder(tmp_path / "nowhere")
    with pytest.raises(UserInputError, match="KLD needs a local model directory"):
        ASTClassifier(tmp_path)
