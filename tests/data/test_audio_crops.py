"""Random crops of raw audio for the codec task."""

import numpy as np
import pytest
import soundfile as sf

from lightning_sdm.data.audio_crops import AudioCropsDataModule
from lightning_sdm.errors import UserInputError


def write_tones(folder, count=6, seconds=2.0, rate=22050):
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    for index in range(count):
        sf.write(folder / f"tone{index}.wav", 0.3 * np.sin(2 * np.pi * 220 * (index + 1) * t), rate)
    return folder


def test_crops_are_resampled_and_fresh_every_epoch(tmp_path):
    data = AudioCropsDataModule(
        str(write_tones(tmp_path / "audio")), sample_rate=16000, crop_seconds=0.5,
        batch_size=3, val_fraction=0.2, num_workers=0,
    )  # fmt: skip
    loader = data.make_loader("train", 0, 1)
    first = next(iter(loader))
    assert first["audio"].shape == (3, 8000)
    assert first["audio"].abs().max() > 0.1
    second = next(iter(loader))  # the next epoch draws new crops
    assert not np.allclose(first["audio"].numpy(), second["audio"].numpy())
    train_keys = {f.key for f in data.splits()["train"]}
    val_keys = {f.key for f in data.splits()["val"]}
    assert val_keys and not train_keys & val_keys


def test_ranks_get_different_crops_and_validation_is_fixed(tmp_path):
    data = AudioCropsDataModule(
        str(write_tones(tmp_path / "audio")), sample_rate=16000, crop_seconds=0.5,
        val_seconds=1.0, batch_size=2, val_fraction=0.4, num_workers=0,
    )  # fmt: skip
    rank0 = next(iter(data.make_loader("train", 0, 2)))["audio"]
    rank1 = next(iter(data.make_loader("train", 1, 2)))["audio"]
    assert not np.allclose(rank0.numpy(), rank1.numpy())
    val_a = next(iter(data.make_loader("val", 0, 1)))
    val_b = next(iter(data.make_loader("val", 0, 1)))
    assert np.array_equal(val_a["audio"].numpy(), val_b["audio"].numpy())
    assert val_a["audio"].shape[-1] == 16000 and val_a["lengths"].max() == 16000


def test_missing_or_empty_input_is_one_clear_error(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        AudioCropsDataModule(str(tmp_path / "nope")).splits()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no usable audio"):
        AudioCropsDataModule(str(tmp_path / "empty")).splits()


def test_the_summary_says_when_items_are_shorter_than_the_crops(tmp_path):
    """0.1 s clips under 1 s crops trained a codec on crops 90 % silence, the summary saying
    '4 items (0.0 min)'."""
    write_tones(tmp_path / "audio", count=4, seconds=2.0)
    write_tones(tmp_path / "audio" / "short", count=2, seconds=0.1)
    data = AudioCropsDataModule(
        str(tmp_path / "audio"), sample_rate=16000, crop_seconds=1.0, val_seconds=3.0,
        val_input=str(tmp_path / "audio" / "short"), num_workers=0,
    )  # fmt: skip
    lines = data.summary().splitlines()
    assert (
        lines[1]
        == "  train: 6 items (8 s); 2 of them shorter than the 1 s crops (padded with silence)"
    )
    assert (
        lines[2] == "  val: 2 items (0.2 s); all shorter than the 3 s crops (padded with silence)"
    )
