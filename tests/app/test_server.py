"""The web app's API through FastAPI's test client: generating, the blind pairing hidden
from the page, answers mapped to systems, resume, double answers refused."""

import json
import time

import pytest
from fastapi.testclient import TestClient as _TestClient

from lightning_sdm.app.server import CompareTest, create_app
from lightning_sdm.listening.answers import AnswerLog
from lightning_sdm.listening.pairs import pair_systems
from tests.conftest import save_tiny_dit_with_codec, save_tiny_model_with_codec
from tests.listening.systems import two_systems


def TestClient(app, **kwargs):  # FastAPI's client, as a browser on this machine
    return _TestClient(app, base_url="http://127.0.0.1:8000", **kwargs)


def listen(client, body):
    """Fetch both samples of the pair in a /next body, as the page's players do."""
    return [client.get(body["pair"][slot]).content for slot in ("first", "second")]


@pytest.fixture
def compare_client(tmp_path):
    pairing = pair_systems(*two_systems(tmp_path / "systems"))
    answers = AnswerLog(tmp_path / "answers.jsonl", pairing.systems, pairing.pairs)
    test = CompareTest(pairing, answers)
    with TestClient(create_app(compare=test, output_dir=tmp_path / "served")) as client:
        yield client, test


def test_pages_and_scripts_are_served_from_the_package(compare_client):
    client, _ = compare_client
    page = client.get("/compare")
    assert page.status_code == 200 and "/static/compare.js" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from a CDN
    assert client.get("/static/compare.js").status_code == 200
    assert client.get("/", follow_redirects=False).headers["location"] == "/compare"


def test_the_page_never_sees_which_system_it_plays(compare_client):
    client, test = compare_client
    body = client.get("/api/compare/next", params={"rater": "r1"}).json()
    text = json.dumps(body)
    for system in test.pairing.systems.values():
        assert system not in text
    assert "delay" not in text and ".wav" not in text
    audio = client.get(body["pair"]["first"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert "filename" not in audio.headers.get("content-disposition", "")


def test_answers_map_to_systems_per_rater_and_pair(compare_client):
    client, test = compare_client
    pairs = {p.pair_id: p for p in test.pairing.pairs}
    seen_first = set()
    for rater in (f"r{i}" for i in range(24)):  # all 24 on one side: chance 2^-23
        body = client.get("/api/compare/next", params={"rater": rater}).json()
        pair = pairs[body["pair"]["pair_id"]]
        first, _ = listen(client, body)
        played_a = first == pair.wavs["A"].read_bytes()
        assert played_a or first == pair.wavs["B"].read_bytes()
        seen_first.add(played_a)
        answer = {"rater": rater, "pair_id": pair.pair_id, "choice": "first"}
        assert client.post("/api/compare/answer", json=answer).status_code == 200
        saved = json.loads(test.answers.path.read_text().splitlines()[-1])
        assert saved["choice"] == ("A" if played_a else "B") == saved["heard_first"]
    assert seen_first == {True, False}  # the order changes between raters


def test_a_rater_resumes_and_cannot_answer_twice(compare_client):
    client, test = compare_client
    answered = []
    for _ in range(3):
        body = client.get("/api/compare/next", params={"rater": "r1"}).json()
        answered.append(body["pair"]["pair_id"])
        listen(client, body)
        reply = client.post(
            "/api/compare/answer", json={"rater": "r1", "pair_id": answered[-1], "choice": "second"}
        )
        assert reply.json() == {"saved": True, "answered": len(answered)}  # fmt: skip
    twice = {"rater": "r1", "pair_id": answered[0], "choice": "first"}
    again = client.post("/api/compare/answer", json=twice)
    assert again.status_code == 409 and "already answered" in again.json()["detail"]
    # a reload asks the server again: the fourth pair, not one answered
    body = client.get("/api/compare/next", params={"rater": "r1"}).json()
    assert body["answered"] == 3 and body["pair"]["pair_id"] not in answered
    total = len(test.pairing.pairs)
    for _ in range(total - 3):
        body = client.get("/api/compare/next", params={"rater": "r1"}).json()
        listen(client, body)
        client.post(
            "/api/compare/answer",
            json={"rater": "r1", "pair_id": body["pair"]["pair_id"], "choice": "first"},
        )
    done = client.get("/api/compare/next", params={"rater": "r1"}).json()
    assert done["done"] and done["answered"] == total
    assert len(test.answers.path.read_text().splitlines()) == total


def test_bad_requests_are_refused_with_reasons(compare_client):
    client, _ = compare_client
    assert client.get("/api/compare/next", params={"rater": "two words"}).status_code == 422
    unknown = client.post("/api/compare/answer",
                          json={"rater": "r1", "pair_id": "nope", "choice": "first"})  # fmt: skip
    assert unknown.status_code == 404
    body = client.get("/api/compare/next", params={"rater": "r1"}).json()
    listen(client, body)
    forced = client.post(
        "/api/compare/answer",
        json={"rater": "r1", "pair_id": body["pair"]["pair_id"], "choice": "none"},
    )
    assert forced.status_code == 422 and "forced choice" in forced.json()["detail"]


@pytest.mark.parametrize("rater", ["me+test@example.org", "雨の日", "a.b_c-d"])
def test_any_valid_rater_id_can_listen_and_answer(compare_client, rater):
    """The audio addresses carry the id encoded: a '+' came back as a space (refused), so
    such a rater could never hear a pair nor answer."""
    client, test = compare_client
    body = client.get("/api/compare/next", params={"rater": rater}).json()
    first, second = (client.get(body["pair"][slot]) for slot in ("first", "second"))
    assert first.status_code == second.status_code == 200
    answer = {"rater": rater, "pair_id": body["pair"]["pair_id"], "choice": "first"}
    assert client.post("/api/compare/answer", json=answer).status_code == 200
    assert json.loads(test.answers.path.read_text().splitlines()[-1])["rater"] == rater


@pytest.mark.parametrize("change", ["regenerated", "removed"])
def test_a_wav_changed_or_removed_mid_test_withdraws_its_pair(compare_client, change):
    """Regenerating a system's folder while raters listen gave them the new audio under
    answers that named the old; a removed wav was a 500 with a traceback."""
    import numpy as np
    import soundfile

    client, test = compare_client
    body = client.get("/api/compare/next", params={"rater": "r1"}).json()
    pair = next(p for p in test.pairing.pairs if p.pair_id == body["pair"]["pair_id"])
    listen(client, body)
    wav = pair.wavs["B"]
    if change == "regenerated":
        soundfile.write(wav, 0.3 * np.sin(np.arange(8000) / 3.0), 16000)
    else:
        wav.unlink()
    replies = [client.get(body["pair"][slot]) for slot in ("first", "second")]
    refused = next(reply for reply in replies if reply.status_code != 200)
    assert refused.status_code == 410 and str(wav) in refused.json()["detail"]
    assert "restart serve" in refused.json()["detail"]
    answer = {"rater": "r1", "pair_id": pair.pair_id, "choice": "first"}
    reply = client.post("/api/compare/answer", json=answer)
    assert reply.status_code == 410 and not test.answers.path.read_text()  # nothing saved
    after = client.get("/api/compare/next", params={"rater": "r1"}).json()
    assert after["pair"]["pair_id"] != pair.pair_id  # the test goes on without it
    assert after["total"] == len(test.pairing.pairs) - 1


def test_pairs_whose_wavs_changed_are_skipped_before_they_are_offered(compare_client):
    """Checked when a pair is handed out, not only when its audio is fetched: a page whose
    players load lazily never fetched it, and waited for a pair that could not play."""
    client, test = compare_client
    removed = [pair.wavs["B"] for pair in test.pairing.pairs[1:]]
    for wav in removed:
        wav.unlink()
    body = client.get("/api/compare/next", params={"rater": "r1"}).json()
    assert body["pair"]["pair_id"] == test.pairing.pairs[0].pair_id and body["total"] == 1
    skipped = client.get("/api/compare/next", params={"rater": "r2"}).json()["skipped"]
    assert not skipped  # said once, to the rater who met them
    assert len(body["skipped"]) == len(removed)
    for wav in removed:  # each named in one reason
        assert sum(str(wav) in reason for reason in body["skipped"]) == 1
    assert all("restart serve" in reason for reason in body["skipped"])


def test_answers_name_the_audio_they_judged(compare_client):
    from lightning_sdm.listening.pairs import audio_digest

    client, test = compare_client
    body = client.get("/api/compare/next", params={"rater": "r1"}).json()
    first, second = listen(client, body)
    answer = {"rater": "r1", "pair_id": body["pair"]["pair_id"], "choice": "first"}
    assert client.post("/api/compare/answer", json=answer).status_code == 200
    saved = json.loads(test.answers.path.read_text())
    assert {saved["audio_a"], saved["audio_b"]} == {audio_digest(first), audio_digest(second)}


def test_a_huge_rater_id_is_refused_without_echoing_it(compare_client):
    client, _ = compare_client
    reply = client.get("/api/compare/next", params={"rater": "x" * 5000})
    assert reply.status_code == 422 and "got 5000 characters" in reply.json()["detail"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model_with_codec(tmp_path_factory.mktemp("model"), "delay", 1)


def test_the_generate_api_runs_a_job_with_progress_and_files(model_dir, tmp_path):
    app = create_app(models=[str(model_dir)], output_dir=tmp_path / "served")
    with TestClient(app) as client:
        models = client.get("/api/models").json()
        assert models == {"models": [{"path": str(model_dir), "family": "lm"}], "compare": False}
        job = client.post("/api/generate", json={
            "model": str(model_dir), "prompts": ["calm piano", "", "雨の日 drums"],
            "seconds": 0.2, "seed": 3, "sampling": {"top_k": 20},
        }).json()  # fmt: skip
        for _ in range(300):
            job = client.get(f"/api/jobs/{job['job_id']}").json()
            if job["status"] in ("done", "failed"):
                break
            time.sleep(0.1)
        assert job["status"] == "done", job["error"]
        assert job["done_steps"] == job["total_steps"] > 0
        first, second = job["results"]
        assert first["prompt"] == "calm piano" and first["settings"]["seed"] == 3
        assert first["settings"]["sampling"]["top_k"] == 20
        wav = client.get(first["wav"])
        assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
        assert client.get(first["spectrogram"]).content[:4] == b"\x89PNG"
        assert second["wav"].endswith("/01-雨の日-drums.wav")  # served by its own name
        assert wav.content != client.get(second["wav"]).content
        escape = client.get(f"/outputs/{job['job_id']}/..%2F..%2Fanswers.jsonl")
        assert escape.status_code == 404


def test_generate_requests_that_cannot_run_say_why(model_dir, tmp_path):
    (tmp_path / "models").mkdir()
    app = create_app(output_dir=tmp_path / "served", models_dir=[str(tmp_path / "models")])
    with TestClient(app) as client:
        absent = str(tmp_path / "models" / "none")
        missing = client.post("/api/generate", json={"model": absent, "prompts": ["a"]})
        assert missing.status_code == 400 and "none not found" in missing.json()["detail"]
        empty = client.post("/api/generate", json={"model": str(model_dir), "prompts": [" "]})
        assert empty.status_code == 400 and "at least one prompt" in empty.json()["detail"]
        # a negative seed was queued and failed as a job, naming a command-line option
        negative = {"model": str(model_dir), "prompts": ["a"], "seed": -1}
        refused = client.post("/api/generate", json=negative)
        assert refused.status_code == 400 and "the seed must be in [0, " in refused.json()["detail"]
        assert client.get("/compare").status_code == 404


def run_job(client, body):
    job = client.post("/api/generate", json=body).json()
    for _ in range(300):
        job = client.get(f"/api/jobs/{job['job_id']}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError("the job did not finish")


def test_a_diffusion_model_generates_with_its_own_settings(tmp_path):
    save_tiny_dit_with_codec(tmp_path / "dit")
    with TestClient(
        create_app(models=[str(tmp_path / "dit")], output_dir=tmp_path / "s")
    ) as client:
        assert client.get("/api/models").json()["models"][0]["family"] == "diffusion"
        body = {"model": str(tmp_path / "dit"), "prompts": ["a"], "seconds": 0.2}
        family = client.get("/api/family", params={"path": str(tmp_path / "dit")}).json()
        assert [field["name"] for field in family["sampling"]] == [
            "steps", "cfg_scale", "cfg_rescale", "eta"
        ]  # fmt: skip
        lm_option = client.post("/api/generate", json={**body, "sampling": {"temperature": 1}})
        assert lm_option.status_code == 400
        assert "has no sampling option 'temperature'" in lm_option.json()["detail"]
        job = run_job(
            client, {**body, "sampling": {"steps": 3, "cfg_scale": 5, "cfg_rescale": 0.75}}
        )
        assert job["status"] == "done", job["error"]
        settings = job["results"][0]["settings"]
        assert settings["family"] == "diffusion" and settings["denoising_steps"] == 3
        assert settings["sampling"] == {"steps": 3, "cfg_scale": 5.0, "cfg_rescale": 0.75,
                                        "eta": 0.0}  # fmt: skip
        assert job["done_steps"] == job["total_steps"] == 3


def test_a_depth_decoder_model_generates_through_the_app_with_its_progress(tmp_path):
    save_tiny_model_with_codec(tmp_path / "depth", "depth", 1)
    with TestClient(
        create_app(models=[str(tmp_path / "depth")], output_dir=tmp_path / "s")
    ) as client:
        assert client.get("/api/models").json()["models"][0]["family"] == "lm"
        body = {"model": str(tmp_path / "depth"), "prompts": ["a", "b"], "seconds": 0.2,
                "seed": 1, "sampling": {"top_k": 5, "cfg_scale": 2}}  # fmt: skip
        job = run_job(client, body)
        assert job["status"] == "done", job["error"]
        assert job["done_steps"] == job["total_steps"] > 0
        first, second = job["results"]
        assert client.get(first["wav"]).content[:4] == b"RIFF"
        assert client.get(first["wav"]).content != client.get(second["wav"]).content
