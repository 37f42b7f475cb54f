"""Training a waveform VAE with `lightning-sdm fit`, and loading what it saves as the
diffusion family's latent space."""

from pathlib import Path

import pytest
import torch
import yaml

from lightning_sdm.cli import main
from lightning_sdm.codecs.waveform_vae import WaveformVAE
from lightning_sdm.errors import UserInputError
from lightning_sdm.tasks.vae_task import VAELosses, WaveformVAETask, multi_resolution_stft_loss
from tests.data.test_audio_crops import write_tones
from tests.tasks.test_codec_task import losses

# 8 kHz, hop 80 (100 Hz frames; the odd stride loses a sample the wrapper pads back).
TINY_VAE = {
    "encoder_hidden_size": 8, "downsampling_ratios": [2, 5, 8], "channel_multiples": [1, 2, 2],
    "decoder_channels": 4, "decoder_input_channels": 4, "audio_channels": 1,
    "sampling_rate": 8000,
}  # fmt: skip


def vae_config(tmp_path: Path, steps: int, **model) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_steps": steps, "enable_progress_bar": False,
            "default_root_dir": str(tmp_path / "runs"), "num_sanity_val_steps": 0,
            "log_every_n_steps": 1, "check_val_every_n_epoch": 5,
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging",
                 "init_args": {"decay": 0.9}},
                {"class_path": "lightning_sdm.callbacks.codec_export.SaveCodec",
                 "init_args": {"directory": str(tmp_path / "vae")}},
            ],
        },
        "model": {
            "class_path": "lightning_sdm.tasks.vae_task.WaveformVAETask",
            "init_args": {"vae_config": TINY_VAE, "optim": {"lr": 0.003, "warmup_steps": 0},
                          "losses": {"stft_n_ffts": [64, 128, 256], "mel_n_ffts": [128, 256]},
                          **model},
        },
        "data": {
            "class_path": "lightning_sdm.data.audio_crops.AudioCropsDataModule",
            "init_args": {"input": str(write_tones(tmp_path / "audio", rate=8000)),
                          "sample_rate": 8000, "crop_seconds": 0.25, "val_seconds": 0.5,
                          "batch_size": 4, "val_fraction": 0.2, "num_workers": 0,
                          "batches_per_epoch": 4},
        },
    }  # fmt: skip
    path = tmp_path / "vae.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_short_vae_fit_lowers_the_loss_and_saves_a_loadable_directory(tmp_path, capsys):
    assert main(["fit", "--config", str(vae_config(tmp_path, 40))]) == 0
    runs = tmp_path / "runs"
    loss = losses(runs, "train/loss")
    assert len(loss) == 40 and sum(loss[-5:]) < 0.8 * sum(loss[:5])
    for name in ("train/kl", "train/stft", "val/si_snr_db", "val/mel_distance_db",
                 "val/chroma_similarity"):  # fmt: skip
        assert losses(runs, name), name
    assert f"codec:       {tmp_path / 'vae'}  (AutoencoderOobleck;" in capsys.readouterr().out
    vae = WaveformVAE.from_pretrained(tmp_path / "vae")
    assert (vae.sample_rate, vae.hop_length, vae.frame_rate, vae.latent_dim) == (8000, 80, 100, 4)
    wav = 0.3 * torch.sin(torch.arange(4000) / 8000 * 2 * torch.pi * 330)[None]
    latents = vae.encode_latents(wav)
    assert latents.shape == (1, 4, 50)
    assert vae.decode_latents(latents).shape == (1, 4000)
    identity = vae.identity()
    assert identity.latent_dim == 4 and identity.num_codebooks == 0 and identity.weights_sha256
    # `export` turns the fit checkpoint into the same kind of directory
    (checkpoint,) = runs.rglob("*.ckpt")
    assert main(["export", "--ckpt", str(checkpoint), "--output", str(tmp_path / "out")]) == 0
    exported = WaveformVAE.from_pretrained(tmp_path / "out")
    assert exported.encode_latents(wav).shape == latents.shape


def test_the_discriminator_option_trains_both_networks(tmp_path):
    config = vae_config(tmp_path, 4, discriminator={"filters": 4, "n_ffts": [128, 64]})
    assert main(["fit", "--config", str(config)]) == 0
    assert losses(tmp_path / "runs", "train/discriminator")
    assert (tmp_path / "vae" / "config.json").is_file()


def test_a_data_rate_other_than_the_vaes_is_refused(tmp_path, capsys):
    config = vae_config(tmp_path, 2)
    assert main(["fit", "--config", str(config), "--data.sample_rate", "16000"]) == 2
    assert "data.sample_rate is 16000 but the waveform_vae runs at 8000" in capsys.readouterr().err


def test_long_audio_encodes_in_chunks_like_whole(tmp_path):
    torch.manual_seed(0)
    vae = WaveformVAE(WaveformVAETask(vae_config=TINY_VAE).model)
    wav = torch.randn(1, 8000 * 3 + 37) * 0.1  # not whole frames either
    whole = vae.encode_latents(wav, chunk_seconds=100.0)
    chunked = vae.encode_latents(wav, chunk_seconds=1.0, context_seconds=0.5)
    assert whole.shape == chunked.shape == (1, 4, 301)
    assert (whole - chunked).abs().max() <= 1e-4 * whole.abs().max()
    stops = []
    vae.encode_latents(wav, before_chunk=lambda: stops.append(1), chunk_seconds=1.0)
    assert len(stops) == 4


def test_bad_vae_settings_are_refused_in_one_line():
    with pytest.raises(UserInputError, match="reconstruction loss"):
        VAELosses(stft=0.0, mel=0.0)
    with pytest.raises(UserInputError, match=">= 0"):
        VAELosses(kl=-1.0)
    with pytest.raises(UserInputError, match="twice decoder_input_channels"):
        WaveformVAETask(vae_config={**TINY_VAE, "decoder_input_channels": 8})
    with pytest.raises(UserInputError, match="mono"):
        WaveformVAETask(vae_config={**TINY_VAE, "audio_channels": 2})
    with pytest.raises(UserInputError, match="init_from"):
        WaveformVAETask(init_from="/nonexistent/vae")
    task = WaveformVAETask(vae_config=TINY_VAE)
    with pytest.raises(UserInputError, match="shorter than one VAE frame"):
        task.training_terms(torch.zeros(2, 40))


def test_the_stft_loss_is_zero_on_equal_audio_and_grows_with_the_error():
    torch.manual_seed(0)
    target = torch.randn(2, 2000)
    assert multi_resolution_stft_loss(target, target, (64, 128)).item() == pytest.approx(
        0, abs=1e-6
    )
    near = multi_resolution_stft_loss(target + 0.01 * torch.randn(2, 2000), target, (64, 128))
    far = multi_resolution_stft_loss(target + 0.5 * torch.randn(2, 2000), target, (64, 128))
    assert 0 < near < far


def test_the_32khz_vae_recipe_composes_to_128_channels_at_50_hz(capsys):
    root = Path(__file__).resolve().parents[2]
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(root / "configs" / "vae_32khz.yaml"), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    vae = printed["model"]["init_args"]["vae_config"]
    assert vae["decoder_input_channels"] == 128 and vae["sampling_rate"] == 32000
    hop = 1
    for ratio in vae["downsampling_ratios"]:
        hop *= ratio
    assert vae["sampling_rate"] / hop == 50
    with torch.device("meta"):  # the architecture builds (no weights are made)
        WaveformVAETask(vae_config=vae)


def test_the_shipped_demo_vae_is_what_the_demo_configs_describe():
    import numpy as np

    from lightning_sdm.demo.audio import clip_specs, render
    from lightning_sdm.metrics.audio import chroma_similarity

    root = Path(__file__).resolve().parents[2]
    vae_yaml = yaml.safe_load((root / "configs" / "vae_demo.yaml").read_text())
    dit_yaml = yaml.safe_load((root / "configs" / "ezaudio_demo.yaml").read_text())
    directory = root / dit_yaml["data"]["init_args"]["codec"]["pretrained"]
    (saver,) = (
        c for c in vae_yaml["trainer"]["callbacks"] if c["class_path"].endswith("SaveCodec")
    )
    assert root / saver["init_args"]["directory"] == directory
    vae = WaveformVAE.from_pretrained(directory)
    for name, value in vae_yaml["model"]["init_args"]["vae_config"].items():
        assert vae.model.config[name] == value, name
    assert vae.latent_dim == dit_yaml["model"]["init_args"]["dit"]["latent_channels"]
    assert sum(f.stat().st_size for f in directory.iterdir()) < 5 * 2**20
    # it has learned: clips like the demo's, rendered from a seed it never saw, keep their
    # notes through the posterior mean (a random VAE of this shape scores far lower)
    rng = np.random.default_rng(12345)
    clips = [render(spec, 3.0, 16000, rng) for spec in clip_specs(4, rng)]
    wav = torch.from_numpy(np.stack(clips)).float()
    assert chroma_similarity(vae.round_trip(wav), wav, 16000).mean() > 0.8
