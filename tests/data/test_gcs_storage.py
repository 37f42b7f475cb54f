"""Shards in a GCS bucket (a real GCS-compatible server on 127.0.0.1): read, written by
tokenize, and the one-line errors of a wrong bucket or refused credentials."""

from collections import Counter

import pytest

from lightning_sdm.cli import main
from lightning_sdm.data.datamodule import TokenShardsDataModule
from lightning_sdm.errors import UserInputError
from tests.data.http_fixtures import RefusingServer
from tests.data.s3_fixtures import upload
from tests.data.shard_fixtures import write_shards
from tests.data.test_s3_tokenize import bucket_keys, tokenize_argv, write_clips


@pytest.mark.parametrize("workers", [0, 2])
def test_gcs_shards_give_two_ranks_every_sample_exactly_once(gcs, tmp_path, workers):
    codes = write_shards(tmp_path, frames_per_item=[30] * 24, items_per_shard=3)
    url = upload(gcs, tmp_path, "gs://music/tokens/v1")
    module = TokenShardsDataModule(url, batch_size=3, num_workers=workers, segment_seconds=0.4)
    module.setup("fit")
    assert f"data: {url} " in module.summary()
    seen, per_rank = Counter(), []
    for rank in range(2):
        batches = list(module.make_loader("train", rank, 2))
        per_rank.append(len(batches))
        seen.update(key for batch in batches for key in batch["keys"])
    assert per_rank == [4, 4] and set(seen) == set(codes) and set(seen.values()) == {1}


def test_held_out_keys_in_a_gcs_bucket_are_the_local_folders(gcs, tmp_path):
    write_shards(tmp_path, frames_per_item=[30] * 16, items_per_shard=4)
    url = upload(gcs, tmp_path, "gs://music/tokens")
    splits = {}
    for where in (url, str(tmp_path)):
        module = TokenShardsDataModule(where, batch_size=2, num_workers=0, segment_seconds=0.4,
                                       val_fraction=0.25)  # fmt: skip
        module.setup("fit")
        splits[where] = sorted(k for b in module.make_loader("val", 0, 1) for k in b["keys"])
    assert splits[url] == splits[str(tmp_path)] and splits[url]


def test_a_wrong_gcs_bucket_or_prefix_is_one_line(gcs, codec_dir, tmp_path, capsys):
    write_shards(tmp_path, frames_per_item=[30] * 4, items_per_shard=4)
    upload(gcs, tmp_path, "gs://music/tokens")
    cases = {
        "gs://nobucket/tokens": "cannot be read: no such bucket",
        "gs://music/elsewhere": "has no index.json",
    }
    for url, message in cases.items():
        with pytest.raises(UserInputError, match=f"^data.train_dir {url} {message}"):
            TokenShardsDataModule(url).setup("fit")
    write_clips(tmp_path / "audio", 1)
    assert main(tokenize_argv(tmp_path / "audio", "gs://nobucket/tokens", codec_dir)) == 2
    assert "the output gs://nobucket/tokens cannot be written: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("status", "message"),
    [(401, "no credentials accepted (set GOOGLE_APPLICATION_CREDENTIALS"),
     (403, "access denied with the credentials found")],
)  # fmt: skip
def test_refused_gcs_credentials_are_one_line_and_not_retried(gcs, monkeypatch, status, message):
    import gcsfs

    with RefusingServer(status) as server:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        gcsfs.GCSFileSystem.clear_instance_cache()
        with pytest.raises(UserInputError) as error:
            TokenShardsDataModule("gs://music/tokens").setup("fit")
    said = str(error.value)
    assert said.startswith(f"data.train_dir gs://music/tokens cannot be read: {message}")
    assert "\n" not in said
    assert sum(server.answered.values()) == 1, server.answered  # asked once, not retried


def test_tokenize_into_a_gcs_bucket_gives_shards_fit_reads(gcs, codec_dir, tmp_path, capsys):
    write_clips(tmp_path / "audio", 5)
    gcs.mkdir("music")
    url = "gs://music/tokens"
    assert main(tokenize_argv(tmp_path / "audio", url, codec_dir)) == 0
    assert f"index {url}/index.json" in capsys.readouterr().out
    index, keys = bucket_keys(gcs, url)
    assert index["num_samples"] == 5 and sorted(keys) == [f"clip{n:02d}" for n in range(5)]
    assert not [p for p in gcs.ls("music/tokens") if "rejections" in p or "write-test" in p]
    module = TokenShardsDataModule(url, batch_size=1, num_workers=0, segment_seconds=0.5)
    module.setup("fit")
    captions = {c for b in module.make_loader("train", 0, 1) for c in b["captions"]}
    assert "tone number 3 ♪" in captions
    assert main(tokenize_argv(tmp_path / "audio", url, codec_dir)) == 0
    assert "tokenized 0 new items; 5 were already present" in capsys.readouterr().out
