"""tokenize: real audio -> shards -> DataModule batches; bad input; kill and resume."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lightning_sdm.cli import main
from lightning_sdm.codecs import CodecConfig, EncodecCodec
from lightning_sdm.data.audio import load_mono
from lightning_sdm.data.datamodule import TokenShardsDataModule
from lightning_sdm.data.shards import INDEX_FILE, read_shard
from lightning_sdm.data.tokenize import TokenizeConfig, tokenize
from lightning_sdm.demo.audio import write_demo_clips
from tests.data.audio_fixtures import CASES, audio_path, make_folder
from tests.test_folder_lock import hold_in_another_process


def run(input_dir, output_dir, codec_dir, **overrides):
    settings = {
        "num_workers": 0,
        "accelerator": "cpu",
        "progress": False,
        "max_shard_items": 2,
        "codec": CodecConfig(pretrained=codec_dir),
    }
    return tokenize(
        TokenizeConfig(input=str(input_dir), output=str(output_dir), **{**settings, **overrides})
    )


def all_samples(output_dir):
    return [s for shard in sorted(output_dir.glob("shard-*.tar")) for s in read_shard(shard)]


@pytest.mark.parametrize("sidecar", ["txt", "json"])
def test_round_trip_audio_to_shards_to_batches(codec_dir, tmp_path, sidecar):
    captions = make_folder(tmp_path / "in", sidecar)
    summary = run(tmp_path / "in", tmp_path / "out", codec_dir, keep_latents=True)
    assert summary.ok and summary.new_items == len(CASES) and not summary.rejected

    samples = {s["key"]: s for s in all_samples(tmp_path / "out")}
    assert set(samples) == set(captions)
    codec = EncodecCodec(CodecConfig(pretrained=codec_dir))
    for name, rate, _, seconds, kind, caption in CASES:
        sample = samples[name]
        frames = math.ceil(round(seconds * 32000) / 640)
        assert sample["codes"].dtype == np.int16 and sample["codes"].shape == (4, frames)
        assert sample["latents"].dtype == np.float16 and sample["latents"].shape[-1] == frames
        assert sample["info"]["caption"] == caption
        assert sample["info"]["source_sample_rate"] == rate
        audio = load_mono(audio_path(tmp_path / "in", name, kind), 32000)
        expected = codec.encode(torch.from_numpy(audio.samples)[None])[0]
        assert torch.equal(torch.from_numpy(sample["codes"].astype(np.int64)), expected)

    index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    assert index["num_samples"] == len(CASES)
    assert sum(s["num_samples"] for s in index["shards"]) == len(CASES)
    assert index["codec"]["num_codebooks"] == 4 and index["codec"]["sample_rate"] == 32000

    module = TokenShardsDataModule(
        str(tmp_path / "out"), batch_size=2, num_workers=0, segment_seconds=1.0, shuffle_buffer=4
    )
    batches = list(module.train_dataloader())
    assert len(batches) == len(CASES) // 2
    for batch in batches:
        assert batch["codes"].shape == (2, 4, 50) and batch["codes"].dtype == torch.long
        assert batch["padding_mask"].all()
        for key, caption, codes, start in zip(
            batch["keys"], batch["captions"], batch["codes"], batch["crop_start"], strict=True
        ):
            assert caption == captions[key]
            full = torch.from_numpy(samples[key]["codes"].astype(np.int64))
            assert torch.equal(codes, full[:, start : start + 50])


def test_every_bad_input_is_reported_and_good_items_kept(codec_dir, tmp_path):
    folder = tmp_path / "in"
    make_folder(folder)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (folder / "corrupt.txt").write_text("x")
    (folder / "truncated.flac").write_bytes(b"fLaC\x00\x00")
    (folder / "truncated.txt").write_text("x")
    sf.write(folder / "empty.wav", np.zeros((0, 1)), 32000)
    (folder / "empty.txt").write_text("x")
    sf.write(folder / "nan.wav", np.full(32000, np.nan, np.float32), 32000, subtype="FLOAT")
    (folder / "nan.txt").write_text("x")
    sf.write(folder / "short.wav", np.zeros(8000), 32000)
    (folder / "short.txt").write_text("x")
    sf.write(folder / "nocaption.wav", np.zeros(64000), 32000)
    sf.write(folder / "latin1.wav", np.zeros(64000), 32000)
    (folder / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    sf.write(folder / "dup.wav", np.zeros(64000), 32000)
    (folder / "dup.txt").write_text("first")
    sf.write(folder / "dup.flac", np.zeros(64000), 32000)  # same stem: both kept, distinct keys
    summary = run(folder, tmp_path / "out", codec_dir)
    reasons = {r["source"].rsplit("/", 1)[-1]: r["reason"] for r in summary.rejected}
    assert reasons["corrupt.wav"].startswith("unreadable audio")
    assert reasons["truncated.flac"].startswith("unreadable audio")
    assert reasons["empty.wav"] == "zero-length audio"
    assert reasons["nan.wav"] == "all-NaN audio"
    assert reasons["short.wav"].startswith("too short")
    assert reasons["nocaption.wav"].startswith("missing caption")
    assert "not UTF-8" in reasons["latin1.wav"]
    assert "dup.wav" not in reasons and "dup.flac" not in reasons
    assert summary.total_items == len(CASES) + 2  # the good items and both "dup"s
    index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    assert len(index["rejected"]) == len(summary.rejected) == 7


def test_killed_run_resumes_without_duplicates_or_losses(codec_dir, tmp_path, monkeypatch):
    make_folder(tmp_path / "in")
    out = tmp_path / "out"
    original = EncodecCodec.encode_with_latents
    calls = {"n": 0}

    def dies_on_the_fourth_track(self, wav, keep_latents=True, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("the machine died")
        return original(self, wav, keep_latents, **kwargs)

    monkeypatch.setattr(EncodecCodec, "encode_with_latents", dies_on_the_fourth_track)
    with pytest.raises(RuntimeError, match="machine died"):
        run(tmp_path / "in", out, codec_dir, max_shard_items=1)
    monkeypatch.setattr(EncodecCodec, "encode_with_latents", original)
    partial = {s["key"] for s in all_samples(out)}
    assert len(partial) == 3
    # What a hard kill leaves: a half-written shard and a sidecar whose tar never appeared.
    (out / "shard-000007.tar.tmp").write_bytes(b"half a tar")
    (out / "shard-000008.json").write_text("{}")

    summary = run(tmp_path / "in", out, codec_dir, max_shard_items=1)
    assert summary.already_present == 3 and summary.new_items == len(CASES) - 3
    keys = [s["key"] for s in all_samples(out)]
    assert sorted(keys) == sorted(name for name, *_ in CASES)  # each once, none lost
    assert not list(out.glob("*.tmp")) and not (out / "shard-000008.json").exists()


def test_rerun_on_the_same_input_is_a_no_op(codec_dir, tmp_path):
    make_folder(tmp_path / "in")
    run(tmp_path / "in", tmp_path / "out", codec_dir)
    shards = {
        p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "out").glob("shard-*")
    }
    index = (tmp_path / "out" / INDEX_FILE).read_text()
    summary = run(tmp_path / "in", tmp_path / "out", codec_dir)
    assert summary.new_items == 0 and summary.already_present == len(CASES)
    after = {
        p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "out").glob("shard-*")
    }
    assert after == shards
    assert (tmp_path / "out" / INDEX_FILE).read_text() == index


def test_new_files_are_added_to_new_shards(codec_dir, tmp_path):
    make_folder(tmp_path / "in")
    run(tmp_path / "in", tmp_path / "out", codec_dir)
    sf.write(tmp_path / "in" / "late.wav", np.zeros(64000), 32000)
    (tmp_path / "in" / "late.txt").write_text("arrived later")
    summary = run(tmp_path / "in", tmp_path / "out", codec_dir)
    assert summary.new_items == 1 and summary.total_items == len(CASES) + 1


def test_files_whose_names_sanitise_alike_are_each_tokenized_in_any_order(codec_dir, tmp_path):
    """`音楽.wav` and `映画.wav`, `rock song.wav` and `rock.song.wav`: all kept, in one run
    and when the second arrives in a later run."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("音楽", "rock song"):
        sf.write(folder / f"{name}.wav", np.zeros(64000), 32000)
        (folder / f"{name}.txt").write_text(name)
    first = run(folder, tmp_path / "out", codec_dir)
    assert first.new_items == 2 and not first.rejected
    for name in ("映画", "rock.song"):
        sf.write(folder / f"{name}.wav", np.zeros(64000), 32000)
        (folder / f"{name}.txt").write_text(name)
    second = run(folder, tmp_path / "out", codec_dir)
    assert (second.new_items, second.already_present, second.total_items) == (2, 2, 4)
    captions = sorted(s["info"]["caption"] for s in all_samples(tmp_path / "out"))
    assert captions == sorted(["音楽", "映画", "rock song", "rock.song"])
    keys = [s["key"] for s in all_samples(tmp_path / "out")]
    assert len(set(keys)) == 4


def test_a_new_file_under_a_stored_key_is_kept_and_a_changed_one_is_reported(codec_dir, tmp_path):
    """ "Already present" means the same source, not the same key."""
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "x.wav", np.zeros(64000), 32000)
    (folder / "x.txt").write_text("wav")
    run(folder, tmp_path / "out", codec_dir)
    (folder / "x.wav").unlink()
    sf.write(folder / "x.flac", np.zeros(64000), 32000)  # the same key "x", another source
    summary = run(folder, tmp_path / "out", codec_dir)
    assert summary.new_items == 1 and summary.total_items == 2
    sf.write(folder / "x.flac", np.ones(96000) * 0.1, 32000)  # edited after tokenizing
    summary = run(folder, tmp_path / "out", codec_dir)
    assert summary.new_items == 0
    assert [r["reason"].split(" into ")[0] for r in summary.rejected] == [
        "changed since it was tokenized"
    ]


def test_folders_written_before_sources_were_recorded_still_resume(codec_dir, tmp_path):
    make_folder(tmp_path / "in")
    run(tmp_path / "in", tmp_path / "out", codec_dir)
    for sidecar in (tmp_path / "out").glob("shard-*.json"):
        data = json.loads(sidecar.read_text())
        del data["sources"]  # as earlier versions wrote them
        sidecar.write_text(json.dumps(data))
    summary = run(tmp_path / "in", tmp_path / "out", codec_dir)
    assert summary.new_items == 0 and summary.already_present == len(CASES)


def test_a_different_codec_is_refused_for_an_existing_output(codec_dir, tmp_path):
    make_folder(tmp_path / "in")
    run(tmp_path / "in", tmp_path / "out", codec_dir)
    with pytest.raises(ValueError, match="another codec"):
        run(
            tmp_path / "in",
            tmp_path / "out",
            codec_dir,
            codec=CodecConfig(codec_dir, bandwidth=1.1),
        )


def test_cli_exits_non_zero_only_when_nothing_was_tokenized(codec_dir, tmp_path, capsys):
    make_folder(tmp_path / "in")
    (tmp_path / "in" / "bad.wav").write_bytes(b"junk")
    (tmp_path / "in" / "bad.txt").write_text("x")
    argv = ["tokenize", str(tmp_path / "in"), str(tmp_path / "o2"), "--no-progress"]
    assert main([*argv, "--workers", "0", "--codec-dir", codec_dir]) == 0
    out = capsys.readouterr().out
    assert "rejected: 1" in out and "unreadable audio" in out
    assert f"{tmp_path / 'in' / 'bad.wav'}: unreadable audio" in out  # named, not only counted
    (tmp_path / "only_bad").mkdir()
    (tmp_path / "only_bad" / "bad.wav").write_bytes(b"junk")
    (tmp_path / "only_bad" / "bad.txt").write_text("x")
    only_bad = ["tokenize", str(tmp_path / "only_bad"), str(tmp_path / "o3"), "--no-progress"]
    assert main([*only_bad, "--codec-dir", codec_dir, "--workers", "0"]) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--shard_items", "0"], "--shard_items must be at least 1, got 0"),
        (["--shard_mb", "0"], "--shard_mb must be at least one byte (1e-6), got 0"),
        # under a byte passed the check and failed inside the shard writer, naming its field
        (["--shard_mb", "1e-9"], "--shard_mb must be at least one byte (1e-6), got 1e-09"),
        (["--workers", "-2"], "--workers must be at least 0, got -2"),
        (["--min_seconds", "-1"], "--min_seconds must be at least 0"),
        (["--devices", "0"], "--devices must be a count (1 or more), -1 or auto, got 0"),
        (["--accelerator", "gpu"], "--accelerator gpu --devices 1 --strategy auto: No supported"),
    ],
)
def test_settings_tokenize_cannot_run_are_one_line(codec_dir, tmp_path, capsys, options, message):
    make_folder(tmp_path / "in")
    argv = ["tokenize", str(tmp_path / "in"), str(tmp_path / "out"), "--codec-dir", codec_dir]
    assert main([*argv, "--no-progress", *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()  # refused before or after making it: none left


def test_a_second_tokenize_into_a_folder_being_written_is_one_line_and_harms_nothing(
    codec_dir, tmp_path, capsys
):
    """Two runs into one folder would number their shards alike and clear each other's
    half-written files: the second is refused while the first holds the folder."""
    make_folder(tmp_path / "in")
    out = tmp_path / "out"
    run(tmp_path / "in", out, codec_dir)
    shards = {p.name: p.read_bytes() for p in out.glob("shard-*")}
    holder = hold_in_another_process(out, 60)  # the first run, mid-way
    (out / "shard-000009.tar.tmp").write_bytes(b"the first run's open shard")
    try:
        argv = ["tokenize", str(tmp_path / "in"), str(out), "--codec-dir", codec_dir]
        assert main([*argv, "--no-progress", "--workers", "0"]) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and f"{out} is being written by another tokenize (pid {holder.pid}" in err[0]
    )
    assert (out / "shard-000009.tar.tmp").read_bytes() == b"the first run's open shard"
    assert {p.name: p.read_bytes() for p in out.glob("shard-*") if p.suffix != ".tmp"} == shards
    summary = run(tmp_path / "in", out, codec_dir)  # the holder gone: the folder is free
    assert summary.new_items == 0 and not list(out.glob("*.tmp"))


def test_in_process_tokenize_waits_for_the_folders_writer_then_finds_its_work(
    codec_dir, tmp_path, capsys
):
    """A fit's prepare_data runs on each node's first process: the later ones wait."""
    make_folder(tmp_path / "in")
    out = tmp_path / "out"
    run(tmp_path / "in", out, codec_dir)
    holder = hold_in_another_process(out, 1.5)
    config = TokenizeConfig(
        input=str(tmp_path / "in"), output=str(out), num_workers=0, progress=False,
        codec=CodecConfig(pretrained=codec_dir),
    )  # fmt: skip
    summary = tokenize(config, use_trainer=False)
    holder.wait()
    assert summary.new_items == 0 and summary.already_present == len(CASES)
    assert f"waiting for another tokenize writing into {out} (pid {holder.pid}" in (
        capsys.readouterr().err
    )


def test_an_output_that_cannot_be_written_is_one_line(codec_dir, tmp_path, capsys):
    make_folder(tmp_path / "in")
    (tmp_path / "a_file").write_text("x")
    for output in (tmp_path / "a_file", tmp_path / "a_file" / "shards"):
        argv = ["tokenize", str(tmp_path / "in"), str(output), "--codec-dir", codec_dir]
        assert main([*argv, "--no-progress", "--workers", "0"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: the output folder {output} cannot")


def test_an_empty_input_names_the_extensions_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("no audio here")
    argv = ["tokenize", str(tmp_path / "empty"), str(tmp_path / "out"), "--random-codec", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no audio found in") and ".wav, .flac, .ogg" in err
    assert not (tmp_path / "out").exists()


def test_a_codec_must_be_chosen(tmp_path, capsys):
    make_folder(tmp_path / "in")
    assert main(["tokenize", str(tmp_path / "in"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no codec: give a local EnCodec directory (--codec-dir")
    assert not (tmp_path / "out").exists()
    both = ["--codec-dir", str(tmp_path), "--random-codec", "0"]
    assert main(["tokenize", str(tmp_path / "in"), str(tmp_path / "out"), *both]) == 2
    assert capsys.readouterr().err.startswith("error: choose one codec")
    with pytest.raises(ValueError, match="no codec: give a local EnCodec directory"):
        run(tmp_path / "in", tmp_path / "out", None, codec=CodecConfig())


def test_a_random_codec_is_saved_beside_the_shards_and_reused(tmp_path):
    make_folder(tmp_path / "in")
    out = tmp_path / "out"
    first = run(tmp_path / "in", out, None, codec=CodecConfig(), random_codec_seed=3)
    assert first.new_items == len(CASES)
    index = json.loads((out / INDEX_FILE).read_text())
    assert index["codec"]["pretrained"] == str((out / "codec").resolve())
    saved = EncodecCodec(CodecConfig(pretrained=str(out / "codec")))
    assert saved.fingerprint() == index["codec"]["weights_sha256"]  # the shards decode with it
    again = run(tmp_path / "in", out, None, codec=CodecConfig(), random_codec_seed=3)
    assert again.new_items == 0 and again.already_present == len(CASES)
    with pytest.raises(ValueError, match="random codec of seed 3, not 4"):
        run(tmp_path / "in", out, None, codec=CodecConfig(), random_codec_seed=4)


def test_the_same_seed_builds_the_same_random_codec(tmp_path):
    make_folder(tmp_path / "in")
    for name in ("a", "b"):
        run(tmp_path / "in", tmp_path / name, None, codec=CodecConfig(), random_codec_seed=7)
    codecs = [json.loads((tmp_path / n / INDEX_FILE).read_text())["codec"] for n in "ab"]
    assert codecs[0]["weights_sha256"] == codecs[1]["weights_sha256"]


def test_a_truncated_wav_is_reported_with_both_lengths(codec_dir, tmp_path):
    make_folder(tmp_path / "in")
    whole = tmp_path / "whole.wav"
    sf.write(whole, 0.1 * np.ones(32000 * 4), 32000)
    data = whole.read_bytes()
    (tmp_path / "in" / "cut.wav").write_bytes(data[: len(data) // 2])
    (tmp_path / "in" / "cut.txt").write_text("a cut-off download")
    summary = run(tmp_path / "in", tmp_path / "out", codec_dir)
    reasons = {Path(r["source"]).name: r["reason"] for r in summary.rejected}
    assert reasons["cut.wav"] == "truncated: header says 4.0 s, data holds 2.0 s"
    assert summary.total_items == len(CASES)


def test_float_audio_beyond_full_scale_is_encoded_and_said_in_the_summary_and_index(
    codec_dir, tmp_path, capsys
):
    """A float WAV mastered hot (peaks at 3.0) went into the shards without a word."""
    folder = tmp_path / "in"
    folder.mkdir()
    tone = np.sin(2 * np.pi * 220 * np.arange(64000) / 32000).astype(np.float32)
    for name, gain in (("hot", 3.0), ("fine", 0.5)):
        sf.write(folder / f"{name}.wav", gain * tone, 32000, subtype="FLOAT")
        (folder / f"{name}.txt").write_text(name)
    argv = ["tokenize", str(folder), str(tmp_path / "out"), "--codec-dir", codec_dir]
    assert main([*argv, "--no-progress", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "tokenized 2 new items" in printed  # encoded, not refused
    assert "over full scale: 1 item peaks above 1.0, encoded as they are" in printed
    assert f"{folder / 'hot.wav'}: peak 3.00 (+9.5 dB over full scale)" in printed
    assert "fine.wav" not in printed
    index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    assert index["over_full_scale"] == [{"source": str(folder / "hot.wav"), "peak": 3.0}]
    assert not list((tmp_path / "out").glob("*.rank*.json"))  # merged into the index
    sf.write(folder / "late.wav", 0.5 * tone, 32000)
    (folder / "late.txt").write_text("late")
    assert main([*argv, "--no-progress", "--workers", "0"]) == 0  # a rerun keeps the note
    index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    assert [entry["source"] for entry in index["over_full_scale"]] == [str(folder / "hot.wav")]


def test_txt_caption_and_json_metadata_are_both_kept(codec_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "piece.wav", 0.1 * np.ones(64000), 32000)
    (folder / "piece.txt").write_text("a waltz for strings")
    info = {"description": "ignored: the .txt wins", "bpm": 90, "key": "D major"}
    (folder / "piece.json").write_text(json.dumps({**info, "instrument": "strings"}))
    run(folder, tmp_path / "out", codec_dir)
    (sample,) = all_samples(tmp_path / "out")
    assert sample["info"]["caption"] == "a waltz for strings"
    metadata = sample["info"]["metadata"]
    assert (metadata["bpm"], metadata["key"], metadata["instrument"]) == (90, "D major", "strings")


def test_in_process_run_writes_the_same_shards_as_the_trainer(codec_dir, tmp_path):
    make_folder(tmp_path / "in")
    run(tmp_path / "in", tmp_path / "trainer", codec_dir)
    config = TokenizeConfig(
        input=str(tmp_path / "in"), output=str(tmp_path / "local"), num_workers=0,
        progress=False, max_shard_items=2, codec=CodecConfig(pretrained=codec_dir),
    )  # fmt: skip
    tokenize(config, use_trainer=False)
    by_trainer = {s["key"]: s["codes"] for s in all_samples(tmp_path / "trainer")}
    in_process = {s["key"]: s["codes"] for s in all_samples(tmp_path / "local")}
    assert by_trainer.keys() == in_process.keys()
    assert all(np.array_equal(by_trainer[k], in_process[k]) for k in by_trainer)


@pytest.mark.slow
def test_two_process_ddp_tokenize_writes_every_item_once(codec_dir, tmp_path):
    make_folder(tmp_path / "in")
    for index in range(5):
        sf.write(tmp_path / "in" / f"extra{index}.wav", 0.1 * np.ones(48000), 32000)
        (tmp_path / "in" / f"extra{index}.txt").write_text(f"extra {index}")
    argv = ["tokenize", str(tmp_path / "in"), str(tmp_path / "out"), "--codec-dir", codec_dir]
    argv += ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--workers", "0"]
    argv += ["--shard-items", "2", "--no-progress"]
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(
        [sys.executable, "-m", "lightning_sdm", *argv],
        capture_output=True, text=True, timeout=300, env=environment, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("output: ") == 1  # one summary, from the rank that wrote the index
    assert "tokenized 9 new items" in result.stdout and "output: 9 items" in result.stdout
    assert "nothing could be tokenized" not in result.stdout + result.stderr
    keys = [s["key"] for s in all_samples(tmp_path / "out")]
    assert sorted(keys) == sorted([name for name, *_ in CASES] + [f"extra{i}" for i in range(5)])


def test_the_tokenize_config_examples_load_and_the_demo_one_runs(tmp_path, monkeypatch, capsys):
    configs = Path(__file__).resolve().parents[2] / "configs" / "tokenize"
    for config in sorted(configs.glob("*.yaml")):
        with pytest.raises(SystemExit) as done:
            main(["tokenize", "--config", str(config), "--print_config"])
        assert done.value.code == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    write_demo_clips(tmp_path / "data" / "demo" / "audio", 4, 1.5)
    assert main(["tokenize", "--config", str(configs / "demo.yaml"), "--workers", "0"]) == 0
    index = json.loads((tmp_path / "data" / "demo" / "tokens" / INDEX_FILE).read_text())
    assert index["num_samples"] == 4
    assert (tmp_path / "data" / "demo" / "tokens" / "codec" / "config.json").is_file()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_tokenize_within_seconds_mid_track_and_a_rerun_continues(
    codec_dir, tmp_path, signum
):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        sf.write(folder / f"{name}.wav", np.zeros(32000), 16000)
        (folder / f"{name}.txt").write_text(name)
    minutes = 12  # about 6 s of encoding with the test codec on a 2-core CPU
    t = np.arange(minutes * 60 * 16000) / 16000
    sf.write(folder / "z-long.wav", (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    (folder / "z-long.txt").write_text("long")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "lightning_sdm", "tokenize", str(folder), str(out),
               "--codec-dir", codec_dir, "--shard_items", "2", "--workers", "1",
               "--no-progress", "--accelerator", "cpu"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "shard-000000.tar").exists():  # a and b are done: z-long is next
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    time.sleep(2.0)  # into decoding and encoding the long track
    process.send_signal(signum)
    signalled = time.monotonic()
    stdout, stderr = process.communicate(timeout=60)
    assert time.monotonic() - signalled < 4.0, stderr[-2000:]
    assert process.returncode == 128 + signum, stderr[-2000:]
    assert "run the same command again to continue" in stdout and "Traceback" not in stderr
    assert json.loads((out / INDEX_FILE).read_text())["num_samples"] == 2
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "tokenized 1 new items; 2 were already present" in rerun.stdout
    keys = sorted(s["key"] for s in all_samples(out))
    assert keys == ["a", "b", "z-long"]


FULL_DISK_RUN = """
import errno, sys
from lightning_sdm.data.shards import ShardWriter
from lightning_sdm.cli import main
written = []
def full():
    return OSError(errno.ENOSPC, "No space left on device")
def write(self, item):
    if written:  # the second item finds the disk full, and so does every later write
        self.failed = True
        raise full()
    written.append(item)
    return original_write(self, item)
def finish(self):
    if len(written) > 1 or getattr(self, "failed", False):
        raise full()
    return original_finish(self)
original_write, ShardWriter.write = ShardWriter.write, write
original_finish, ShardWriter.finish = ShardWriter.finish, finish
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_ends_tokenize_in_one_line_with_decoding_workers_running(codec_dir, tmp_path):
    """A second failed write in the exception hook once skipped Lightning's teardown: the
    decoding workers, which ignore SIGTERM, kept the process waiting at exit forever."""
    make_folder(tmp_path / "in")
    argv = ["tokenize", str(tmp_path / "in"), str(tmp_path / "out"), "--codec-dir", codec_dir]
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK_RUN, *argv, "--no-progress", "--workers", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert "\nerror: the disk is full (No space left on device); what was written" in done.stderr
    assert not list((tmp_path / "out").glob("shard-*.tar"))  # nothing torn was published
