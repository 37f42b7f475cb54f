"""Shards read from a URL: a real HTTP server on 127.0.0.1, with and without faults."""

from collections import Counter

import pytest

from lightning_sdm.data import storage
from lightning_sdm.data.datamodule import TokenShardsDataModule
from lightning_sdm.data.shards import read_shard
from lightning_sdm.errors import UserInputError
from tests.data.http_fixtures import FaultProxy, Faults, FolderServer
from tests.data.shard_fixtures import write_shards


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(storage, "BACKOFF_SECONDS", 0.01)


def keys_over_ranks(module, split="train", world=2):
    seen, per_rank = Counter(), []
    for rank in range(world):
        batches = list(module.make_loader(split, rank, world))
        per_rank.append(len(batches))
        seen.update(key for batch in batches for key in batch["keys"])
    return seen, per_rank


@pytest.mark.parametrize("workers", [0, 2])
def test_http_shards_give_every_sample_once_per_epoch_as_local_ones_do(tmp_path, workers):
    codes = write_shards(tmp_path / "shards", frames_per_item=[30] * 24, items_per_shard=3)
    with FolderServer(tmp_path / "shards") as server:
        remote = TokenShardsDataModule(server.url + "/", batch_size=3, num_workers=workers,
                                       segment_seconds=0.4, val_fraction=0.25)  # fmt: skip
        remote.setup("fit")
        local = TokenShardsDataModule(str(tmp_path / "shards"), batch_size=3, num_workers=workers,
                                      segment_seconds=0.4, val_fraction=0.25)  # fmt: skip
        local.setup("fit")
        assert f"data: {server.url} (" in remote.summary()
        assert remote.codec == local.codec
        for split in ("train", "val"):
            seen, per_rank = keys_over_ranks(remote, split)
            expected, expected_per_rank = keys_over_ranks(local, split)
            assert seen == expected and per_rank == expected_per_rank
        train, _ = keys_over_ranks(remote)
        val, _ = keys_over_ranks(remote, "val")
        assert not set(train) & set(val)
        whole = TokenShardsDataModule(server.url, batch_size=3, num_workers=workers,
                                      segment_seconds=0.4)  # fmt: skip
        whole.setup("fit")
        seen, per_rank = keys_over_ranks(whole)
        assert per_rank == [4, 4]  # 24 samples / (2 ranks x 3): each exactly once
        assert set(seen) == set(codes) and set(seen.values()) == {1}


def test_a_dropped_connection_and_503s_are_retried_without_losing_or_repeating_a_sample(
    tmp_path, capsys
):
    codes = write_shards(tmp_path, frames_per_item=[30] * 12, items_per_shard=4)
    faults = Faults(
        unavailable_first={"shard-000000.tar": 2, "index.json": 1},
        dropped_first={"shard-000001.tar": 2},
    )
    with FolderServer(tmp_path) as origin, FaultProxy(origin.url, faults) as server:
        module = TokenShardsDataModule(server.url, batch_size=2, num_workers=0,
                                       segment_seconds=0.4)  # fmt: skip
        module.setup("fit")
        seen, _ = keys_over_ranks(module, world=1)
    assert set(seen) == set(codes) and set(seen.values()) == {1}
    assert faults.gets["shard-000000.tar"] == 3 and faults.gets["shard-000001.tar"] == 3
    # each retry is said, naming the whole URL: a slow retry is not a hung command
    err = capsys.readouterr().err
    assert f"{server.url}/index.json: " in err and "; trying again in " in err
    assert "(retry 1 of 3)" in err


def test_a_shard_that_never_arrives_is_named_then_skipped_or_fails_the_run(tmp_path, capsys):
    codes = write_shards(tmp_path, frames_per_item=[30] * 12, items_per_shard=4)
    faults = Faults(always_dropped={"shard-000002.tar"})
    with FolderServer(tmp_path) as origin, FaultProxy(origin.url, faults) as server:
        module = TokenShardsDataModule(server.url, batch_size=2, num_workers=0,
                                       segment_seconds=0.4)  # fmt: skip
        module.setup("fit")
        seen, per_rank = keys_over_ranks(module, world=1)
        assert per_rank == [6]  # the epoch keeps its batch count (it wraps around)
        assert {k for k in codes if k < "item0008"} <= set(seen)
        assert "item0011" not in seen  # past the half the server sends
        err = capsys.readouterr().err
        assert f"shard {server.url}/shard-000002.tar failed {storage.RETRIES + 1} times" in err
        assert faults.gets["shard-000002.tar"] % (storage.RETRIES + 1) == 0
        failing = TokenShardsDataModule(server.url, batch_size=2, num_workers=0,
                                        segment_seconds=0.4, on_bad_shard="fail")  # fmt: skip
        failing.setup("fit")
        with pytest.raises(RuntimeError, match=r"shard-000002.tar failed .* stopped"):
            keys_over_ranks(failing, world=1)


def test_a_url_without_shards_or_without_a_server_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with FolderServer(tmp_path) as server:
        with pytest.raises(UserInputError, match=r"^data.train_dir http.*/empty has no index"):
            TokenShardsDataModule(server.url + "/empty").setup("fit")
        port = server.url.rsplit(":", 1)[1]
    with pytest.raises(UserInputError, match=r"data.train_dir http.* cannot be read: .*") as error:
        TokenShardsDataModule(f"http://127.0.0.1:{port}/shards").setup("fit")
    assert "\n" not in str(error.value)


def test_read_shard_streams_a_url_as_it_reads_a_file(tmp_path):
    write_shards(tmp_path, frames_per_item=[20, 25, 30], items_per_shard=3)
    with FolderServer(tmp_path) as server:
        remote = list(read_shard(server.url + "/shard-000000.tar"))
    local = list(read_shard(tmp_path / "shard-000000.tar"))
    assert [s["key"] for s in remote] == [s["key"] for s in local] == [
        "item0000", "item0001", "item0002"
    ]  # fmt: skip
    assert all((a["codes"] == b["codes"]).all() for a, b in zip(remote, local, strict=True))


def test_what_is_a_url():
    assert storage.is_url("s3://bucket/x") and storage.is_url("HTTPS://host/p")
    assert not storage.is_url("/data/shards") and not storage.is_url("C:\\data")
    assert not storage.is_url("file:///data") and not storage.is_url("runs/s3:/x")


def test_a_cache_folder_saves_downloads_after_the_first_epoch_and_keeps_its_bound(tmp_path):
    write_shards(tmp_path / "shards", frames_per_item=[30] * 16, items_per_shard=4)
    shard_bytes = (tmp_path / "shards" / "shard-000000.tar").stat().st_size
    with FolderServer(tmp_path / "shards") as origin, FaultProxy(origin.url) as server:
        cached = TokenShardsDataModule(server.url, batch_size=2, num_workers=0, segment_seconds=0.4,
                                       cache_dir=str(tmp_path / "cache"))  # fmt: skip
        cached.setup("fit")
        epochs = [keys_over_ranks(cached, world=1)[0] for _ in range(3)]
        gets = {n: c for n, c in server.faults.gets.items() if n.endswith(".tar")}
        assert gets == {f"shard-00000{i}.tar": 1 for i in range(4)}  # once, not once an epoch
        assert all(set(e) == set(epochs[0]) and set(e.values()) == {1} for e in epochs)
        # a bound of two shards: the least recently read copies go, reads stay exact
        small = TokenShardsDataModule(server.url, batch_size=2, num_workers=0, segment_seconds=0.4,
                                      cache_dir=str(tmp_path / "small"),
                                      cache_gb=2.5 * shard_bytes / 1e9)  # fmt: skip
        small.setup("fit")
        seen, _ = keys_over_ranks(small, world=1)
        assert set(seen.values()) == {1} and len(seen) == 16
        assert len(list((tmp_path / "small").iterdir())) == 2


def test_resampled_shards_keep_the_batch_count_and_draw_with_replacement(tmp_path):
    codes = write_shards(tmp_path, frames_per_item=[30] * 24, items_per_shard=2)
    module = TokenShardsDataModule(str(tmp_path), batch_size=2, num_workers=2,
                                   segment_seconds=0.4, resample_shards=True)  # fmt: skip
    module.setup("fit")
    seen, per_rank = keys_over_ranks(module)
    assert per_rank == [6, 6]  # 24 usable / (2 ranks x 2): the epoch is its batch count
    assert set(seen) <= set(codes) and max(seen.values()) > 1  # with replacement
    again, _ = keys_over_ranks(module)
    assert again == seen  # seeded: the same draw for the same epoch


def test_a_pipe_command_location_reads_like_the_folder_it_prints(tmp_path, capsys):
    codes = write_shards(tmp_path / "shards", frames_per_item=[30] * 12, items_per_shard=3)
    module = TokenShardsDataModule(f"pipe:cat {tmp_path / 'shards'}/{{}}", batch_size=3,
                                   num_workers=0, segment_seconds=0.4)  # fmt: skip
    module.setup("fit")
    seen, _ = keys_over_ranks(module)
    assert set(seen) == set(codes) and set(seen.values()) == {1}
    with pytest.raises(UserInputError, match=r"cannot be read: OSError: `cat .*` exited with 1"):
        TokenShardsDataModule(f"pipe:cat {tmp_path}/nothing/{{}}").setup("fit")
    with pytest.raises(UserInputError, match=r"names each file with \{\}"):
        TokenShardsDataModule("pipe:cat /data/shards")
    # a command that fails partway through a shard: retried, then named and skipped
    folder = tmp_path / "shards"
    flaky = (
        f"pipe:if [ {{}} = shard-000001.tar ]; then head -c 3000 {folder}/{{}}; exit 1; "
        f"else cat {folder}/{{}}; fi"
    )
    module = TokenShardsDataModule(flaky, batch_size=3, num_workers=0, segment_seconds=0.4)
    module.setup("fit")
    seen, _ = keys_over_ranks(module, world=1)
    err = capsys.readouterr().err
    assert "failed 4 times (OSError: `if [ shard-000001.tar = shard-000001.tar ]" in err
    assert {"item0003", "item0004", "item0005"}.isdisjoint(
        k for k, n in seen.items() if n == 1 and k not in codes
    )


def test_prepare_from_into_a_url_says_to_tokenize_there_first(tmp_path):
    with FolderServer(tmp_path) as server:
        module = TokenShardsDataModule(server.url + "/shards", prepare_from=str(tmp_path))
        with pytest.raises(
            UserInputError, match=r"tokenizes into a local folder, but data\.train_dir"
        ):
            module.prepare_data()
