"""`tokenize` into a bucket (real S3- and GCS-compatible servers on 127.0.0.1)."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import soundfile as sf

from lightning_sdm.cli import main
from lightning_sdm.data.datamodule import TokenShardsDataModule
from lightning_sdm.data.shards import read_shard


def write_clips(folder, count, seconds=1.0):
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        tone = np.sin(2 * np.pi * (200 + 20 * number) * np.arange(int(seconds * 16000)) / 16000)
        sf.write(folder / f"clip{number:02d}.wav", (0.1 * tone).astype(np.float32), 16000)
        (folder / f"clip{number:02d}.txt").write_text(f"tone number {number} ♪")


def bucket_keys(fs, url):
    index = json.loads(fs.cat_file(f"{url}/index.json"))
    keys = []
    for entry in index["shards"]:
        local = f"/tmp/{entry['shard']}-{time.monotonic_ns()}"
        fs.get_file(f"{url}/{entry['shard']}", local)
        keys += [s["key"] for s in read_shard(local)]
    return index, keys


def tokenize_argv(folder, url, codec_dir, *extra):
    return ["tokenize", str(folder), url, "--codec-dir", codec_dir, "--shard_items", "2",
            "--workers", "0", "--no-progress", "--accelerator", "cpu", *extra]  # fmt: skip


def test_tokenize_uploads_shards_and_index_that_fit_reads(bucket, codec_dir, tmp_path, capsys):
    server, scheme = bucket
    write_clips(tmp_path / "audio", 5)
    server.mkdir("music")
    url = f"{scheme}://music/tokens"
    assert main(tokenize_argv(tmp_path / "audio", url, codec_dir)) == 0
    assert f"index {url}/index.json" in capsys.readouterr().out
    index, keys = bucket_keys(server, url)
    assert index["num_samples"] == 5 and sorted(keys) == [f"clip{n:02d}" for n in range(5)]
    assert not [p for p in server.ls("music/tokens") if "rejections" in p or "write-test" in p]
    module = TokenShardsDataModule(url, batch_size=1, num_workers=0, segment_seconds=0.5)
    module.setup("fit")
    captions = {c for b in module.make_loader("train", 0, 1) for c in b["captions"]}
    assert "tone number 3 ♪" in captions
    # a rerun finds everything done at the bucket
    assert main(tokenize_argv(tmp_path / "audio", url, codec_dir)) == 0
    assert "tokenized 0 new items; 5 were already present" in capsys.readouterr().out


def test_a_killed_upload_run_resumes_from_what_the_bucket_holds(s3, codec_dir, tmp_path):
    write_clips(tmp_path / "audio", 12, seconds=2.0)
    s3.mkdir("music")
    url = "s3://music/killed"
    command = [sys.executable, "-m", "lightning_sdm",
               *tokenize_argv(tmp_path / "audio", url, codec_dir)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not s3.glob("music/killed/shard-*.json"):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no chance to tidy up
    process.communicate(timeout=30)
    assert not s3.exists("music/killed/index.json")
    s3.invalidate_cache()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "were already present" in rerun.stdout
    index, keys = bucket_keys(s3, url)
    assert sorted(keys) == [f"clip{n:02d}" for n in range(12)]  # each once
    assert index["num_samples"] == 12


def test_an_output_url_that_cannot_take_shards_is_one_line(s3, codec_dir, tmp_path, capsys):
    write_clips(tmp_path / "audio", 1)
    cases = {
        "s3://nobucket/tokens": "the output s3://nobucket/tokens cannot be written: no such bucket",
        "http://127.0.0.1:9/tokens": "is read-only (HTTP)",
    }
    for url, message in cases.items():
        assert main(tokenize_argv(tmp_path / "audio", url, codec_dir)) == 2
        assert message in capsys.readouterr().err
    argv = tokenize_argv(tmp_path / "audio", "s3://music/x", "unused")[:3]
    assert main([*argv, "--random-codec", "0", "--no-progress"]) == 2
    assert "tokenize into a folder, not s3://music/x" in capsys.readouterr().err


def test_two_ranks_tokenize_into_one_bucket_with_disjoint_shards(s3, codec_dir, tmp_path):
    import os
    from pathlib import Path

    write_clips(tmp_path / "audio", 7)
    s3.mkdir("music")
    url = "s3://music/ddp"
    argv = tokenize_argv(tmp_path / "audio", url, codec_dir, "--devices", "2", "--strategy", "ddp")
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(
        [sys.executable, "-m", "lightning_sdm", *argv],
        capture_output=True, text=True, timeout=300, env=environment, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("output: ") == 1 and "output: 7 items" in result.stdout
    index, keys = bucket_keys(s3, url)
    assert sorted(keys) == [f"clip{n:02d}" for n in range(7)]
    numbers = [int(entry["shard"][6:12]) for entry in index["shards"]]
    assert {n % 2 for n in numbers} == {0, 1}  # both ranks published their own shards
    assert not s3.glob("music/ddp/rejections*")
