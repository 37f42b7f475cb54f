"""The answers log: appended and readable line by line, resumable, one answer per pair and
rater; per-rater orders that are shuffled but stable."""

import json

import pytest

from lightning_sdm.errors import UserInputError
from lightning_sdm.listening.answers import (
    AlreadyAnswered,
    AnswerLog,
    check_rater,
    heard_first,
    rater_order,
    read_answers,
)
from lightning_sdm.listening.pairs import pair_systems
from tests.listening.systems import two_systems


@pytest.fixture
def pairing(tmp_path):
    return pair_systems(*two_systems(tmp_path / "systems"))


def test_answers_are_on_disk_when_recorded_and_a_new_log_resumes(tmp_path, pairing):
    path = tmp_path / "answers.jsonl"
    log = AnswerLog(path, pairing.systems)
    first, second = pairing.pairs[:2]
    log.record("r1", first, "A", "B")
    assert len(path.read_text().splitlines()) == 1  # written through, not buffered
    log.record("r1", second, "none", "A")
    log.record("r2", first, "B", "A")
    with pytest.raises(AlreadyAnswered):
        log.record("r1", first, "B", "A")
    again = AnswerLog(path, pairing.systems)  # a restarted server
    assert again.answered("r1") == {first.pair_id, second.pair_id}
    assert again.answered("r2") == {first.pair_id}
    with pytest.raises(AlreadyAnswered):
        again.record("r2", first, "A", "A")
    saved = json.loads(path.read_text().splitlines()[0])
    assert saved["choice"] == "A" and saved["heard_first"] == "B"
    assert saved["system_a"] == pairing.systems["A"] and saved["prompt"] == first.prompt


def test_a_line_cut_short_by_a_crash_is_set_aside_and_never_written_onto(tmp_path, pairing):
    path = tmp_path / "answers.jsonl"
    log = AnswerLog(path, pairing.systems)
    log.record("r1", pairing.pairs[0], "A", "A")
    with path.open("a") as handle:
        handle.write('{"rater": "r1", "pair_id": "ab')  # killed mid-write
    read = read_answers(path)
    assert len(read.answers) == 1 and read.bad_lines == [
        f"{path}:2: not JSON (Unterminated string starting at)"
    ]
    resumed = AnswerLog(path, pairing.systems)  # the restarted server
    assert "torn last line" in resumed.set_aside and str(path) + ".torn" in resumed.set_aside
    assert (tmp_path / "answers.jsonl.torn").read_text() == '{"rater": "r1", "pair_id": "ab\n'
    resumed.record("r2", pairing.pairs[1], "B", "A")  # appended as its own line
    read = read_answers(path)
    assert not read.bad_lines and [a.rater for a in read.answers] == ["r1", "r2"]
    assert AnswerLog(path, pairing.systems).answered("r2") == {pairing.pairs[1].pair_id}


def test_a_failed_write_keeps_nothing_of_the_answer_and_can_be_retried(
    tmp_path, pairing, monkeypatch
):
    """A full disk halfway through a line: the answer is refused, the file is as before,
    and the same answer saves once there is room again."""
    import os

    from lightning_sdm.listening.answers import AnswerNotSaved

    path = tmp_path / "answers.jsonl"
    log = AnswerLog(path, pairing.systems)
    log.record("r1", pairing.pairs[0], "A", "A")
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(descriptor, data):
        if len(data) > 10:
            return real_write(descriptor, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(AnswerNotSaved, match="No space left on device"):
        log.record("r1", pairing.pairs[1], "B", "A")
    assert path.read_bytes() == before
    assert log.answered("r1") == {pairing.pairs[0].pair_id}
    monkeypatch.setattr(os, "write", real_write)
    log.record("r1", pairing.pairs[1], "B", "A")
    assert [a.pair_id for a in read_answers(path).answers] == [p.pair_id for p in pairing.pairs[:2]]


def test_an_answers_file_that_cannot_be_written_is_refused_at_start(tmp_path, pairing):
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(UserInputError, match="is a folder"):
        AnswerLog(tmp_path / "folder.jsonl", pairing.systems)
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(UserInputError, match="cannot be written"):
        AnswerLog(blocked / "answers.jsonl", pairing.systems)  # a file where a folder must be


def test_answers_of_another_test_in_the_same_file_do_not_count_as_answered(tmp_path, pairing):
    path = tmp_path / "answers.jsonl"
    AnswerLog(path, {"A": "x", "B": "y"}).record("r1", pairing.pairs[0], "A", "A")
    log = AnswerLog(path, pairing.systems)
    assert log.answered("r1") == set() and log.other_tests == 1


def test_orders_differ_between_raters_and_stay_put_for_one(pairing):
    salt = "a\0b"
    orders = {tuple(p.pair_id for p in rater_order(f"r{i}", pairing.pairs, salt)) for i in range(8)}
    assert len(orders) > 1
    assert rater_order("r1", pairing.pairs, salt) == rater_order("r1", pairing.pairs, salt)
    sides = [heard_first(f"r{i}", pair, salt) for i in range(40) for pair in pairing.pairs]
    assert 0.35 < sides.count("A") / len(sides) < 0.65
    assert heard_first("r3", pairing.pairs[0], salt) == heard_first("r3", pairing.pairs[0], salt)


def test_rater_ids_are_checked():
    assert check_rater(" rater-07 ") == "rater-07"
    for bad in ["", "two words", "x" * 65, "a/b"]:
        with pytest.raises(UserInputError, match="a rater id is 1 to 64"):
            check_rater(bad)


def test_answers_to_audio_regenerated_since_are_asked_again_not_resumed(tmp_path, pairing):
    """A folder regenerated between sessions keeps its name: only the digests tell that an
    earlier answer judged other audio."""
    import numpy as np
    import soundfile

    path = tmp_path / "answers.jsonl"
    log = AnswerLog(path, pairing.systems, pairing.pairs)
    first, second = pairing.pairs[:2]
    log.record("r1", first, "A", "A")
    log.record("r1", second, "B", "A")
    soundfile.write(first.wavs["A"], 0.1 * np.sin(np.arange(8000) / 5.0), 16000)
    regenerated = pair_systems(pairing.systems["A"], pairing.systems["B"])
    resumed = AnswerLog(path, regenerated.systems, regenerated.pairs)
    assert resumed.answered("r1") == {second.pair_id}  # the first pair is due again
    assert resumed.earlier_audio == 1 and resumed.other_tests == 0


def test_answers_saved_before_digests_were_recorded_still_read_and_resume(tmp_path, pairing):
    path = tmp_path / "answers.jsonl"
    AnswerLog(path, pairing.systems, pairing.pairs).record("r1", pairing.pairs[0], "A", "A")
    line = json.loads(path.read_text())
    del line["audio_a"], line["audio_b"]
    path.write_text(json.dumps(line) + "\n")
    assert len(read_answers(path).answers) == 1 and not read_answers(path).bad_lines
    resumed = AnswerLog(path, pairing.systems, pairing.pairs)
    assert resumed.answered("r1") == {pairing.pairs[0].pair_id}
