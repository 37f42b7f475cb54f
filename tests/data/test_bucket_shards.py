"""Shards in a bucket (real S3- and GCS-compatible servers on 127.0.0.1)."""

from collections import Counter

import pytest

from lightning_sdm.data.datamodule import TokenShardsDataModule
from lightning_sdm.errors import UserInputError
from tests.data.s3_fixtures import upload
from tests.data.shard_fixtures import write_shards


@pytest.mark.parametrize("workers", [0, 2])
def test_bucket_shards_give_two_ranks_every_sample_exactly_once(bucket, tmp_path, workers):
    server, scheme = bucket
    codes = write_shards(tmp_path, frames_per_item=[30] * 24, items_per_shard=3)
    url = upload(server, tmp_path, f"{scheme}://music/tokens/v1")
    module = TokenShardsDataModule(url, batch_size=3, num_workers=workers, segment_seconds=0.4)
    module.setup("fit")
    assert f"data: {url} " in module.summary()
    seen, per_rank = Counter(), []
    for rank in range(2):
        batches = list(module.make_loader("train", rank, 2))
        per_rank.append(len(batches))
        seen.update(key for batch in batches for key in batch["keys"])
    assert per_rank == [4, 4] and set(seen) == set(codes) and set(seen.values()) == {1}


def test_held_out_keys_in_a_bucket_are_the_local_folders(bucket, tmp_path):
    server, scheme = bucket
    write_shards(tmp_path, frames_per_item=[30] * 16, items_per_shard=4)
    url = upload(server, tmp_path, f"{scheme}://music/tokens")
    splits = {}
    for where in (url, str(tmp_path)):
        module = TokenShardsDataModule(where, batch_size=2, num_workers=0, segment_seconds=0.4,
                                       val_fraction=0.25)  # fmt: skip
        module.setup("fit")
        splits[where] = sorted(k for b in module.make_loader("val", 0, 1) for k in b["keys"])
    assert splits[url] == splits[str(tmp_path)] and splits[url]


def test_a_wrong_bucket_or_prefix_is_one_line(bucket, tmp_path):
    server, scheme = bucket
    write_shards(tmp_path, frames_per_item=[30] * 4, items_per_shard=4)
    upload(server, tmp_path, f"{scheme}://music/tokens")
    cases = {
        f"{scheme}://nobucket/tokens": "cannot be read: no such bucket",
        f"{scheme}://music/elsewhere": "has no index.json",
    }
    for url, message in cases.items():
        with pytest.raises(UserInputError, match=f"^data.train_dir {url} {message}"):
            TokenShardsDataModule(url).setup("fit")


def test_missing_s3_credentials_are_one_line_without_secrets(s3, tmp_path, monkeypatch):
    import s3fs

    write_shards(tmp_path, frames_per_item=[30] * 4, items_per_shard=4)
    upload(s3, tmp_path, "s3://music/tokens")

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(UserInputError, match="cannot be read: no credentials") as error:
        TokenShardsDataModule("s3://music/tokens").setup("fit")
    assert "testing" not in str(error.value)


def test_fit_trains_from_a_bucket(s3, tmp_path, monkeypatch):
    from lightning_sdm.cli import main
    from tests.test_training_cli import tiny_config

    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = str(tiny_config(tmp_path))
    url = upload(s3, tmp_path / "shards", "s3://music/demo-tokens")
    main(["fit", "--config", config, "--trainer.max_steps", "2", "--data.train_dir", url])
    assert list((tmp_path / "run" / "version_0" / "checkpoints").glob("*.ckpt"))


def test_bucket_reads_through_a_faulty_proxy_lose_and_repeat_nothing(
    s3,
    tmp_path,
    monkeypatch,
    capsys,
):
    import s3fs

    from lightning_sdm.data import storage
    from tests.data.http_fixtures import FaultProxy, Faults

    monkeypatch.setattr(storage, "BACKOFF_SECONDS", 0.01)
    codes = write_shards(tmp_path, frames_per_item=[30] * 12, items_per_shard=4)
    url = upload(s3, tmp_path, "s3://music/flaky")
    faults = Faults(
        unavailable_first={"shard-000000.tar": 2},
        dropped_first={"shard-000001.tar": 1},
        always_dropped={"shard-000002.tar"},
    )
    import os

    with FaultProxy(os.environ["AWS_ENDPOINT_URL"], faults) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        s3fs.S3FileSystem.clear_instance_cache()
        module = TokenShardsDataModule(url, batch_size=2, num_workers=0, segment_seconds=0.4)
        module.setup("fit")
        loader = module.make_loader("train", 0, 1)
        keys = [k for batch in loader for k in batch["keys"]]
    firsts = {k for k in codes if k < "item0008"}
    assert firsts <= set(keys) and "item0011" not in keys  # shard 2 never arrives whole
    assert faults.gets["shard-000000.tar"] >= 3 and faults.gets["shard-000001.tar"] >= 2
    # the first pass over the shards: every sample that arrived, each once (then the epoch
    # wraps around to keep its batch count)
    assert len(keys) == 2 * len(loader) and set(keys[:8]) == firsts
    assert f"shard {url}/shard-000002.tar failed {storage.RETRIES + 1} times" in (
        capsys.readouterr().err
    )
