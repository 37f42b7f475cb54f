"""The pre-tokenization DataModule: what is left to do, split over ranks, decoded audio."""

import numpy as np
import pytest
import soundfile as sf

from lightning_sdm.data.audio_datamodule import AudioTokenizeDataModule
from tests.data.audio_fixtures import CASES, make_folder
from tests.data.test_tokenize import run


def test_items_are_served_decoded_at_the_codec_rate(tmp_path):
    make_folder(tmp_path / "in")
    (tmp_path / "in" / "junk.wav").write_bytes(b"junk")
    (tmp_path / "in" / "junk.txt").write_text("x")
    data = AudioTokenizeDataModule(
        str(tmp_path / "in"), str(tmp_path / "out"), 24000, 0.5, False, 0
    )
    data.setup("predict")
    assert data.rejections == []  # a corrupt file is found on decoding, in the worker
    records = [record for batch in data.loader_for(0, 1) for record in batch]
    good = {r["item"].key: r["audio"] for r in records if r["problem"] is None}
    assert set(good) == {name for name, *_ in CASES}
    for name, _, _, seconds, *_ in CASES:
        assert good[name].samples.shape[0] == pytest.approx(seconds * 24000, abs=2)
    assert [r["problem"][:16] for r in records if r["problem"]] == ["unreadable audio"]


def test_ranks_share_the_work_without_overlap(tmp_path):
    make_folder(tmp_path / "in")
    for index in range(5):
        sf.write(tmp_path / "in" / f"extra{index}.wav", np.zeros(32000), 32000)
        (tmp_path / "in" / f"extra{index}.txt").write_text("x")
    data = AudioTokenizeDataModule(str(tmp_path / "in"), str(tmp_path / "out"), num_workers=0)
    data.setup("predict")
    shares = [[r["item"].key for b in data.loader_for(rank, 3) for r in b] for rank in range(3)]
    everything = [key for share in shares for key in share]
    assert sorted(everything) == sorted(i.key for i in data.todo) and len(everything) == 9
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_what_the_output_holds_is_skipped(codec_dir, tmp_path):
    make_folder(tmp_path / "in")
    run(tmp_path / "in", tmp_path / "out", codec_dir)
    sf.write(tmp_path / "in" / "late.wav", np.zeros(64000), 32000)
    (tmp_path / "in" / "late.txt").write_text("arrived later")
    data = AudioTokenizeDataModule(str(tmp_path / "in"), str(tmp_path / "out"))
    data.setup("predict")
    assert [i.key for i in data.todo] == ["late"] and data.already_present == len(CASES)


def test_an_input_without_audio_is_an_error(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(ValueError, match="no audio found"):
        AudioTokenizeDataModule(str(tmp_path / "in"), str(tmp_path / "out")).setup("predict")
