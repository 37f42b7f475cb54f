"""generate with the latent diffusion family: latents and audio through the codec's decoder,
continuation window by window, audio prompts, and options of the other family refused."""

import json

import numpy as np
import pytest
import soundfile
import torch

from lightning_sdm.cli import main
from lightning_sdm.codecs import CodecConfig, EncodecCodec
from lightning_sdm.data.audio import load_mono
from tests.conftest import save_tiny_dit_with_codec, tiny_model

LATENT_DIM = 16  # the random test codec's latent width


@pytest.fixture(scope="module")
def dit_with_codec(tmp_path_factory):
    """A tiny DiT whose layers are all drawn (so text matters), with the codec inside."""
    return save_tiny_dit_with_codec(tmp_path_factory.mktemp("dit"), wake=True)


def run(capsys, *argv):
    code = main(["generate", "--no-progress", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_diffusion_model_writes_latents_audio_and_sidecars(dit_with_codec, tmp_path, capsys):
    out = tmp_path / "out"
    code, printed, _ = run(
        capsys, "--model", dit_with_codec, "--prompt", "a bright organ", "--prompt", "drums",
        "--seconds", 0.3, "--diffusion.steps", 3, "--cfg", 5, "--diffusion.cfg_rescale", 0.75,
        "--output_dir", out,
    )  # fmt: skip
    assert code == 0, printed
    assert "wrote 2 (wav + json per prompt)" in printed
    saved = torch.load(out / "latents.pt")
    assert saved["latents"].shape == (2, LATENT_DIM, 15) and saved["seeds"] == [0, 1]
    assert not (out / "codes.pt").exists()
    sidecar = json.loads((out / "00-a-bright-organ.json").read_text())
    assert sidecar["family"] == "diffusion" and sidecar["denoising_steps"] == 3
    assert sidecar["sampling"] == {"steps": 3, "cfg_scale": 5.0, "cfg_rescale": 0.75, "eta": 0.0}
    assert "pattern" not in sidecar and sidecar["model"]["weights_sha256"]
    first, _ = soundfile.read(out / "00-a-bright-organ.wav")
    second, _ = soundfile.read(out / "01-drums.wav")
    assert first.shape == second.shape == (15 * 640,)
    assert np.isfinite(first).all() and not np.allclose(first, second)
    codec = EncodecCodec(CodecConfig(pretrained=str(dit_with_codec / "codec")))
    decoded = codec.decode_latents(saved["latents"][:1])[0].numpy()
    assert np.allclose(first, decoded, atol=1e-4)  # the wav is the latents through the decoder


def test_long_requests_continue_window_by_window(dit_with_codec, tmp_path, capsys):
    out = tmp_path / "long"
    code, printed, _ = run(
        capsys, "--model", dit_with_codec, "--prompt", "a", "--seconds", 0.5,
        "--window_seconds", 0.2, "--extend_stride", 0.1, "--diffusion.steps", 2,
        "--output_dir", out,
    )  # fmt: skip
    assert code == 0, printed
    sidecar = json.loads((out / "00-a.json").read_text())
    windows = [(w["prompt_frames"], w["frames"]) for w in sidecar["windows"]]
    assert windows == [(0, 10), (5, 10), (5, 10), (5, 10)]
    assert sidecar["denoising_steps"] == 2 * len(windows)
    assert torch.load(out / "latents.pt")["latents"].shape == (1, LATENT_DIM, 25)


def test_an_audio_prompt_is_continued_from_its_exact_latents(dit_with_codec, tmp_path, capsys):
    rate = 32000
    wav = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(0.1 * rate)) / rate)
    soundfile.write(tmp_path / "prompt.wav", wav, rate)
    out = tmp_path / "out"
    code, printed, _ = run(
        capsys, "--model", dit_with_codec, "--prompt", "a", "--seconds", 0.3,
        "--audio_prompt", tmp_path / "prompt.wav", "--diffusion.steps", 2, "--output_dir", out,
    )  # fmt: skip
    assert code == 0, printed
    codec = EncodecCodec(CodecConfig(pretrained=str(dit_with_codec / "codec")))
    samples = torch.from_numpy(load_mono(tmp_path / "prompt.wav", rate).samples)
    expected = codec.encode_with_latents(samples[None])[1]
    latents = torch.load(out / "latents.pt")["latents"]
    assert torch.equal(latents[:, :, : expected.shape[-1]], expected)
    assert latents.shape[-1] == 15


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--temperature", "0.5"],
            "--sampling.* options are for a codebook LM; this is a latent diffusion model: "
            "use --diffusion.steps",
        ),
        (["--precision", "bf16"], "--precision bf16 is for codebook LMs, not diffusion models"),
        (
            ["--pack_weights", "false"],
            "--pack_weights false is for codebook LMs, not diffusion models",
        ),
        (["--diffusion.steps", "0"], "steps must be >= 1"),
        (["--cfg", "-1"], "cfg_scale must be in [0, 1e+06]"),
        # far larger scales overflowed the latents: NaN audio
        (["--cfg", "1e38"], "cfg_scale must be in [0, 1e+06] (1: no guidance"),
    ],
)
def test_options_that_do_not_apply_are_refused(dit_with_codec, capsys, extra, message):
    code, _, err = run(capsys, "--model", dit_with_codec, "--prompt", "a", *extra)
    assert code == 2 and message in err


def test_an_lm_refuses_diffusion_options(tmp_path, capsys):
    tiny_model("delay", 1).save_pretrained(tmp_path / "lm")
    code, _, err = run(
        capsys, "--model", tmp_path / "lm", "--prompt", "a", "--diffusion.cfg_rescale", 0.5
    )
    assert (
        code == 2
        and "--diffusion.* options are for a latent diffusion model; this is a codebook LM" in err
    )


def test_a_codec_with_other_latents_is_refused(dit_with_codec, tmp_path, capsys):
    wide = dict(CodecConfig().encodec_config, hidden_size=24, codebook_dim=24)
    EncodecCodec(CodecConfig(encodec_config=wide)).save_pretrained(tmp_path / "codec")
    code, _, err = run(
        capsys, "--model", dit_with_codec, "--codec_dir", tmp_path / "codec", "--prompt", "a"
    )
    assert code == 2 and "the codec's latents have 24 channels, the model generates 16" in err


def test_a_diffusion_model_does_not_export_as_musicgen(dit_with_codec, tmp_path, capsys):
    code = main(
        ["export", "--format", "transformers", "--model", str(dit_with_codec),
         "--output", str(tmp_path / "hf")]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "is a latent diffusion model, which exports as lightning_sdm, not transformers" in err
