"""Training transformers' residual quantizer: k-means, EMA, dead codes, dropout."""

import torch
from transformers import EncodecConfig, EncodecModel

from lightning_sdm.codecs.rvq import (
    QuantizerTraining,
    ResidualQuantizerTrainer,
    codebook_usage,
    kmeans,
)

CENTRES = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])


def clustered(points_per_cluster: int = 50, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = 0.1 * torch.randn(4, points_per_cluster, 2, generator=generator)
    return (CENTRES[:, None] + noise).reshape(-1, 2)


def quantizer(codebook_size: int = 4, levels: int = 2, bandwidths=None) -> ResidualQuantizerTrainer:
    # frame rate 1 Hz: a bandwidth of b kbps gives floor(1000 b / log2(size)) levels
    config = EncodecConfig(
        sampling_rate=2, upsampling_ratios=[2], hidden_size=2, codebook_dim=2,
        codebook_size=codebook_size, target_bandwidths=bandwidths or [levels * 2 / 1000],
    )  # fmt: skip
    trainer = ResidualQuantizerTrainer(
        EncodecModel(config).quantizer,
        QuantizerTraining(decay=0.9, dead_code_threshold=0.0),
        list(config.target_bandwidths),
    )
    trainer.reset()
    return trainer


def nearest_centre_error(centroids: torch.Tensor) -> float:
    return float(torch.cdist(CENTRES, centroids).min(dim=1).values.max())


def test_kmeans_finds_known_clusters():
    centroids, sizes = kmeans(clustered(), 4, 10, torch.Generator().manual_seed(1))
    assert nearest_centre_error(centroids) < 0.1
    assert sorted(sizes.tolist()) == [50.0] * 4


def test_first_batch_initialises_the_first_level_by_kmeans():
    rvq = quantizer()
    vectors = clustered()
    latents = vectors.T[None]  # [1, D, T]
    assert not bool(rvq.codebooks[0].inited)
    out = rvq(latents, levels=1, update=True)
    assert bool(rvq.codebooks[0].inited)
    assert nearest_centre_error(rvq.codebooks[0].embed) < 0.1
    # each point's code is its cluster's
    assert len(set(out.codes[0, 0, :50].tolist())) == 1
    assert len(set(out.codes[0, 0].tolist())) == 4


def test_ema_moves_codes_towards_the_batch_means_by_one_minus_decay():
    rvq = quantizer()
    vectors = clustered()
    rvq(vectors.T[None], levels=1, update=True)
    codebook = rvq.codebooks[0]
    before = codebook.embed.clone()
    shifted = vectors + torch.tensor([1.0, 0.0])  # every cluster moves 1 to the right
    rvq(shifted.T[None], levels=1, update=True)
    moved = codebook.embed - before
    # sizes and sums both decay with 0.9: the mean moves by about 1 - 0.9 of the shift
    assert torch.allclose(moved[:, 0], torch.full((4,), 0.1), atol=0.02)
    assert torch.allclose(moved[:, 1], torch.zeros(4), atol=0.02)


def test_dead_codes_are_replaced_by_batch_vectors():
    rvq = quantizer()
    rvq.config = QuantizerTraining(decay=0.5, dead_code_threshold=1.0)
    codebook = rvq.codebooks[0]
    vectors = clustered()
    rvq(vectors.T[None], levels=1, update=True)
    codebook.embed[0] = torch.tensor([100.0, 100.0])  # a code nothing maps to
    codebook.embed_avg[0] = codebook.embed[0] * codebook.cluster_size[0]
    replaced = sum(rvq(vectors.T[None], levels=1, update=True).replaced_codes for _ in range(8))
    assert replaced >= 1
    assert codebook.embed.abs().max() < 10  # the far code now sits among the data
    assert codebook.cluster_size.min() >= 1.0


def test_without_update_nothing_changes():
    rvq = quantizer()
    rvq(clustered().T[None], levels=1, update=True)
    state = {k: v.clone() for k, v in rvq.quantizer.state_dict().items()}
    rvq(clustered(seed=3).T[None] + 1.0, levels=2, update=False)
    assert all(torch.equal(state[k], v) for k, v in rvq.quantizer.state_dict().items())


def test_later_levels_quantize_the_residual_and_lower_the_error():
    rvq = quantizer(codebook_size=4, levels=2)
    vectors = clustered()
    for _ in range(3):
        rvq(vectors.T[None], levels=2, update=True)
    one = rvq(vectors.T[None], levels=1)
    two = rvq(vectors.T[None], levels=2)
    error = lambda out: float((out.quantized[0].T - vectors).pow(2).mean())  # noqa: E731
    assert error(two) < error(one)
    assert two.codes.shape == (2, 1, vectors.shape[0])


def test_quantiser_dropout_draws_levels_from_the_bandwidths_per_step():
    # 4 codes = 2 bits per level at 1 Hz: 0.002 kbps is one level, 0.008 four
    rvq = quantizer(codebook_size=4, bandwidths=[0.002, 0.004, 0.008])
    drawn = [rvq.sample_levels(step) for step in range(60)]
    assert set(drawn) == {1, 2, 4}
    assert drawn == [rvq.sample_levels(step) for step in range(60)]  # same on every rank
    rvq.config = QuantizerTraining(dropout=False)
    assert {rvq.sample_levels(step) for step in range(10)} == {4}


def test_codebook_usage_counts_perplexity_and_unused_codes():
    codes = torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0]])
    perplexities, unused = codebook_usage(codes, 8)
    assert abs(perplexities[0] - 4.0) < 1e-4 and abs(perplexities[1] - 1.0) < 1e-4
    assert unused == [4, 7]
