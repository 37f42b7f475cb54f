"""The listening report: the Wilson interval and binomial p-value against values computed
by hand, the breakdowns, Markdown and JSON, and bad lines reported."""

import json
import math

import pytest

from lightning_sdm.cli import main
from lightning_sdm.errors import UserInputError
from lightning_sdm.listening.answers import AnswerLog
from lightning_sdm.listening.pairs import pair_systems
from lightning_sdm.listening.report import binomial_test_p, build_report, wilson_interval
from tests.listening.systems import two_systems


def test_wilson_interval_matches_the_hand_computed_values():
    # 7 of 10, z = 1.96: centre (0.7 + 0.19208) / 1.38415 = 0.64450,
    # half 1.96 sqrt(0.021 + 0.0096040) / 1.38415 = 0.24773
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.39677, abs=1e-4) and high == pytest.approx(0.89223, abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.27753, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_the_binomial_p_value_matches_the_hand_computed_values():
    # 7 of 10: 2 * (C(10,7) + C(10,8) + C(10,9) + C(10,10)) / 2^10 = 2 * 176 / 1024
    assert binomial_test_p(7, 10) == pytest.approx(352 / 1024)
    assert binomial_test_p(3, 10) == pytest.approx(352 / 1024)
    assert binomial_test_p(9, 10) == pytest.approx(2 * 11 / 1024)
    assert binomial_test_p(5, 10) == 1.0 and binomial_test_p(0, 0) == 1.0
    # The paper's 51.3 % (say 513 of 1000) is far from significant.
    assert binomial_test_p(513, 1000) > 0.4
    assert binomial_test_p(60, 100) == pytest.approx(
        2 * sum(math.comb(100, k) for k in range(60, 101)) / 2**100
    )


def test_the_report_breaks_down_by_rater_and_prompt(tmp_path, capsys):
    pairing = pair_systems(*two_systems(tmp_path / "systems"))
    path = tmp_path / "answers.jsonl"
    log = AnswerLog(path, pairing.systems)
    choices = {"r1": ["A", "A", "A", "B", "none"], "r2": ["A", "B", "A", "A", "A"]}
    for rater, picks in choices.items():
        for pair, pick in zip(pairing.pairs, picks, strict=True):
            log.record(rater, pair, pick, "A")
    with path.open("a") as handle:
        handle.write("not json\n")
    assert main(["listening-report", str(path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "answers-report.json").read_text())
    overall = report["comparisons"][0]["overall"]
    assert (overall["a_preferred"], overall["b_preferred"], overall["no_preference"]) == (7, 2, 1)
    assert overall["a_share"] == pytest.approx(7 / 9)
    assert overall["a_share_95ci"] == pytest.approx(list(wilson_interval(7, 9)))
    assert overall["p_value"] == pytest.approx(binomial_test_p(7, 9))
    assert report["comparisons"][0]["per_rater"]["r1"]["a_preferred"] == 3
    assert report["comparisons"][0]["per_prompt"][pairing.pairs[1].prompt]["b_preferred"] == 1
    assert report["bad_lines"] == [f"{path}:11: not JSON (Expecting value)"]
    markdown = (tmp_path / "answers-report.md").read_text()
    assert "A was preferred in 77.8 % of 9 answers with a preference" in markdown
    assert "### Per rater" in markdown and "## Lines skipped" in markdown
    assert markdown in printed


def test_answers_to_audio_regenerated_since_are_reported_apart(tmp_path):
    """A folder regenerated between two sessions keeps its name: its earlier answers judged
    another system and must not be counted with the new ones."""
    import numpy as np
    import soundfile

    pairing = pair_systems(*two_systems(tmp_path / "systems"))
    path = tmp_path / "answers.jsonl"
    AnswerLog(path, pairing.systems, pairing.pairs).record("r1", pairing.pairs[0], "B", "A")
    for pair in pairing.pairs:  # system B regenerated
        soundfile.write(pair.wavs["B"], 0.2 * np.sin(np.arange(8000) / 4.0), 16000)
    again = pair_systems(pairing.systems["A"], pairing.systems["B"])
    log = AnswerLog(path, again.systems, again.pairs)
    for pair in again.pairs:
        log.record("r1", pair, "A", "A")
    (comparison,) = build_report(path)["comparisons"]
    assert comparison["overall"]["a_preferred"] == len(again.pairs)
    assert comparison["overall"]["b_preferred"] == 0
    assert comparison["answers_to_earlier_audio"] == 1
    main(["listening-report", str(path)])
    markdown = (tmp_path / "answers-report.md").read_text()
    assert "Left out: 1 answers given to earlier audio of these folders" in markdown


def test_an_answers_file_without_answers_is_refused(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text("{}\n")
    with pytest.raises(UserInputError, match="holds no answers"):
        build_report(path)
    with pytest.raises(UserInputError, match="not found"):
        build_report(tmp_path / "none.jsonl")


def test_a_wrong_file_given_as_the_answers_is_a_short_message(tmp_path, capsys):
    """A 200,000-line JSONL of something else printed 200,001 lines; the report of a log
    with many torn lines listed each in its markdown."""
    wrong = tmp_path / "prompts.jsonl"
    wrong.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(2000)))
    assert main(["listening-report", str(wrong)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 12 and err[0].endswith("holds no answers")
    assert err[-1].strip() == "... and 1,990 more"

    pairing = pair_systems(*two_systems(tmp_path / "systems"))
    path = tmp_path / "answers.jsonl"
    AnswerLog(path, pairing.systems).record("r1", pairing.pairs[0], "A", "A")
    with path.open("a") as handle:
        handle.write("not json\n" * 300)
    assert main(["listening-report", str(path)]) == 0
    report = json.loads((tmp_path / "answers-report.json").read_text())
    assert len(report["bad_lines"]) == 300  # every one kept in the JSON
    markdown = (tmp_path / "answers-report.md").read_text()
    assert "## Lines skipped (every one is in the JSON report)" in markdown
    assert markdown.count(": not JSON") == 50 and "... and 250 more" in markdown
