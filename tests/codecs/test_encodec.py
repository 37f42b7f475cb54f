import math

import pytest
import torch

from lightning_sdm.codecs import CodecConfig, EncodecCodec


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return EncodecCodec()


def test_codec_describes_the_32khz_music_codec_shape(codec):
    assert codec.sample_rate == 32000
    assert codec.frame_rate == 50
    assert codec.num_codebooks == 4
    assert codec.cardinality == 2048


@pytest.mark.parametrize("num_samples", [640, 1000, 32000, 32001])
def test_encode_gives_int_codes_per_frame(codec, num_samples):
    wav = torch.randn(2, num_samples) * 0.1
    codes, latents = codec.encode_with_latents(wav)
    frames = math.ceil(num_samples / 640)
    assert codes.shape == (2, 4, frames) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < 2048
    assert latents.shape == (2, codec.latent_dim, frames)
    assert torch.equal(codec.encode(wav), codes)


def test_chunked_encoding_matches_whole_track(codec):
    wav = torch.randn(1, 32000 * 3 + 77) * 0.1
    chunked = EncodecCodec(CodecConfig(chunk_seconds=1.0, context_seconds=0.5), model=codec.model)
    assert torch.equal(chunked.encode(wav), codec.encode(wav))


def test_decode_returns_audio_of_the_frames_length(codec):
    codes = torch.randint(0, 2048, (2, 4, 10))
    assert codec.decode(codes).shape == (2, 6400)
    with pytest.raises(ValueError, match="codes"):
        codec.decode(torch.zeros(2, 3, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="lie in"):
        codec.decode(torch.full((1, 4, 2), 5000))


def test_codec_loads_from_a_local_directory(codec, tmp_path):
    codec.save_pretrained(tmp_path / "encodec")
    loaded = EncodecCodec(CodecConfig(pretrained=str(tmp_path / "encodec")))
    wav = torch.randn(1, 16000) * 0.1
    assert torch.equal(loaded.encode(wav), codec.encode(wav))


def test_missing_codec_directory_fails_without_reaching_a_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="never fetches weights"):
        EncodecCodec(CodecConfig(pretrained=str(tmp_path / "nope")))


def test_stereo_input_is_refused(codec):
    with pytest.raises(ValueError, match="mono"):
        codec.encode(torch.zeros(1, 2, 640))
