"""Pairing two systems' wavs by prompt: what pairs, what is left out and why."""

import json

import pytest

from lightning_sdm.errors import UserInputError
from lightning_sdm.listening.pairs import pair_systems
from tests.listening.systems import PROMPTS, two_systems, write_system


def test_wavs_pair_by_the_prompt_their_sidecars_name(tmp_path):
    a, b = two_systems(tmp_path)  # B wrote the prompts in the other order
    result = pair_systems(a, b)
    assert sorted(p.prompt for p in result.pairs) == sorted(PROMPTS)
    for pair in result.pairs:
        for system in "AB":
            sidecar = json.loads(pair.wavs[system].with_suffix(".json").read_text())
            assert sidecar["prompt"] == pair.prompt
        assert pair.wavs["A"].parent == a and pair.wavs["B"].parent == b
    assert result.systems == {"A": str(a.resolve()), "B": str(b.resolve())}
    assert len({p.pair_id for p in result.pairs}) == len(PROMPTS) and not result.left_out
    assert [p.pair_id for p in pair_systems(a, b).pairs] == [p.pair_id for p in result.pairs]


def test_unpaired_unreadable_and_captionless_wavs_are_listed_and_left_out(tmp_path):
    a, b = two_systems(tmp_path)
    write_system(tmp_path / "extra", ["only in a"], 300.0)
    (tmp_path / "extra" / "00-only-in-a.wav").rename(a / "09-only-in-a.wav")
    (tmp_path / "extra" / "00-only-in-a.json").rename(a / "09-only-in-a.json")
    (b / "broken.wav").write_bytes(b"RIFF not really")
    write_system(tmp_path / "bare", ["x"], 300.0)
    (tmp_path / "bare" / "00-x.wav").rename(b / "bare.wav")  # no sidecar, no caption
    result = pair_systems(a, b)
    assert len(result.pairs) == len(PROMPTS)
    reasons = "\n".join(result.left_out)
    assert "09-only-in-a.wav: no wav of prompt 'only in a' in B to pair with" in reasons
    assert "broken.wav: unreadable audio" in reasons
    assert "bare.wav: no prompt (no generate sidecar .json or .txt caption beside it)" in reasons
    assert "left out (3)" in result.summary()


def test_a_prompts_file_keeps_its_prompts_and_names_the_missing(tmp_path):
    a, b = two_systems(tmp_path)
    chosen = tmp_path / "prompts.txt"
    chosen.write_text("calm piano\nfast drums\nnobody generated this\n")
    result = pair_systems(a, b, chosen)
    assert sorted(p.prompt for p in result.pairs) == ["calm piano", "fast drums"]
    assert any("'nobody generated this'" in line and "no wav in either" in line
               for line in result.left_out)  # fmt: skip
    assert sum("is not in" in line for line in result.left_out) == 2 * 3


def test_folders_without_pairs_are_refused(tmp_path):
    a = write_system(tmp_path / "a", ["x"], 200.0)
    b = write_system(tmp_path / "b", ["y"], 300.0)
    with pytest.raises(UserInputError, match="no pairs: no prompt has a wav in both"):
        pair_systems(a, b)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match=r"holds no \.wav files"):
        pair_systems(a, tmp_path / "empty")
    with pytest.raises(UserInputError, match="is not a directory"):
        pair_systems(a, tmp_path / "missing")


def test_captions_with_a_byte_order_mark_pair_with_sidecars_without_one(tmp_path):
    """Another tool's wavs with Notepad captions ('\\ufeffcalm piano') paired with nothing."""
    a, b = two_systems(tmp_path)
    for sidecar in b.glob("*.json"):
        prompt = json.loads(sidecar.read_text())["prompt"]
        sidecar.unlink()
        sidecar.with_suffix(".txt").write_text("\ufeff" + prompt, encoding="utf-8")
    result = pair_systems(a, b)
    assert len(result.pairs) == len(PROMPTS) and not result.left_out


def test_a_folder_compared_with_itself_is_refused(tmp_path):
    """It served a test whose every pair played one file twice."""
    a, _ = two_systems(tmp_path)
    (tmp_path / "link").symlink_to(a)
    for other in (a, tmp_path / "link"):
        with pytest.raises(UserInputError, match="systems A and B are the same folder"):
            pair_systems(a, other)
