"""A waveform VAE as the diffusion family's codec, end to end: tokenize with it (latents
only), train a DiT on its latents with samples decoded through it, export, generate."""

import json
from pathlib import Path

import numpy as np
import torch
import yaml

from lightning_sdm.cli import main
from lightning_sdm.codecs import CodecConfig, WaveformVAE, is_vae_directory, load_codec
from lightning_sdm.data.shards import read_shard
from lightning_sdm.tasks.vae_task import WaveformVAETask
from tests.data.test_audio_crops import write_tones
from tests.tasks.test_diffusion_task import stage_config
from tests.tasks.test_vae_task import TINY_VAE


def saved_vae(directory: Path) -> Path:
    torch.manual_seed(0)
    return WaveformVAETask(vae_config=TINY_VAE).save_codec(directory)


def test_a_vae_directory_loads_as_a_latent_codec_and_encodec_ones_as_before(tmp_path):
    vae_dir = saved_vae(tmp_path / "vae")
    assert is_vae_directory(vae_dir) and not is_vae_directory(tmp_path)
    codec = load_codec(CodecConfig(pretrained=str(vae_dir)))
    assert isinstance(codec, WaveformVAE) and codec.identity().num_codebooks == 0
    codes, latents = codec.encode_with_latents(torch.zeros(1, 800))
    assert codes.shape == (1, 0, 10) and latents.shape == (1, 4, 10)
    assert codec.decode_latents(latents).shape == (1, 800)
    assert load_codec(CodecConfig(pretrained="random")).identity().num_codebooks > 0


def test_tokenize_train_export_and_generate_through_a_vae(tmp_path, capsys):
    vae_dir = saved_vae(tmp_path / "vae")
    audio = write_tones(tmp_path / "audio", count=8, seconds=1.0, rate=8000)
    for wav in audio.glob("*.wav"):
        wav.with_suffix(".txt").write_text(f"a tone called {wav.stem}")
    shards = tmp_path / "shards"
    tokenize = ["tokenize", str(audio), str(shards), "--codec.pretrained", str(vae_dir),
                "--shard_items", "2", "--progress", "false"]  # fmt: skip
    assert main([*tokenize, "--latents", "false"]) == 2
    assert "latents only" in capsys.readouterr().err
    assert main([*tokenize, "--latents", "true"]) == 0
    index = json.loads((shards / "index.json").read_text())
    assert index["codec"]["num_codebooks"] == 0 and index["codec"]["latent_dim"] == 4
    sample = next(read_shard(next(shards.glob("shard-*.tar"))))
    assert sample["codes"].shape == (0, 100) and sample["latents"].shape == (4, 100)
    assert sample["latents"].dtype == np.float16

    config = stage_config(tmp_path, "dit", shards)
    settings = yaml.safe_load(config.read_text())
    settings["model"]["init_args"]["dit"]["latent_channels"] = 4
    settings["data"]["init_args"]["codec"] = {"pretrained": str(vae_dir)}
    config.write_text(yaml.safe_dump(settings))
    assert main(["fit", "--config", str(config)]) == 0
    samples = sorted((tmp_path / "dit").glob("samples/step-*/*.wav"))
    assert samples, "the sample callback decodes through the VAE"
    exported = tmp_path / "model"
    assert main(["export", "--ckpt", str(tmp_path / "dit/ckpt/last.ckpt"), "--output",
                 str(exported), "--codec_dir", str(vae_dir)]) == 0  # fmt: skip
    assert is_vae_directory(exported / "codec")
    out = tmp_path / "generated"
    generate = ["generate", "--model", str(exported), "--prompt", "a tone", "--seconds", "0.3",
                "--diffusion.steps", "2", "--no-progress", "--output_dir", str(out)]  # fmt: skip
    assert main(generate) == 0
    import soundfile

    wav, rate = soundfile.read(next(out.glob("*.wav")))
    assert rate == 8000 and wav.shape == (30 * 80,) and np.isfinite(wav).all()


def test_the_lm_family_refuses_a_vae_in_one_line(tmp_path, capsys):
    from tests.conftest import tiny_model

    model_dir = tmp_path / "lm"
    tiny_model("delay", 1).save_pretrained(model_dir)
    vae_dir = saved_vae(tmp_path / "vae")
    out = str(tmp_path / "out")
    generate = ["generate", "--model", str(model_dir), "--codec_dir", str(vae_dir),
                "--prompt", "x", "--seconds", "0.2", "--output_dir", out]  # fmt: skip
    assert main(generate) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "codebook" in error[0].lower()


def test_the_demo_measures_a_vae_by_its_round_trip_and_random_latents(tmp_path):
    vae = WaveformVAE.from_pretrained(saved_vae(tmp_path / "vae"))
    wav = 0.3 * torch.sin(torch.arange(1000) / 8000 * 2 * torch.pi * 440)[None]
    assert vae.round_trip(wav).shape == wav.shape
    torch.manual_seed(1)
    other = vae.random_like()
    assert other.fingerprint() != vae.fingerprint() and other.latent_dim == vae.latent_dim
    generator = torch.Generator().manual_seed(0)
    noise = vae.random_audio(3, 20, generator, wav.repeat(2, 1))
    assert noise.shape == (3, 20 * 80) and bool(torch.isfinite(noise).all())
