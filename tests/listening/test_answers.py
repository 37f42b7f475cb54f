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


def test_a_line_cut_short_by_a_crash_is_reported_and_the_rest_kept(tmp_path, pairing):
    path = tmp_path / "answers.jsonl"
    log = AnswerLog(path, pairing.systems)
    log.record("r1", pairing.pairs[0], "A", "A")
    with path.open("a") as handle:
        handle.write('{"rater": "r1", "pair_id": "ab')  # killed mid-write
    read = read_answers(path)
    assert len(read.answers) == 1 and read.bad_lines == [
        f"{path}:2: not JSON (Unterminated string starting at)"
    ]
    resumed = AnswerLog(path, pairing.systems)
    assert resumed.answered("r1") == {pairing.pairs[0].pair_id} and resumed.bad_lines


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
