"""Fréchet distance: closed forms, an independent float64 computation, frame accounting,
and a 2-process reduction that equals one process."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_sdm.metrics.evaluation import LOAD_RATE, Clip, markdown_table, score_fad
from lightning_sdm.metrics.frechet import FrechetAudioDistance, frechet_distance


class FramesEmbedder:
    """Each clip [N] becomes N // 4 frames of 4 values: a known frame count per clip."""

    sample_rate = 1000
    dim = 4
    name = "reshape"

    def embed(self, clips):
        return [clip[: len(clip) // 4 * 4].reshape(-1, 4) for clip in clips]


def test_diagonal_gaussians_match_the_closed_form():
    mean_a, mean_b = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    var_a, var_b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    expected = (mean_a - mean_b).pow(2).sum() + (var_a + var_b - 2 * (var_a * var_b).sqrt()).sum()
    got = frechet_distance(mean_a, torch.diag(var_a), mean_b, torch.diag(var_b))
    assert abs(float(got) - float(expected)) < 1e-10  # 5 + 4 + 1 + 0 = 10


def test_full_covariances_match_an_independent_float64_computation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    cov_a, cov_b = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mean_a, mean_b = rng.normal(size=6), rng.normal(size=6)
    # tr((AB)^1/2) as the sum of the square roots of AB's (real, positive) eigenvalues
    cross = np.sqrt(np.linalg.eigvals(cov_a @ cov_b).real).sum()
    expected = ((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    got = frechet_distance(*(torch.from_numpy(x) for x in (mean_a, cov_a, mean_b, cov_b)))
    assert abs(float(got) - expected) < 1e-8 * max(1.0, expected)


def test_identical_sets_are_at_zero_and_frames_are_counted():
    metric = FrechetAudioDistance(FramesEmbedder())
    clips = [torch.randn(400, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    metric.update(clips, sample_rate=1000, real=True)
    metric.update(clips, sample_rate=1000, real=False)
    result = metric.compute()
    assert float(result["fad"]) < 1e-9
    assert int(result["real_frames"]) == 300 and int(result["real_clips"]) == 3
    shifted = FrechetAudioDistance(FramesEmbedder())
    shifted.update(clips, sample_rate=1000, real=True)
    shifted.update([c + 1.0 for c in clips], sample_rate=1000, real=False)
    assert abs(float(shifted.compute()["fad"]) - 4.0) < 1e-6  # a shift of 1 in 4 dimensions


def test_too_few_frames_say_so():
    metric = FrechetAudioDistance(FramesEmbedder())
    metric.update([torch.randn(4)], sample_rate=1000, real=True)
    with pytest.raises(ValueError, match="at least 2 real embedding frames"):
        metric.compute()


def _rank(rank: int, world: int, port: int, clips, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    metric = FrechetAudioDistance(FramesEmbedder())
    metric.update(clips["real"][rank::world], sample_rate=1000, real=True)
    metric.update(clips["fake"][rank::world], sample_rate=1000, real=False)
    result = metric.compute()
    if rank == 0:
        queue.put({k: float(v) for k, v in result.items()})
    dist.destroy_process_group()


def test_two_processes_reduce_to_what_one_computes():
    generator = torch.Generator().manual_seed(1)
    clips = {
        "real": [torch.randn(200, generator=generator) for _ in range(6)],
        "fake": [0.5 * torch.randn(120, generator=generator) + 0.3 for _ in range(6)],
    }
    single = FrechetAudioDistance(FramesEmbedder())
    single.update(clips["real"], sample_rate=1000, real=True)
    single.update(clips["fake"], sample_rate=1000, real=False)
    expected = {k: float(v) for k, v in single.compute().items()}
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = 29500 + os.getpid() % 1000
    mp.start_processes(_rank, args=(2, port, clips, queue), nprocs=2, start_method="spawn")
    got = queue.get(timeout=60)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(got[key] - value) < 1e-9 * max(1.0, abs(value)), key


def test_codec_latents_embed_one_frame_per_codec_frame():
    from lightning_sdm.codecs import CodecConfig, EncodecCodec
    from lightning_sdm.metrics.embedders import CodecLatentEmbedder
    from tests.tasks.test_codec_task import TINY_CODEC

    torch.manual_seed(0)
    codec = EncodecCodec(CodecConfig(encodec_config=dict(TINY_CODEC)))
    embedder = CodecLatentEmbedder(codec)
    metric = FrechetAudioDistance(embedder)
    t = torch.arange(16000) / 16000
    tones = [torch.sin(2 * torch.pi * f * t) * 0.3 for f in (220, 330, 440)]
    noise = [0.3 * torch.randn(16000, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    metric.update(tones, sample_rate=16000, real=True)  # resampled to the codec's 8 kHz
    metric.update(noise, sample_rate=16000, real=False)
    result = metric.compute()
    assert int(result["real_frames"]) == 3 * codec.num_frames(8000)
    assert float(result["fad"]) > 0


class LoadRateEmbedder(FramesEmbedder):
    """FramesEmbedder at the rate `evaluate` loads clips at (no resampling)."""

    sample_rate = LOAD_RATE


def noise_clips(count: int, seed: int) -> list[Clip]:
    """`count` seeded noise clips of 400 samples (100 frames each)."""
    generator = torch.Generator().manual_seed(seed)
    return [Clip(f"c{i}", None, torch.randn(400, generator=generator), {}) for i in range(count)]


def test_a_set_with_fewer_frames_than_dimensions_is_said_to_bias_fad():
    """FAD over fewer embedding frames than dimensions has a singular covariance and sits
    far above its limit; two systems scored on sets of different sizes compared nothing."""

    # 200 generated frames of 4 dimensions: no note
    enough = score_fad(noise_clips(2, 0), noise_clips(8, 1), LoadRateEmbedder(), bootstrap=0)
    assert "note" not in enough.details
    fewer = score_fad(
        [Clip("c", None, torch.randn(12), {})], noise_clips(8, 1), LoadRateEmbedder(), 0
    )
    assert "FAD from 3 embedding frames of 4 dimensions" in fewer.details["note"]
    assert "- fad: FAD from 3 embedding frames" in markdown_table([fewer])


def test_one_generated_clip_is_said_to_stand_for_no_system_and_gets_no_interval():
    """Resampling a single clip draws it every time: a zero-width 'interval' would look like
    certainty. One clip on either side is named in the report."""

    one = score_fad(noise_clips(1, 0), noise_clips(8, 1), LoadRateEmbedder(), bootstrap=50)
    assert one.interval is None
    assert "FAD of 1 generated against 8 reference clip(s)" in one.details["note"]
    assert "- fad: FAD of 1 generated" in markdown_table([one])
    one_reference = score_fad(
        noise_clips(3, 0), noise_clips(1, 1), LoadRateEmbedder(), bootstrap=50
    )
    assert "against 1 reference clip(s)" in one_reference.details["note"]
    assert (
        one_reference.interval is not None and one_reference.interval[0] < one_reference.interval[1]
    )
