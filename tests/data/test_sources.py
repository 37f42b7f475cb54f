import json
import os
import re

import numpy as np
import pytest
import soundfile as sf

from lightning_sdm.data.sources import caption_from_info, discover, sample_key
from lightning_sdm.errors import UserInputError


def _wav(path, seconds=1.0):
    sf.write(path, np.zeros(int(32000 * seconds)), 32000)


def test_folder_reads_txt_and_json_sidecars(tmp_path):
    (tmp_path / "a").mkdir()
    _wav(tmp_path / "a" / "one.wav")
    (tmp_path / "a" / "one.txt").write_text("  piano  \n")
    _wav(tmp_path / "two.wav")
    (tmp_path / "two.json").write_text(json.dumps({"genre": "jazz", "moods": ["calm", "warm"]}))
    items = {i.key: i for i in discover(tmp_path)}
    assert items["a__one"].caption == "piano"
    assert items["two"].caption == "genre: jazz, moods: calm, warm"
    assert items["two"].metadata["genre"] == "jazz"
    assert all(i.problem is None for i in items.values())


def test_bad_captions_are_reported_not_raised(tmp_path):
    for name in ("missing", "latin1", "empty", "badjson"):
        _wav(tmp_path / f"{name}.wav")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("   ")
    (tmp_path / "badjson.json").write_text("{not json")
    problems = {i.key: i.problem for i in discover(tmp_path)}
    assert problems["missing"].startswith("missing caption")
    assert "not UTF-8" in problems["latin1"]
    assert problems["empty"] == "empty caption"
    assert "not valid JSON" in problems["badjson"]
    relaxed = {i.key: i for i in discover(tmp_path, allow_missing_captions=True)}
    assert relaxed["missing"].problem is None and relaxed["missing"].caption == ""
    assert "not UTF-8" in relaxed["latin1"].problem  # bad files are never silently accepted


def test_jsonl_manifest_in_audiocraft_format(tmp_path):
    _wav(tmp_path / "song.wav")
    info = {"description": "a lively reel", "genre": "folk", "bpm": 120, "key": "D"}
    (tmp_path / "song.json").write_text(json.dumps(info))
    _wav(tmp_path / "bare.wav")
    lines = [
        json.dumps({"path": str(tmp_path / "song.wav"), "duration": 1.0, "sample_rate": 32000}),
        json.dumps({"path": "bare.wav", "duration": 1.0, "sample_rate": 32000}),
        "{broken",
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(lines))
    items = discover(tmp_path / "data.jsonl")
    assert items[0].caption == "a lively reel"
    assert items[0].metadata["bpm"] == 120 and items[0].metadata["duration"] == 1.0
    assert items[1].problem.startswith("missing caption")
    assert "bad manifest line 3" in items[2].problem


def test_csv_manifest_and_duplicate_entries(tmp_path):
    _wav(tmp_path / "x.wav")
    (tmp_path / "list.csv").write_text("path,caption,artist\nx.wav,first,me\nx.wav,again,me\n")
    first, second = discover(tmp_path / "list.csv")
    assert first.caption == "first" and first.metadata == {"artist": "me"}
    assert second.problem == "duplicate entry of x.wav (key 'x')"


def test_keys_are_distinct_for_distinct_files(tmp_path):
    """Sanitising must never make two files one: non-Latin names, spaces against dots,
    the same stem with two extensions, a manifest naming files in two other folders."""
    names = ["音楽.wav", "映画.wav", "rock song.wav", "rock.song.wav", "x.wav", "x.flac",
             "a/b.wav", "a__b.wav"]  # fmt: skip
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        _wav(tmp_path / name)
        (tmp_path / name).with_suffix(".txt").write_text("caption")
    items = discover(tmp_path)
    assert [i.problem for i in items] == [None] * len(names)
    keys = [i.key for i in items]
    assert len(set(keys)) == len(names)
    assert {"音楽", "映画"} <= set(keys)  # letters of any script are kept as they are
    assert all(re.fullmatch(r"[\w\-]+", key) and "." not in key for key in keys)
    assert discover(tmp_path) and [i.key for i in discover(tmp_path)] == keys  # stable
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        _wav(tmp_path / folder / "same.wav")
    manifest = tmp_path / "m" / "list.csv"
    manifest.parent.mkdir()
    manifest.write_text(f"path,caption\n{tmp_path}/one/same.wav,a\n{tmp_path}/two/same.wav,b\n")
    first, second = discover(manifest)
    assert first.problem is None and second.problem is None and first.key != second.key


def test_an_unreadable_folder_is_reported(tmp_path, monkeypatch):
    _wav(tmp_path / "ok.wav")
    (tmp_path / "ok.txt").write_text("fine")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)  # root reads any folder: refuse it here
    items = discover(tmp_path)
    assert [(i.path, i.problem) for i in items if i.problem] == [
        (locked, "unreadable folder: Permission denied")
    ]
    assert [i.key for i in items if not i.problem] == ["ok"]


def test_csv_without_required_columns_fails_clearly(tmp_path):
    (tmp_path / "list.csv").write_text("file,text\n")
    with pytest.raises(ValueError, match="path and caption"):
        discover(tmp_path / "list.csv")


def test_keys_are_webdataset_safe():
    from pathlib import Path

    assert re.fullmatch(r"dir__a_b_c-[0-9a-f]{8}", sample_key(Path("dir/a.b c.wav")))
    assert sample_key(Path("dir/abc.wav")) == "dir__abc"


def test_caption_prefers_the_description():
    assert caption_from_info({"description": "x", "genre": "y"}) == "x"
    assert caption_from_info({"keywords": ["a", "b"], "bpm": 90}) == "keywords: a, b, bpm: 90"


def test_unknown_inputs_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        discover(tmp_path / "nothing")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ValueError, match=r"folder, a \.jsonl or a \.csv"):
        discover(tmp_path / "x.txt")


MARK = "\ufeff"  # the byte-order mark Windows editors begin UTF-8 files with


def test_captions_and_manifests_saved_with_a_byte_order_mark_read_as_written(tmp_path):
    """Notepad's caption kept the mark in the caption; a JSON sidecar and a JSONL line with
    it were rejected; Excel's "CSV UTF-8" failed as 'missing column path'."""
    _wav(tmp_path / "notepad.wav")
    (tmp_path / "notepad.txt").write_text(MARK + "a quiet harp\n", encoding="utf-8")
    _wav(tmp_path / "info.wav")
    (tmp_path / "info.json").write_text(MARK + '{"description": "a loud drum"}', encoding="utf-8")
    items = {i.key: i for i in discover(tmp_path)}
    assert items["notepad"].caption == "a quiet harp" and items["info"].caption == "a loud drum"
    manifest = tmp_path / "data.jsonl"
    manifest.write_text(MARK + json.dumps({"path": "info.wav"}) + "\n", encoding="utf-8")
    assert [i.caption for i in discover(manifest)] == ["a loud drum"]
    table = tmp_path / "excel.csv"
    table.write_text(MARK + 'path,caption\r\nnotepad.wav,"a harp, quietly"\r\n', encoding="utf-8")
    assert [i.caption for i in discover(table)] == ["a harp, quietly"]


def test_a_manifest_in_another_encoding_is_refused_naming_it(tmp_path):
    table = tmp_path / "latin.csv"
    table.write_bytes("path,caption\na.wav,caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserInputError, match=r"latin.csv is not UTF-8 text \(byte 0xe9 at offset"):
        discover(table)


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_a_file_reached_twice_through_links_is_taken_once(tmp_path, link):
    """A track linked into a second folder was tokenized twice, weighing it double."""
    (tmp_path / "all").mkdir()
    (tmp_path / "rock").mkdir()
    sf.write(tmp_path / "all" / "song.wav", np.zeros(16000), 16000)
    (tmp_path / "all" / "song.txt").write_text("a song")
    linked = tmp_path / "rock" / "song.wav"
    if link == "symbolic":
        linked.symlink_to(tmp_path / "all" / "song.wav")
    else:
        os.link(tmp_path / "all" / "song.wav", linked)
    (tmp_path / "rock" / "song.txt").write_text("a rock song")
    items = discover(tmp_path)
    assert [item.problem for item in items] == [
        None,
        "duplicate: the same file as all/song.wav (a link)",
    ]
    sf.write(tmp_path / "rock" / "other.wav", np.zeros(16000), 16000)  # a copy is no link
    (tmp_path / "rock" / "other.txt").write_text("a copy")
    assert sum(item.problem is None for item in discover(tmp_path)) == 2
