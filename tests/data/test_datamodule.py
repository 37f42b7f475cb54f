"""The streaming DataModule: rank/worker splits, exact epochs, crops and padding."""

import itertools
import logging
import multiprocessing
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lightning_sdm.data.datamodule import TokenShardsDataModule
from lightning_sdm.data.split import key_position
from lightning_sdm.errors import UserInputError
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


def test_workers_live_through_epochs_and_each_epoch_still_reshuffles(tmp_path):
    """Workers started anew every epoch cost seconds each time; kept alive, they hold their
    own copy of the stream, and the epoch set in the main process must still reach it: each
    epoch reshuffled, every sample once, and epoch e ordered as any run's epoch e (a resumed
    run's first epoch included)."""
    write_shards(tmp_path, frames_per_item=[40] * 32, items_per_shard=4)
    module = TokenShardsDataModule(str(tmp_path), batch_size=4, num_workers=2, segment_seconds=0.4)
    epochs = iter([0, 1, 5])
    trainer = SimpleNamespace(current_epoch=0, global_rank=0, world_size=1)
    module.trainer = trainer  # type: ignore[assignment]
    loader = module.make_loader("train", 0, 1)

    def one_epoch(each_loader):
        trainer.current_epoch = next(epochs, trainer.current_epoch)
        keys = [b["keys"] for b in each_loader]
        return keys, {child.pid for child in multiprocessing.active_children()}

    (first, workers_0), (second, workers_1), (sixth, workers_5) = (
        one_epoch(loader) for _ in range(3)
    )
    assert workers_0 == workers_1 == workers_5 and len(workers_0) == 2  # the same two processes
    assert first != second != sixth
    for keys in (first, second, sixth):
        assert Counter(itertools.chain(*keys)) == Counter(itertools.chain(*first))
    trainer.current_epoch = 5  # a run resumed in epoch 5 orders it as the long run did
    resumed = [b["keys"] for b in module.make_loader("train", 0, 1)]
    assert resumed == sixth


def test_validation_workers_end_with_each_pass(tmp_path):
    """Kept through training, validation's workers would hold another copy-on-write image
    of the training process all along; validation is rare, so they start anew."""
    write_shards(tmp_path, frames_per_item=[40] * 16, items_per_shard=2)
    module = TokenShardsDataModule(
        str(tmp_path), batch_size=2, num_workers=2, segment_seconds=0.4, holdout_shards=2
    )
    loader = module.make_loader("val", 0, 1)
    assert [b["keys"] for b in loader] and not multiprocessing.active_children()


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
    with pytest.raises(
        ValueError, match=r"the 4 train items fill not one batch of 8: lower data\.b"
    ):
        TokenShardsDataModule(str(tmp_path), batch_size=8, segment_seconds=0.4).make_loader(
            "train", 0, 1
        )
    with pytest.raises(ValueError, match=r"no val data: set data\.val_fraction"):
        TokenShardsDataModule(str(tmp_path), segment_seconds=0.4).make_loader("val", 0, 1)
    with pytest.raises(ValueError, match="leaves no training shards"):
        TokenShardsDataModule(str(tmp_path), holdout_shards=1).make_loader("train", 0, 1)
    with pytest.raises(ValueError, match=r"hold out items instead with data\.val_fraction"):
        TokenShardsDataModule(str(tmp_path), holdout_shards=1).make_loader("train", 0, 1)
    with pytest.raises(UserInputError, match=r"data.train_dir .*none does not exist"):
        TokenShardsDataModule(str(tmp_path / "none")).make_loader("train", 0, 1)
    with pytest.raises(ValueError, match="choose one validation split"):
        TokenShardsDataModule(str(tmp_path), val_fraction=0.1, holdout_shards=1)
    # the training folder again as val_dir (a copied config line), however it is spelled
    (tmp_path.parent / "link").symlink_to(tmp_path)
    for spelled in (str(tmp_path), f"{tmp_path}/", str(tmp_path.parent / "link")):
        with pytest.raises(UserInputError, match="validating on the training shards"):
            TokenShardsDataModule(str(tmp_path), val_dir=spelled).make_loader("val", 0, 1)


def test_a_folder_of_audio_instead_of_shards_says_to_tokenize(tmp_path):
    (tmp_path / "music").mkdir()
    for name in ("a.wav", "b.flac"):
        (tmp_path / "music" / name).write_bytes(b"x")
    with pytest.raises(UserInputError) as error:
        TokenShardsDataModule(str(tmp_path / "music")).setup("fit")
    message = str(error.value)
    assert "holds 2 audio files but no token shards" in message
    assert "lightning-sdm tokenize" in message and "\n" not in message


def test_an_empty_train_dir_is_named(tmp_path):
    with pytest.raises(UserInputError, match=r"is empty; make shards with"):
        TokenShardsDataModule(str(tmp_path)).setup("fit")


def split_keys(module, split):
    return [k for batch in collect(module, split, 0, 1) for k in batch["keys"]]


@pytest.mark.parametrize("items_per_shard", [24, 5])
def test_val_fraction_holds_out_the_same_items_for_any_sharding(tmp_path, items_per_shard):
    codes = write_shards(tmp_path, frames_per_item=[40] * 24, items_per_shard=items_per_shard)
    module = TokenShardsDataModule(
        str(tmp_path), batch_size=2, num_workers=0, segment_seconds=0.4, val_fraction=0.25
    )
    val = set(split_keys(module, "val"))
    expected = {k for k in codes if key_position(k) < 0.25}
    assert val == expected and 0 < len(val) < 24
    train = split_keys(module, "train")
    assert not set(train) & val
    assert len(train) == (24 - len(val)) // 2 * 2  # whole batches, each item at most once
    assert module.usable_samples("val") == len(val)


def test_val_fraction_takes_one_item_when_the_fraction_rounds_to_none(tmp_path):
    codes = write_shards(tmp_path, frames_per_item=[40] * 6, items_per_shard=6)
    module = TokenShardsDataModule(
        str(tmp_path), batch_size=1, num_workers=0, segment_seconds=0.4, val_fraction=0.001
    )
    assert split_keys(module, "val") == [min(codes, key=key_position)]
    assert len(split_keys(module, "train")) == 5


def test_validation_sees_each_held_out_item_once_with_workers(tmp_path):
    write_shards(tmp_path, frames_per_item=[40] * 24, items_per_shard=3)
    single, workers = (
        TokenShardsDataModule(
            str(tmp_path), batch_size=1, num_workers=n, segment_seconds=0.4, val_fraction=0.3
        )
        for n in (0, 2)
    )
    once = split_keys(single, "val")
    assert len(once) == len(set(once))
    assert sorted(split_keys(workers, "val")) == sorted(once)


def test_fit_prints_a_data_summary(tmp_path, caplog):
    write_shards(tmp_path, frames_per_item=[40] * 24, items_per_shard=4)
    module = TokenShardsDataModule(
        str(tmp_path), batch_size=4, num_workers=0, segment_seconds=0.4, val_fraction=0.25
    )
    with caplog.at_level(logging.INFO):
        module.setup("fit")
    lines = caplog.text
    held = [key_position(f"item{i:04d}") < 0.25 for i in range(24)]
    val_items, seconds = sum(held), (24 - sum(held)) * 40 / 50
    train_shards = sum(not all(held[i : i + 4]) for i in range(0, 24, 4))
    assert f"train: {24 - val_items} items ({seconds:.0f} s), {train_shards} shards" in lines
    assert f"val: {val_items} items" in lines and "held out: val_fraction=0.25" in lines
    assert f"{(24 - val_items) // 4} batches of 4 per epoch" in lines


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_shard_is_found_before_training_and_named_in_one_line(tmp_path):
    write_shards(tmp_path, frames_per_item=[30] * 12, items_per_shard=4)
    truncate(tmp_path / "shard-000001.tar")
    with pytest.raises(UserInputError, match=r"shard .*shard-000001\.tar is .*on_bad_shard=skip"):
        TokenShardsDataModule(str(tmp_path), batch_size=2, on_bad_shard="fail").setup("fit")


def test_with_skip_a_damaged_shard_is_left_out_and_the_rest_trains(tmp_path, caplog):
    codes = write_shards(tmp_path, frames_per_item=[30] * 12, items_per_shard=4)
    (tmp_path / "shard-000002.tar").write_bytes(b"\0garbage" * 100)
    module = TokenShardsDataModule(
        str(tmp_path), batch_size=2, num_workers=0, segment_seconds=0.4, on_bad_shard="skip"
    )
    with caplog.at_level(logging.INFO):
        module.setup("fit")
    assert "shard-000002.tar is unreadable tar" in caplog.text
    assert "left out: 1 damaged shards" in caplog.text
    keys = {k for batch in collect(module, "train", 0, 1) for k in batch["keys"]}
    assert keys == set(list(codes)[:8])


def test_a_shard_that_fails_while_training_is_retried_then_skipped(tmp_path, capsys, monkeypatch):
    """Damage the headers cannot show (or that came after the start): read once more, then
    skip the rest of that shard with a warning; the epoch still has its batches."""
    from lightning_sdm.data import shards as shards_module

    write_shards(tmp_path, frames_per_item=[30] * 12, items_per_shard=4)
    module = TokenShardsDataModule(str(tmp_path), batch_size=2, num_workers=0,
                                   segment_seconds=0.4, shuffle_buffer=1)  # fmt: skip
    module.setup("fit")
    real = shards_module.read_shard
    attempts = Counter()

    def flaky(path):
        attempts[path.name] += 1
        for index, sample in enumerate(real(path)):
            if path.name == "shard-000001.tar" and index == 2:
                raise OSError("Input/output error")
            yield sample

    monkeypatch.setattr(shards_module, "read_shard", flaky)
    batches = collect(module, "train", 0, 1)
    assert len(batches) == 6  # the loader's count holds (it wraps around)
    assert attempts["shard-000001.tar"] >= 2
    err = capsys.readouterr().err
    assert "shard" in err and "shard-000001.tar failed twice (OSError: Input/output error)" in err
    keys = [k for batch in batches for k in batch["keys"]]
    assert len(set(keys[:10])) == 10  # a pass: nothing twice, the retry resumed past item 1
    assert not {"item0006", "item0007"} & set(keys)  # the rest of the bad shard, skipped
    failing = TokenShardsDataModule(str(tmp_path), batch_size=2, num_workers=0,
                                    segment_seconds=0.4, on_bad_shard="fail")  # fmt: skip
    failing.setup("fit")
    with pytest.raises(RuntimeError, match=r"failed twice .* stopped"):
        collect(failing, "train", 0, 1)


def test_a_split_that_fills_no_batch_is_said_at_setup_with_the_fix(tmp_path):
    """Lightning asks for validation first, so items too short for the crops were reported
    as '0 usable val samples (>= 1200 frames)' after the model was built; a missing val
    split too."""
    write_shards(tmp_path, frames_per_item=[40, 60, 100, 100], items_per_shard=4)  # 2 s at most
    module = TokenShardsDataModule(str(tmp_path), batch_size=2, val_fraction=0.25)
    with pytest.raises(UserInputError) as raised:
        module.setup("fit")  # 30 s crops by default
    assert str(raised.value) == (
        "0 of the 3 train items are long enough for 30 s crops (at least 24 s; the longest is "
        "2.0 s): not one batch of 2; lower data.segment_seconds or data.batch_size"
    )
    without_val = TokenShardsDataModule(str(tmp_path), batch_size=2, segment_seconds=1.0)
    without_val.setup("fit")  # alone, a module hands out the loaders asked for
    without_val.trainer = SimpleNamespace(limit_val_batches=1.0, global_rank=0, world_size=1)
    with pytest.raises(UserInputError, match=r"no val data: set data\.val_fraction"):
        without_val.setup("fit")  # a fit that validates
    without_val.trainer.limit_val_batches = 0
    without_val.setup("fit")
    fits = TokenShardsDataModule(
        str(tmp_path), batch_size=2, segment_seconds=1.0, val_fraction=0.25
    )
    fits.setup("fit")
