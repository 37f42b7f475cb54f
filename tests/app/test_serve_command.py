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
        (["listening-report", "{tmp}"], "answers file {tmp} is a folder: give the .jsonl"),
        (["serve", "--model", "{tmp}/none"], "--model {tmp}/none is neither a model directory"),
        (["serve", "--model", "{a}"], "--model {a} is not a saved lightning_sdm model"),
        (["serve", "--port", "99999"], "--port must be within 1-65535, got 99999"),
        (["serve", "--host", "nowhere.invalid"], "--host nowhere.invalid does not resolve"),
    ],
)
def test_bad_arguments_fail_in_one_line(tmp_path, capsys, argv, message):
    a = write_system(tmp_path / "a", ["x"], 200.0)
    words = [w.format(a=a, tmp=tmp_path) for w in argv]
    assert main(words) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message.format(a=a, tmp=tmp_path) in err


def test_a_port_in_use_is_one_line_before_anything_claims_to_serve(tmp_path, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["serve", "--port", str(port), "--output_dir", str(tmp_path / "served")]
        assert main(argv) == 2
    out, err = capsys.readouterr()
    assert f"cannot serve on 127.0.0.1:{port}: " in err and "pick another --port" in err
    assert "serving on" not in out


def test_serving_off_loopback_warns_and_requires_the_printed_token(tmp_path):
    import re

    import httpx

    from tests.app.live import served

    argv = ("--host", "0.0.0.0", "--output_dir", str(tmp_path / "served"))
    with served(*argv) as (url, process):
        assert httpx.get(f"{url}/api/models").status_code == 401
        process.kill()
        output = process.communicate()[0]
    assert "warning: serving on 0.0.0.0, reachable from the network" in output
    token = re.search(r"\?token=([\w-]+)", output).group(1)
    assert len(token) >= 20


def test_an_unwritable_answers_file_is_refused_at_start(tmp_path, capsys):
    a = write_system(tmp_path / "a", ["x"], 200.0)
    b = write_system(tmp_path / "b", ["x"], 300.0)
    (tmp_path / "answers").mkdir()
    argv = ["serve", "--compare", str(a), str(b), "--answers", str(tmp_path / "answers")]
    assert main(argv) == 2
    assert "answers file" in capsys.readouterr().err


def test_a_torn_answers_file_is_summarised_at_start_not_listed_line_by_line(tmp_path):
    from tests.app.live import served

    a = write_system(tmp_path / "a", ["x"], 200.0)
    b = write_system(tmp_path / "b", ["x"], 300.0)
    answers = tmp_path / "answers.jsonl"
    answers.write_text("not json\n" * 300)
    argv = ("--compare", str(a), str(b), "--answers", str(answers))
    with served(*argv, "--output_dir", str(tmp_path / "served")) as (_, process):
        process.kill()
        output = process.communicate()[0]
    assert "300 malformed lines skipped:" in output
    assert output.count(": not JSON") == 10 and "... and 290 more" in output
