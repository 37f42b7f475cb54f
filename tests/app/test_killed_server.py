"""Answers survive a server killed without warning, and raters continue after a restart."""

import json
import signal

import httpx

from tests.app.live import served
from tests.listening.systems import two_systems


def test_answers_survive_kill_9_and_the_rater_continues(tmp_path):
    a, b = two_systems(tmp_path / "systems")
    answers = tmp_path / "answers.jsonl"
    argv = ("--compare", str(a), str(b), "--answers", str(answers))
    answered = []
    with served(*argv) as (url, process):
        for _ in range(2):
            pair = httpx.get(f"{url}/api/compare/next", params={"rater": "r1"}).json()["pair"]
            for slot in ("first", "second"):
                assert httpx.get(url + pair[slot]).status_code == 200
            reply = httpx.post(
                f"{url}/api/compare/answer",
                json={"rater": "r1", "pair_id": pair["pair_id"], "choice": "first"},
            )
            assert reply.status_code == 200
            answered.append(pair["pair_id"])
        process.send_signal(signal.SIGKILL)  # no shutdown, no flush at exit
        process.wait(timeout=30)
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [line["pair_id"] for line in lines] == answered
    with served(*argv) as (url, process):
        body = httpx.get(f"{url}/api/compare/next", params={"rater": "r1"}).json()
        assert body["answered"] == 2 and body["pair"]["pair_id"] not in answered
        again = httpx.post(
            f"{url}/api/compare/answer",
            json={"rater": "r1", "pair_id": answered[0], "choice": "second"},
        )
        assert again.status_code == 409
