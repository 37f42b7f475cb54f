"""No page, host or request does what it should not: DNS rebinding, cross-site posts,
huge bodies, paths outside the served models, unbounded work, a blinding that leaks."""

import time

import pytest
from fastapi.testclient import TestClient

from lightning_sdm.app import jobs as jobs_module
from lightning_sdm.app.guard import AccessPolicy
from lightning_sdm.app.server import CompareTest, create_app
from lightning_sdm.listening.answers import AnswerLog
from lightning_sdm.listening.pairs import pair_systems
from tests.conftest import save_tiny_model_with_codec
from tests.listening.systems import two_systems

LOCAL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model_with_codec(tmp_path_factory.mktemp("model"), "delay", 1)


@pytest.fixture
def app(tmp_path, model_dir):
    return create_app(models=[str(model_dir)], output_dir=tmp_path / "served")


def post(client, path, body, **headers):
    return client.post(path, json=body, headers=headers)


def test_only_this_machines_host_names_are_answered(app):
    with TestClient(app, base_url=LOCAL) as client:
        assert client.get("/api/models").status_code == 200
        for host in ("localhost:8000", "[::1]:8000", "127.0.0.1"):
            assert client.get("/api/models", headers={"host": host}).status_code == 200
        rebound = client.get("/api/models", headers={"host": "attacker.example:8000"})
        assert rebound.status_code == 421 and "attacker.example" in rebound.json()["detail"]
        assert client.get("/", headers={"host": "attacker.example"}).status_code == 421


def test_state_changing_requests_from_another_site_are_refused(app, model_dir):
    body = {"model": str(model_dir), "prompts": ["a"], "seconds": 0.1}
    with TestClient(app, base_url=LOCAL) as client:
        foreign = post(client, "/api/generate", body, origin="http://attacker.example")
        assert foreign.status_code == 403
        cross = post(client, "/api/generate", body, **{"sec-fetch-site": "cross-site"})
        assert cross.status_code == 403
        form = client.post("/api/generate", content=b"model=x", headers={
            "content-type": "text/plain"})  # fmt: skip
        assert form.status_code == 415 and "application/json" in form.json()["detail"]
        own = post(client, "/api/generate", body, origin=LOCAL, **{"sec-fetch-site": "same-origin"})
        assert own.status_code == 200


def test_a_huge_body_is_refused_before_it_is_read(app):
    with TestClient(app, base_url=LOCAL) as client:
        declared = client.post("/api/generate", content=b"x" * 200_000,
                               headers={"content-type": "application/json"})  # fmt: skip
        assert declared.status_code == 413

        def chunks():
            for _ in range(100):
                yield b" " * 10_000

        chunked = client.post("/api/generate", content=chunks(),
                              headers={"content-type": "application/json"})  # fmt: skip
        assert chunked.status_code == 413


def test_off_loopback_every_api_call_needs_the_token(tmp_path, model_dir):
    policy = AccessPolicy(bind_host="0.0.0.0", token="s3cret")
    app = create_app(models=[str(model_dir)], output_dir=tmp_path / "s", policy=policy)
    with TestClient(app, base_url="http://192.0.2.7:8000") as client:
        assert client.get("/api/models").status_code == 401
        assert client.get("/api/models", params={"token": "wrong"}).status_code == 401
        bearer = client.get("/api/models", headers={"authorization": "Bearer s3cret"})
        assert bearer.status_code == 200
        page = client.get("/", params={"token": "s3cret"})  # the printed address
        assert "HttpOnly" in page.headers["set-cookie"] and "SameSite=Strict" in page.headers[
            "set-cookie"]  # fmt: skip
        assert client.get("/api/models").status_code == 200  # the cookie now carries it


def test_only_served_models_are_loaded_or_described(tmp_path, model_dir):
    root = tmp_path / "models"
    (root / "inner").mkdir(parents=True)
    save_tiny_model_with_codec(root / "inner", "delay", 1)
    app = create_app(output_dir=tmp_path / "s", models_dir=[str(root)])
    with TestClient(app, base_url=LOCAL) as client:
        listed = [m["path"] for m in client.get("/api/models").json()["models"]]
        assert listed == [str(root / "inner")]
        for path in ("/etc/passwd", "/nonexistent", str(model_dir), str(root / ".." / "x")):
            described = client.get("/api/family", params={"path": path})
            assert described.status_code == 403, path
            assert "exist" not in described.text and "passwd" not in described.text
            refused = post(client, "/api/generate", {"model": path, "prompts": ["a"]})
            assert refused.status_code == 400 and "only the models" in refused.json()["detail"]
        assert client.get("/api/family", params={"path": str(root / "inner")}).json()[
            "family"] == "lm"  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompts": ["p"] * 17}, "at most 16 prompts"),
        ({"prompts": ["x" * 10_000]}, "at most 1000 characters"),
        ({"seconds": 1e9}, "duration must be in"),
        ({"prompts": ["p"] * 16, "seconds": 60}, "at most 600 s of audio"),
    ],
)
def test_what_one_request_may_cost_is_bounded(app, model_dir, change, message):
    with TestClient(app, base_url=LOCAL) as client:
        reply = post(client, "/api/generate", {"model": str(model_dir), "prompts": ["a"], **change})
        assert reply.status_code == 400 and message in reply.json()["detail"]


def wait_until(client, job_id, statuses, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stayed {job['status']}")


def test_the_queue_is_bounded_and_jobs_can_be_cancelled(app, model_dir, monkeypatch):
    monkeypatch.setattr(jobs_module, "MAX_QUEUED", 2)
    long = {"model": str(model_dir), "prompts": ["a"], "seconds": 30}
    with TestClient(app, base_url=LOCAL) as client:
        running = post(client, "/api/generate", long).json()
        queued = post(client, "/api/generate", long).json()
        full = post(client, "/api/generate", long)
        assert full.status_code == 429
        wait_until(client, running["job_id"], ("running",))
        cancelled = post(client, f"/api/jobs/{queued['job_id']}/cancel", {}).json()
        assert cancelled["status"] == "cancelled"
        post(client, f"/api/jobs/{running['job_id']}/cancel", {})
        stopped = wait_until(client, running["job_id"], ("cancelled", "done", "failed"), 30)
        assert stopped["status"] == "cancelled" and stopped["done_steps"] < stopped["total_steps"]
        again = post(client, "/api/generate", {**long, "seconds": 0.1})
        assert again.status_code == 200  # room again once they stopped
        assert wait_until(client, again.json()["job_id"], ("done", "failed"))["status"] == "done"


def test_loaded_models_are_bounded_least_recently_used_first(tmp_path, model_dir):
    other = save_tiny_model_with_codec(tmp_path / "other", "flat", 1)
    third = save_tiny_model_with_codec(tmp_path / "third", "delay", 1)
    models = [str(model_dir), str(other), str(third)]
    app = create_app(models=models, output_dir=tmp_path / "s", max_loaded_models=2)
    with TestClient(app, base_url=LOCAL) as client:
        for model in [*models, str(other)]:
            job = post(client, "/api/generate", {"model": model, "prompts": ["a"], "seconds": 0.1})
            assert wait_until(client, job.json()["job_id"], ("done", "failed"))["status"] == "done"
    jobs = app.app.state.jobs
    loaded = [str(p) for p in jobs.loaded_models()]
    assert loaded == [str(third.resolve()), str(other.resolve())]


@pytest.fixture
def compare_app(tmp_path):
    pairing = pair_systems(*two_systems(tmp_path / "systems"))
    test = CompareTest(pairing, AnswerLog(tmp_path / "answers.jsonl", pairing.systems))
    return create_app(compare=test, output_dir=tmp_path / "served"), test


def test_ab_audio_carries_nothing_that_names_a_system(compare_app):
    app, _ = compare_app
    with TestClient(app, base_url=LOCAL) as client:
        body = client.get("/api/compare/next", params={"rater": "r1"}).json()
        for slot in ("first", "second"):
            audio = client.get(body["pair"][slot])
            assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
            for header in ("last-modified", "etag", "content-disposition"):
                assert header not in audio.headers
            assert audio.headers["cache-control"] == "no-store"
        assert client.get("/api/docs").status_code == 404
        assert client.get("/openapi.json").status_code == 404


def test_an_answer_counts_only_after_both_samples_were_fetched(compare_app):
    app, test = compare_app
    with TestClient(app, base_url=LOCAL) as client:
        body = client.get("/api/compare/next", params={"rater": "r1"}).json()
        answer = {"rater": "r1", "pair_id": body["pair"]["pair_id"], "choice": "first"}
        unheard = post(client, "/api/compare/answer", answer)
        assert unheard.status_code == 409 and "listen to both" in unheard.json()["detail"]
        client.get(body["pair"]["first"])
        assert post(client, "/api/compare/answer", answer).status_code == 409
        client.get(body["pair"]["second"])
        assert post(client, "/api/compare/answer", answer).status_code == 200
        other = post(client, "/api/compare/answer", {**answer, "rater": "someone-else"})
        assert other.status_code == 409  # another rater id has heard nothing
    assert len(test.answers.path.read_text().splitlines()) == 1


def test_rater_ids_are_bounded(compare_app, monkeypatch):
    from lightning_sdm.app import server

    monkeypatch.setattr(server, "MAX_RATERS", 3)
    app, test = compare_app
    pair = test.pairing.pairs[0].pair_id
    with TestClient(app, base_url=LOCAL) as client:
        codes = [
            client.get(f"/api/compare/audio/{pair}/first", params={"rater": f"r{i}"}).status_code
            for i in range(5)
        ]
        assert codes == [200, 200, 200, 429, 429]
        again = client.get(f"/api/compare/audio/{pair}/second", params={"rater": "r0"})
        assert again.status_code == 200  # a known rater continues


def test_a_failed_answer_write_is_a_json_error_the_page_can_show(compare_app, monkeypatch):
    import os

    app, _ = compare_app
    with TestClient(app, base_url=LOCAL) as client:
        body = client.get("/api/compare/next", params={"rater": "r1"}).json()
        for slot in ("first", "second"):
            client.get(body["pair"][slot])

        def full(descriptor, data):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", full)
        answer = {"rater": "r1", "pair_id": body["pair"]["pair_id"], "choice": "first"}
        failed = post(client, "/api/compare/answer", answer)
        assert failed.status_code == 503 and "not saved" in failed.json()["detail"]
        monkeypatch.undo()
        assert post(client, "/api/compare/answer", answer).status_code == 200
