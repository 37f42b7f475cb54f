"""`lightning-sdm serve` and `listening-report`: what they refuse before serving anything."""

import pytest

from lightning_sdm.cli import main
from tests.listening.systems import write_system


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--compare", "{a}"], "--compare takes two folders, DIR_A DIR_B; got 1"),
        (["serve", "--prompts", "p.txt"], "--prompts selects the prompts of an A/B test"),
        (["serve", "--compare", "{a}", "{tmp}/none"], "system B: "),
        (["listening-report", "{tmp}/none.jsonl"], "answers file"),
    ],
)
def test_bad_arguments_fail_in_one_line(tmp_path, capsys, argv, message):
    a = write_system(tmp_path / "a", ["x"], 200.0)
    words = [w.format(a=a, tmp=tmp_path) for w in argv]
    assert main(words) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err
