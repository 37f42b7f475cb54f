"""generate end to end through the CLI: sources, errors, audio prompts, sidecars."""

import json

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file, save_file

from lightning_sdm.cli import main
from lightning_sdm.codecs import CodecConfig, EncodecCodec
from lightning_sdm.data.audio import load_mono
from lightning_sdm.tasks.lm_task import TextToMusicTask
from tests.conftest import save_tiny_model_with_codec, tiny_config, tiny_model


@pytest.fixture(scope="module")
def model_with_codec(tmp_path_factory):
    return save_tiny_model_with_codec(tmp_path_factory.mktemp("model"), "stack_delay", 3)


def run(capsys, *argv):
    code = main(["generate", "--no-progress", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_an_audio_prompt_is_resampled_encoded_and_kept_exactly(model_with_codec, tmp_path, capsys):
    seconds, rate = 0.1, 16000
    wav = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)
    soundfile.write(tmp_path / "prompt.wav", np.stack([wav, wav], axis=1), rate)
    out = tmp_path / "out"
    code, printed, _ = run(
        capsys, "--model", model_with_codec, "--prompt", "a", "--prompt", "b", "--seconds", 0.3,
        "--audio_prompt", tmp_path / "prompt.wav", "--output_dir", out,
    )  # fmt: skip
    assert code == 0
    assert "16000 Hz 2 channels, resampled to the codec's 32000 Hz mono" in printed
    codec = EncodecCodec(CodecConfig(pretrained=str(model_with_codec / "codec")))
    samples = torch.from_numpy(load_mono(tmp_path / "prompt.wav", 32000).samples)
    expected = codec.encode(samples[None])
    codes = torch.load(out / "codes.pt")["codes"].long()
    assert codes.shape == (2, 4, 15)
    assert torch.equal(codes[:, :, : expected.shape[-1]], expected.expand(2, -1, -1))
    assert not torch.equal(codes[0, :, expected.shape[-1] :], codes[1, :, expected.shape[-1] :])
    audio, sample_rate = soundfile.read(out / "00-a.wav")
    assert sample_rate == 32000 and audio.shape == (15 * 640,)
    assert json.loads((out / "01-b.json").read_text())["audio_prompt"].endswith("prompt.wav")


def test_an_audio_prompt_as_long_as_the_request_is_refused(model_with_codec, tmp_path, capsys):
    soundfile.write(tmp_path / "long.wav", np.zeros(32000), 32000)
    code, _, err = run(
        capsys, "--model", model_with_codec, "--prompt", "a", "--seconds", 0.5,
        "--audio_prompt", tmp_path / "long.wav", "--output_dir", tmp_path / "out",
    )  # fmt: skip
    assert code == 2 and "the audio prompt is 1.00 s, not shorter than the 0.5 s" in err


def test_an_audio_prompt_shorter_than_a_codec_frame_is_refused(model_with_codec, tmp_path, capsys):
    soundfile.write(tmp_path / "click.wav", np.full(200, 0.5), 32000)  # 6.25 ms < 20 ms
    code, _, err = run(
        capsys, "--model", model_with_codec, "--prompt", "a", "--seconds", 0.5,
        "--audio_prompt", tmp_path / "click.wav", "--output_dir", tmp_path / "out",
    )  # fmt: skip
    assert code == 2
    assert "is 6.2 ms, shorter than one codec frame (20.0 ms)" in err
    assert len(err.strip().splitlines()) == 1


def test_batches_do_not_change_what_a_prompt_generates(model_with_codec, tmp_path, capsys):
    prompts = ["a", "b", "c"]
    argv = ["--model", model_with_codec, "--seconds", 0.2, "--seed", 5]
    for batch_size in (1, 3):
        out = tmp_path / f"batch{batch_size}"
        argv_prompts = [w for p in prompts for w in ("--prompt", p)]
        assert (
            run(capsys, *argv, *argv_prompts, "--batch_size", batch_size, "--output_dir", out)[0]
            == 0
        )
    one, three = (torch.load(tmp_path / f"batch{b}" / "codes.pt")["codes"] for b in (1, 3))
    assert torch.equal(one, three)
    summary = json.loads((tmp_path / "batch3" / "summary.json").read_text())
    assert [f["seed"] for f in summary["files"]] == [5, 6, 7]
    assert summary["files"][0]["batch_rows"] == 3 and summary["rtf"] > 0


def test_mixed_durations_from_a_jsonl(model_with_codec, tmp_path, capsys):
    file = tmp_path / "p.jsonl"
    file.write_text('{"prompt": "a", "seconds": 0.1}\n{"prompt": "b", "seconds": 0.2, "seed": 3}\n')
    code, printed, _ = run(
        capsys, "--model", model_with_codec, "--prompt_file", file, "--output_dir", tmp_path / "o"
    )
    assert code == 0 and "wrote 2 (wav + json per prompt)" in printed
    saved = torch.load(tmp_path / "o" / "codes.pt")
    assert [c.shape[-1] for c in saved["codes"]] == [5, 10] and saved["seeds"] == [0, 3]


def test_bf16_decoding_writes_audio_and_says_so(model_with_codec, tmp_path, capsys):
    out = tmp_path / "bf16"
    argv = ["--model", model_with_codec, "--prompt", "a", "--seconds", 0.2, "--output_dir", out]
    assert run(capsys, *argv, "--precision", "bf16")[0] == 0
    assert json.loads((out / "00-a.json").read_text())["precision"] == "bf16"
    audio, _ = soundfile.read(out / "00-a.wav")
    assert audio.shape == (10 * 640,) and np.isfinite(audio).all()


def test_packed_weights_can_be_turned_off_and_the_sidecar_says_which(
    model_with_codec, tmp_path, capsys, packed_layer_counts
):
    argv = ["--model", model_with_codec, "--prompt", "a", "--seconds", 0.2]
    assert run(capsys, *argv, "--output_dir", tmp_path / "on")[0] == 0
    assert len(packed_layer_counts) == 1 and packed_layer_counts[0] > 0
    assert run(capsys, *argv, "--output_dir", tmp_path / "off", "--pack_weights", "false")[0] == 0
    assert len(packed_layer_counts) == 1  # the second run multiplied through F.linear
    for name, expected in (("on", "auto"), ("off", False)):
        assert json.loads((tmp_path / name / "00-a.json").read_text())["pack_weights"] == expected


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seconds", "0"], "--seconds: the duration must be positive"),
        (["--timesteps", "-3"], "--timesteps must be positive"),
        (["--batch_size", "0"], "--batch_size must be at least 1"),
        (
            ["--audio_prompt", "/nonexistent.wav"],
            "audio prompt /nonexistent.wav: missing audio file (no such file)",
        ),
        (["--audio_prompt", "/"], "audio prompt /: a folder, not an audio file"),
        (["--precision", "fp16"], "--precision must be one of fp32, bf16, got 'fp16'"),
        # a one-frame window continued nothing: it was run as one call over the whole request
        (
            ["--seconds", "1", "--window_seconds", "0.01"],
            "--window_seconds 0.01 is shorter than two codec frames (0.04 s at 50 Hz)",
        ),
        # a stride as long as the window was cut to one frame less, silently
        (
            ["--seconds", "1", "--window_seconds", "0.3", "--extend_stride", "0.3"],
            "--extend_stride 0.3 s must be at least one codec frame (0.02 s) and shorter than "
            "the 0.3 s window",
        ),
    ],
)
def test_bad_generation_options_fail_in_one_line(
    model_with_codec, tmp_path, capsys, extra, message
):
    code, _, err = run(capsys, "--model", model_with_codec, "--prompt", "a", *extra)
    assert code == 2 and message in err


def test_bad_model_sources_fail_in_one_line(tmp_path, capsys):
    assert "either --model DIR" in run(capsys, "--prompt", "a")[2]
    assert (
        "checkpoint /none.ckpt not found" in run(capsys, "--ckpt", "/none.ckpt", "--prompt", "a")[2]
    )
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    said = run(capsys, "--ckpt", tmp_path / "junk.ckpt", "--prompt", "a")[2]
    assert "junk.ckpt is not a whole PyTorch checkpoint (no zip archive" in said
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    assert (
        "not a lightning-sdm fit checkpoint"
        in run(capsys, "--ckpt", tmp_path / "other.ckpt", "--prompt", "a")[2]
    )


class Foreign:  # an object a checkpoint may not hold: unpickling it would run code
    pass


def test_a_torn_or_foreign_checkpoint_is_named_in_one_line_without_unsafe_advice(tmp_path, capsys):
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "hyper_parameters": {}}, whole)
    torn = tmp_path / "torn.ckpt"
    torn.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # a copy cut short
    code, _, said = run(capsys, "--ckpt", torn, "--prompt", "a")
    assert code == 2 and "torn.ckpt is not a whole PyTorch checkpoint" in said
    assert len(said.strip().splitlines()) == 1
    torch.save({"state_dict": {}, "hyper_parameters": Foreign()}, tmp_path / "foreign.ckpt")
    code, _, said = run(capsys, "--ckpt", tmp_path / "foreign.ckpt", "--prompt", "a")
    assert code == 2 and "holds objects other than tensors and plain data" in said
    assert "weights_only" not in said and len(said.strip().splitlines()) == 1


def test_a_model_directory_with_torn_or_missing_weights_says_which_file(tmp_path, capsys):
    model = save_tiny_model_with_codec(tmp_path / "model", "delay", 1)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])  # a copy cut short by a full disk
    capsys.readouterr()  # what saving the model printed
    code, _, said = run(capsys, "--model", model, "--prompt", "a")
    assert code == 2 and len(said.strip().splitlines()) == 1
    assert f"{weights} is not a whole safetensors file (truncated or damaged" in said
    assert "config do not match" not in said
    weights.unlink()
    assert f"{weights} not found" in run(capsys, "--model", model, "--prompt", "a")[2]


def test_a_codec_copy_missing_tensors_stops_generate_instead_of_decoding_noise(tmp_path, capsys):
    model = save_tiny_model_with_codec(tmp_path / "model", "delay", 1)
    weights = model / "codec" / "model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if "decoder" not in k}, weights)
    capsys.readouterr()
    code, _, said = run(capsys, "--model", model, "--prompt", "a", "--timesteps", "4")
    assert code == 2 and len(said.strip().splitlines()) == 1
    assert f"EnCodec directory {model / 'codec'}: its weights lack" in said


def test_a_checkpoint_whose_config_does_not_match_its_weights(tmp_path, capsys):
    config = tiny_config("delay", 1)
    task = TextToMusicTask(lm=config.lm, text=config.text)
    hparams = dict(task.hparams)
    hparams["lm"] = {**hparams["lm"], "num_layers": 3}
    torch.save({"hyper_parameters": hparams, "state_dict": task.state_dict()}, tmp_path / "x.ckpt")
    code, _, err = run(capsys, "--ckpt", tmp_path / "x.ckpt", "--prompt", "a")
    assert code == 2 and "its weights do not match its config" in err


def test_a_model_directory_whose_config_does_not_match_its_weights(tmp_path, capsys):
    tiny_model("delay", 1).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["lm"]["num_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, _, err = run(capsys, "--model", tmp_path, "--prompt", "a")
    assert code == 2 and "weights and config do not match" in err


def test_a_codec_that_does_not_fit_the_model_is_refused(model_with_codec, tmp_path, capsys):
    tiny_model("delay", 1).save_pretrained(tmp_path / "m")  # 16 codes per level
    code, _, err = run(
        capsys,
        "--model",
        tmp_path / "m",
        "--codec_dir",
        model_with_codec / "codec",
        "--prompt",
        "a",
    )
    assert code == 2 and "the codec has 4 codebooks of 2048 codes" in err


def test_a_runs_relative_codec_path_is_found_from_anywhere(tmp_path, monkeypatch, capsys):
    # fit ran in project/ with codec.pretrained: assets/codec; generate runs elsewhere
    from lightning_sdm.runs.run_codec import checkpoint_codec

    run = tmp_path / "project" / "runs" / "demo" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("data:\n  codec:\n    pretrained: assets/codec\n")
    codec = tmp_path / "project" / "assets" / "codec"
    codec.mkdir(parents=True)
    (codec / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert checkpoint_codec(run / "checkpoints" / "last.ckpt", None) == codec
    (codec / "config.json").unlink()
    assert checkpoint_codec(run / "checkpoints" / "last.ckpt", None) is None
    assert "the codec assets/codec, which is not found from here" in capsys.readouterr().out


def test_a_checkpoint_finds_the_codec_of_its_shards_or_of_its_base(tmp_path, monkeypatch, capsys):
    """A run whose config names no codec (a fine-tune recipe reads it from the shards)
    generated codes only: the codec the shards were tokenized with is recorded in the
    checkpoint, and an adapter run's base model carries one."""
    from lightning_sdm.codecs import CodecIdentity
    from lightning_sdm.runs.run_codec import checkpoint_codec

    run = tmp_path / "project" / "runs" / "lora" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("data:\n  train_dir: shards\n")
    checkpoint = run / "checkpoints" / "last.ckpt"
    monkeypatch.chdir(tmp_path)
    assert checkpoint_codec(checkpoint, None) is None
    shards_codec = tmp_path / "project" / "models" / "base" / "codec"
    shards_codec.mkdir(parents=True)
    (shards_codec / "config.json").write_text("{}")
    identity = CodecIdentity(32000, 50.0, 4, 2048, pretrained="models/base/codec")
    assert checkpoint_codec(checkpoint, identity) == shards_codec  # relative to where fit ran
    assert checkpoint_codec(checkpoint, None, base=str(tmp_path / "project/models/base")) == (
        shards_codec
    )
    moved = CodecIdentity(32000, 50.0, 4, 2048, pretrained="/gone/codec")
    assert checkpoint_codec(checkpoint, moved) is None
    assert "the codec /gone/codec, which is not found from here" in capsys.readouterr().out


def test_the_printed_table_names_each_file_whole(model_with_codec, tmp_path, capsys):
    """Names were cut at 40 characters: the table named files that do not exist."""
    prompt = "a lively flute melody in c major at 120 bpm"
    code, printed, _ = run(
        capsys, "--model", model_with_codec, "--prompt", prompt, "--seconds", 0.1,
        "--output_dir", tmp_path / "o",
    )  # fmt: skip
    (wav,) = (tmp_path / "o").glob("*.wav")
    assert code == 0 and len(wav.stem) > 40
    table = printed.splitlines()
    row = next(line for line in table if line.startswith("00-"))
    assert row.split()[0] == wav.stem


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--sampling.temperature", "1e-40"], "temperature 1e-40 samples as greedy decoding does"),
        (["--sampling.cfg_scale", "1e38"], "cfg_scale must be in [0, 1e+06]"),
    ],
)
def test_sampling_settings_that_overflow_the_logits_are_one_line(
    model_with_codec, tmp_path, capsys, option, message
):
    """Both died in a traceback at the first decoding step ('probability tensor contains
    either inf, nan or element < 0')."""
    code, _, err = run(
        capsys, "--model", model_with_codec, "--prompt", "a", "--seconds", 0.1,
        "--output_dir", tmp_path / "o", *option,
    )  # fmt: skip
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
