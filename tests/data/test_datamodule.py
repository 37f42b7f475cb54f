"""The streaming DataModule: rank/worker splits, exact epochs, crops and padding."""

import itertools
from collections import Counter

import numpy as np
import pytest
import torch

from lightning_sdm.data.datamodule import TokenShardsDataModule
from tests.data.shard_fixtures import write_shards


def collect(module, split, rank, world, epochs=1):
    loader = module.make_loader(split, rank, world)
    return [batch for _ in range(epochs) for batch in loader]


def test_two_ranks_two_workers_see_every_sample_exactly_once(tmp_path):
    codes = write_shards(tmp_path, frames_per_item=[30] * 40, items_per_shard=5)
    module = TokenShardsDataModule(str(tmp_path), batch_size=5, num_workers=2, segment_seconds=0.4)
    seen = Counter()
    per_rank = []
    for rank in range(2):
        batches = collect(module, "train", rank, 2)
        per_rank.append(len(batches))
        seen.update(key for batch in batches for key in batch["keys"])
    assert per_rank == [4, 4]  # 40 samples / (2 ranks x 5) each, so DDP stays in step
    assert set(seen) == set(codes) and set(seen.values()) == {1}


def test_too_few_shards_still_split_samples_exactly(tmp_path):
    codes = write_shards(tmp_path, frames_per_item=[30] * 16, items_per_shard=16)  # one shard
    module = TokenShardsDataModule(str(tmp_path), batch_size=2, num_workers=2, segment_seconds=0.4)
    seen = Counter(
        k for rank in range(2) for b in collect(module, "train", rank, 2) for k in b["keys"]
    )
    assert set(seen) == set(codes) and set(seen.values()) == {1}


def test_ranks_get_equal_batch_counts_with_uneven_shards(tmp_path):
    write_shards(tmp_path, frames_per_item=[30] * 23, items_per_shard=7)  # 7, 7, 7, 2
    module = TokenShardsDataModule(str(tmp_path), batch_size=3, num_workers=2, segment_seconds=0.4)
    counts = [len(collect(module, "train", rank, 2)) for rank in range(2)]
    assert counts == [23 // 6, 23 // 6]
    assert len(module.make_loader("train", 0, 2)) == 23 // 6


def test_crops_stay_inside_items_and_padding_is_masked(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.integers(10, 60, 60).tolist()
    codes = write_shards(tmp_path, frames_per_item=frames, items_per_shard=8)
    module = TokenShardsDataModule(
        str(tmp_path), batch_size=4, num_workers=2, segment_seconds=0.5, min_segment_ratio=0.8
    )
    segment, minimum = 25, 20
    seen = set()
    for batch in collect(module, "train", 0, 1, epochs=2):
        assert batch["codes"].shape == (4, 4, segment)
        for key, row, mask, start in zip(
            batch["keys"], batch["codes"], batch["padding_mask"], batch["crop_start"], strict=True
        ):
            seen.add(key)
            full = torch.from_numpy(codes[key].astype(np.int64))
            length = full.shape[-1]
            assert length >= minimum  # shorter than min_segment_ratio x segment: skipped
            real = min(length, segment)
            assert int(start) + real <= length  # never crosses the item's end
            assert torch.equal(mask, torch.arange(segment) < real)
            assert torch.equal(row[:, :real], full[:, start : start + real])
            assert torch.all(row[:, real:] == 0)
    assert seen == {k for k, c in codes.items() if c.shape[-1] >= minimum}


def test_epochs_reshuffle_but_are_reproducible(tmp_path):
    write_shards(tmp_path, frames_per_item=[40] * 32, items_per_shard=4)
    module = TokenShardsDataModule(str(tmp_path), batch_size=4, num_workers=0, segment_seconds=0.4)
    loader = module.make_loader("train", 0, 1)
    first = [batch["keys"] for batch in loader]
    second = [batch["keys"] for batch in loader]
    again = [batch["keys"] for batch in module.make_loader("train", 0, 1)]
    assert first != second and first == again
    assert sorted(itertools.chain(*first)) == sorted(itertools.chain(*second))


def test_validation_is_deterministic_from_held_out_shards(tmp_path):
    codes = write_shards(tmp_path, frames_per_item=[40] * 12, items_per_shard=4)
    module = TokenShardsDataModule(
        str(tmp_path), batch_size=2, num_workers=0, segment_seconds=0.4, holdout_shards=1
    )
    val = collect(module, "val", 0, 1)
    repeat = collect(module, "val", 0, 1)
    assert [b["keys"] for b in val] == [b["keys"] for b in repeat]
    assert all(torch.equal(a["codes"], b["codes"]) for a, b in zip(val, repeat, strict=True))
    val_keys = [k for batch in val for k in batch["keys"]]
    assert val_keys == sorted(codes)[-4:]  # the last shard, in order, cropped at the start
    assert all(int(s) == 0 for batch in val for s in batch["crop_start"])
    train_keys = {k for batch in collect(module, "train", 0, 1) for k in batch["keys"]}
    assert not train_keys & set(val_keys)


def test_configuration_errors_are_clear(tmp_path):
    write_shards(tmp_path, frames_per_item=[40] * 4, items_per_shard=4)
    with pytest.raises(ValueError, match="cannot fill one batch"):
        TokenShardsDataModule(str(tmp_path), batch_size=8, segment_seconds=0.4).make_loader(
            "train", 0, 1
        )
    with pytest.raises(ValueError, match="no val shards"):
        TokenShardsDataModule(str(tmp_path), segment_seconds=0.4).make_loader("val", 0, 1)
    with pytest.raises(ValueError, match="leaves no training shards"):
        TokenShardsDataModule(str(tmp_path), holdout_shards=1).make_loader("train", 0, 1)
    with pytest.raises(FileNotFoundError, match="lightning-sdm tokenize"):
        TokenShardsDataModule(str(tmp_path / "none")).make_loader("train", 0, 1)
