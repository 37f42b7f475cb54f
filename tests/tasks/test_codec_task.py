"""Training a codec with `lightning-sdm fit`, and loading what it saves like a real EnCodec."""

import csv
import hashlib
from pathlib import Path

import numpy as np
import torch
import yaml

from lightning_sdm.cli import main
from lightning_sdm.codecs import CodecConfig, EncodecCodec
from lightning_sdm.demo.audio import clip_specs, render
from lightning_sdm.metrics.audio import chroma_similarity
from lightning_sdm.tasks.codec_task import CodecTask
from tests.data.test_audio_crops import write_tones

TINY_CODEC = {
    "sampling_rate": 8000,
    "audio_channels": 1,
    "normalize": False,
    "chunk_length_s": None,
    "codebook_size": 16,
    "codebook_dim": 8,
    "hidden_size": 8,
    "num_filters": 8,
    "num_lstm_layers": 1,
    "upsampling_ratios": [5, 4, 4],
    "target_bandwidths": [0.4, 0.8],
    "use_causal_conv": False,
}  # fmt: skip  (100 Hz frames, 4 bits per code: 0.4 kbps is one level, 0.8 two)


def codec_config(tmp_path: Path, steps: int, **model) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_steps": steps, "enable_progress_bar": False,
            "default_root_dir": str(tmp_path / "runs"), "num_sanity_val_steps": 0,
            "log_every_n_steps": 1, "check_val_every_n_epoch": 1000,
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging",
                 "init_args": {"decay": 0.9, "use_buffers": False}},
                {"class_path": "lightning_sdm.callbacks.codec_export.SaveCodec",
                 "init_args": {"directory": str(tmp_path / "codec")}},
            ],
        },
        "model": {
            "class_path": "lightning_sdm.tasks.codec_task.CodecTask",
            "init_args": {"encodec_config": TINY_CODEC, "optim": {"lr": 0.003, "warmup_steps": 0},
                          "quantizer": {"warmup_steps": 10}, **model},
        },
        "data": {
            "class_path": "lightning_sdm.data.audio_crops.AudioCropsDataModule",
            "init_args": {"input": str(write_tones(tmp_path / "audio", rate=8000)),
                          "sample_rate": 8000, "crop_seconds": 0.25, "val_seconds": 0.5,
                          "batch_size": 4, "val_fraction": 0.2, "num_workers": 0,
                          "batches_per_epoch": 4},
        },
    }  # fmt: skip
    path = tmp_path / "codec.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def losses(run_root: Path, name: str) -> list[float]:
    (metrics,) = run_root.rglob("metrics.csv")
    rows = csv.DictReader(metrics.open())
    return [float(row[name]) for row in rows if row.get(name)]


def test_a_short_codec_fit_lowers_the_loss_and_saves_an_encodec_directory(tmp_path, capsys):
    main(
        [
            "fit",
            "--config",
            str(codec_config(tmp_path, 40)),
            "--trainer.check_val_every_n_epoch",
            "10",
        ]
    )
    loss = losses(tmp_path / "runs", "train/loss")  # waveform L1 + multi-scale mel
    assert len(loss) == 40 and sum(loss[-5:]) < 0.7 * sum(loss[:5])
    printed = capsys.readouterr().out
    assert f"codec:       {tmp_path / 'codec'}" in printed
    for name in ("val/si_snr_db", "val/chroma_similarity", "codebook/perplexity_q1", "val/kbps"):
        assert losses(tmp_path / "runs", name), name
    assert abs(losses(tmp_path / "runs", "val/kbps")[-1] - 0.8) < 1e-6
    # the saved directory is an ordinary EncodecModel: the codec wrapper loads it, at its
    # highest bandwidth, and encodes exactly as the trained quantizer does
    codec = EncodecCodec(CodecConfig(pretrained=str(tmp_path / "codec")))
    assert (codec.num_codebooks, codec.cardinality, codec.sample_rate) == (2, 16, 8000)
    (checkpoint,) = (tmp_path / "runs").rglob("*.ckpt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    task = CodecTask(**state["hyper_parameters"])
    task.load_state_dict(state["state_dict"])
    wav = 0.3 * torch.sin(torch.arange(4000) / 8000 * 2 * torch.pi * 330)[None]
    expected = task.rvq(task.model.encoder(wav[:, None])).codes.transpose(0, 1)
    assert torch.equal(codec.encode(wav), expected)
    assert len(codec.encode(wav).unique()) > 1
    # `export` turns the checkpoint into the same directory
    capsys.readouterr()
    assert main(["export", "--ckpt", str(checkpoint), "--output", str(tmp_path / "exported")]) == 0
    assert "no codec copied in" not in capsys.readouterr().out  # it is one
    exported = EncodecCodec(CodecConfig(pretrained=str(tmp_path / "exported")))
    assert torch.equal(exported.encode(wav), expected)


def test_the_discriminator_option_trains_both_networks(tmp_path):
    config = codec_config(tmp_path, 4, discriminator={"filters": 4, "n_ffts": [128, 64]})
    main(["fit", "--config", str(config)])
    assert losses(tmp_path / "runs", "train/discriminator")
    assert losses(tmp_path / "runs", "train/feature_matching")
    assert (tmp_path / "codec" / "config.json").is_file()


def test_a_data_rate_other_than_the_codecs_is_refused(tmp_path, capsys):
    config = codec_config(tmp_path, 2)
    assert main(["fit", "--config", str(config), "--data.sample_rate", "16000"]) == 2
    assert "data.sample_rate is 16000" in capsys.readouterr().err


def test_the_32khz_codec_recipe_composes(capsys):
    import pytest

    root = Path(__file__).resolve().parents[2]
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(root / "configs" / "codec_32khz.yaml"), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    model = printed["model"]["init_args"]
    assert model["encodec_config"]["codebook_size"] == 2048
    assert model["discriminator"]["n_ffts"] == [2048, 1024, 512]
    data = printed["data"]["init_args"]
    assert data["batch_size"] * printed["trainer"]["devices"] == 128


def test_a_codec_fit_is_reproducible_from_its_seed(tmp_path):
    # The demo's shipped codec is reproduced by its config: same seed, same weights.
    digests = []
    for run in ("a", "b"):
        directory = tmp_path / run
        directory.mkdir()
        assert main(["fit", "--config", str(codec_config(directory, 6))]) == 0
        (weights,) = (directory / "codec").glob("*.safetensors")
        digests.append(hashlib.sha256(weights.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_a_second_fit_leaves_the_codec_its_directory_holds_unless_told(tmp_path, capsys):
    """Shards decode with the codec they were tokenized with and no other: a second run
    writing into the same directory (another setting, a few test steps) replaced it
    silently, leaving those shards undecodable and the codec gone."""
    config = codec_config(tmp_path, 3)
    assert main(["fit", "--config", str(config)]) == 0
    (first,) = (tmp_path / "codec").glob("*.safetensors")
    kept = first.read_bytes()
    capsys.readouterr()
    assert main(["fit", "--config", str(config), "--seed_everything", "1"]) == 0
    printed = capsys.readouterr()
    assert first.read_bytes() == kept
    (second,) = (tmp_path / "runs").rglob("version_1/codec/*.safetensors")
    assert second.read_bytes() != kept
    assert f"{tmp_path / 'codec'} already holds a codec, left as it is" in printed.err
    assert f"codec:       {second.parent}" in printed.out
    told = yaml.safe_load(config.read_text())
    told["trainer"]["callbacks"][-1]["init_args"]["overwrite"] = True
    config.write_text(yaml.safe_dump(told))
    assert main(["fit", "--config", str(config), "--seed_everything", "1"]) == 0
    assert first.read_bytes() == second.read_bytes()  # same seed: the same weights, in place
    names = sorted(p.name for p in (tmp_path / "codec").iterdir())
    assert names == sorted(p.name for p in second.parent.iterdir())  # nothing else left


def test_a_codec_directory_that_is_a_file_is_said_before_training(tmp_path, capsys):
    (tmp_path / "codec").write_text("notes")
    assert main(["fit", "--config", str(codec_config(tmp_path, 3))]) == 2
    err = capsys.readouterr().err
    assert f"SaveCodec's directory {tmp_path / 'codec'} is a file" in err
    assert not list((tmp_path / "runs").rglob("*.ckpt"))  # no training ran first


def test_the_shipped_demo_codec_is_what_the_demo_configs_describe():
    root = Path(__file__).resolve().parents[2]
    codec_yaml = yaml.safe_load((root / "configs" / "codec_demo.yaml").read_text())
    lm_yaml = yaml.safe_load((root / "configs" / "demo.yaml").read_text())
    directory = root / lm_yaml["data"]["codec"]["pretrained"]
    (saver,) = (
        c for c in codec_yaml["trainer"]["callbacks"] if c["class_path"].endswith("SaveCodec")
    )
    assert root / saver["init_args"]["directory"] == directory
    codec = EncodecCodec(CodecConfig(pretrained=str(directory)))
    architecture = codec.model.config.to_dict()
    for name, value in codec_yaml["model"]["init_args"]["encodec_config"].items():
        assert architecture[name] == value, name
    assert codec.cardinality == lm_yaml["model"]["lm"]["cardinality"]
    assert codec.num_codebooks == lm_yaml["model"]["lm"]["num_levels"]
    assert sum(f.stat().st_size for f in directory.iterdir()) < 5 * 2**20
    # it has learned: clips like the demo's, rendered from a seed it never saw, keep their
    # notes (a random codec of this shape scores about 0.1-0.2)
    rng = np.random.default_rng(12345)
    clips = [render(spec, 3.0, 16000, rng) for spec in clip_specs(4, rng)]
    wav = torch.from_numpy(np.stack(clips))
    decoded = codec.decode(codec.encode(wav))[:, : wav.shape[-1]]
    assert chroma_similarity(decoded, wav, 16000).mean() > 0.8
