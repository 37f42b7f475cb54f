"""`lightning-sdm serve`: the generate page and the blind A/B page over one FastAPI app.

The A/B page never learns which system it plays: it asks for "the first" and "the second"
sample of a pair, and the server maps them to A or B per rater and per pair; the audio
carries no file name, date or tag that could tell them apart, and an answer counts only
once this rater has fetched both samples. Pages and scripts are served from the package
(no CDN, no API docs page), so the app works offline. `guard.RequestGuard` stands in
front of every route (hosts, origins, body size, token).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn
from urllib.parse import urlencode

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from lightning_sdm.app.guard import AccessPolicy, RequestGuard
from lightning_sdm.app.jobs import GenerationForm, GenerationJobs, QueueFull
from lightning_sdm.errors import UserInputError
from lightning_sdm.families import family_named
from lightning_sdm.generation.source import source_family
from lightning_sdm.listening.answers import (
    AlreadyAnswered,
    AnswerLog,
    AnswerNotSaved,
    check_rater,
    heard_first,
    rater_order,
    some_bad_lines,
)
from lightning_sdm.listening.pairs import Pair, PairingResult, audio_digest
from lightning_sdm.runs.checkpoints import is_checkpoint

STATIC = Path(__file__).parent / "static"
OUTPUT_FILES = {".wav": "audio/wav", ".png": "image/png", ".json": "application/json"}
MAX_RATERS = 10_000  # raters tracked in memory per test; more are refused
SLOTS = ("first", "second")


@dataclass
class CompareTest:
    pairing: PairingResult
    answers: AnswerLog
    allow_no_preference: bool = False
    # (rater, pair_id) -> the samples this rater fetched: an answer needs both.
    fetched: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    # pair_id -> why it left the test: a wav removed or regenerated since pairing. Its
    # raters would judge other audio than the answers would name.
    withdrawn: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def audio_bytes(self, pair: Pair, system: str) -> bytes:
        """The wav as paired, or 410 (and the pair withdrawn) when it is gone or changed."""
        wav = pair.wavs[system]
        try:
            data = wav.read_bytes()
        except OSError as error:
            self.refuse(pair, f"{wav} cannot be read ({error.strerror or error})")
        paired = pair.audio.get(system)
        if paired is not None and audio_digest(data) != paired:
            self.refuse(pair, f"{wav} changed")
        return data

    def still_paired(self, pair: Pair) -> bool:
        """Whether the pair's wavs are those paired; a pair whose are not is withdrawn."""
        if pair.pair_id not in self.withdrawn:
            reason = pair.changed()
            if reason is not None:
                self.withdraw(pair, reason)
        return pair.pair_id not in self.withdrawn

    def withdraw(self, pair: Pair, reason: str) -> None:
        """Take the pair out of the test (the first reason found stays)."""
        with self._lock:
            self.withdrawn.setdefault(pair.pair_id, reason)

    def why_left(self, pair: Pair) -> str:
        return (
            f"this pair left the test: {self.withdrawn[pair.pair_id]} since serve paired the "
            "folders (restart serve to pair them anew)"
        )

    def refuse(self, pair: Pair, reason: str | None = None) -> NoReturn:
        """410 for a withdrawn pair (withdrawn here for `reason`, if given)."""
        if reason is not None:
            self.withdraw(pair, reason)
        raise HTTPException(410, self.why_left(pair))

    @property
    def salt(self) -> str:
        return f"{self.pairing.systems['A']}\0{self.pairing.systems['B']}"

    def note_fetched(self, rater: str, pair_id: str, slot: str) -> bool:
        """False when the test already tracks MAX_RATERS other raters."""
        with self._lock:
            raters = {who for who, _ in self.fetched}
            if rater not in raters and len(raters) >= MAX_RATERS:
                return False
            self.fetched.setdefault((rater, pair_id), set()).add(slot)
            return True

    def heard_both(self, rater: str, pair_id: str) -> bool:
        with self._lock:
            return self.fetched.get((rater, pair_id), set()) >= set(SLOTS)


class ModelCatalogue:
    """The models the app may load: those given with --model, and model directories or
    checkpoints under the --models_dir roots. Any other path is refused unseen."""

    def __init__(self, models: list[str], roots: list[str]) -> None:
        self.listed = [str(m) for m in models]
        self.roots = [Path(r).resolve() for r in roots]

    def allows(self, path: str) -> bool:
        resolved = Path(path).resolve()
        if any(resolved == Path(m).resolve() for m in self.listed):
            return True
        return any(resolved.is_relative_to(root) and resolved != root for root in self.roots)

    def entries(self) -> list[str]:
        """The listed models, then what sits directly under each root."""
        found = list(self.listed)
        for root in self.roots:
            if not root.is_dir():
                continue
            for child in sorted(root.iterdir()):
                looks_like_model = (child / "config.json").is_file() or child.suffix == ".ckpt"
                if looks_like_model and (child.is_dir() or is_checkpoint(child)):
                    found.append(str(child))
        return list(dict.fromkeys(found))


class AnswerBody(BaseModel):
    rater: str
    pair_id: str
    choice: Literal["first", "second", "none"]


class CancelBody(BaseModel):
    pass


def _bad_request(error: Exception) -> HTTPException:
    return HTTPException(status_code=400, detail=str(error))


def create_app(
    models: list[str] | None = None,
    compare: CompareTest | None = None,
    output_dir: str | Path = "served",
    codec_dir: str | None = None,
    models_dir: list[str] | None = None,
    policy: AccessPolicy | None = None,
    max_loaded_models: int = 2,
) -> Any:
    """The app behind its request guard (an ASGI app; `.app` is the FastAPI one)."""
    app = FastAPI(title="lightning-sdm", docs_url=None, redoc_url=None, openapi_url=None)
    catalogue = ModelCatalogue(list(models or []), list(models_dir or []))
    jobs = GenerationJobs(Path(output_dir), codec_dir, catalogue.allows, max_loaded_models)
    app.router.add_event_handler("shutdown", jobs.shutdown)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> Any:
        if compare is not None and not catalogue.entries():
            return RedirectResponse("/compare")
        return FileResponse(STATIC / "generate.html")

    @app.get("/compare", include_in_schema=False)
    def compare_page() -> FileResponse:
        if compare is None:
            raise HTTPException(404, "no A/B test: start serve with --compare DIR_A DIR_B")
        return FileResponse(STATIC / "compare.html")

    # --- generate ---------------------------------------------------------------------

    @app.get("/api/models")
    def list_models() -> dict[str, Any]:
        entries = []
        for path in catalogue.entries():
            try:
                entries.append({"path": path, "family": source_family(path)})
            except UserInputError as error:
                entries.append({"path": path, "family": None, "error": str(error)})
        return {"models": entries, "compare": compare is not None}

    @app.get("/api/family")
    def family(path: str) -> dict[str, Any]:
        """The model's family and its sampling options, which the page shows as fields."""
        if not catalogue.allows(path):
            raise HTTPException(403, "not a model this server was started with")
        try:
            found = family_named(source_family(path))
        except UserInputError as error:
            raise _bad_request(error) from error
        return {
            "path": path,
            "family": found.name,
            "description": found.description,
            "sampling": found.sampling_fields(),
        }

    @app.post("/api/generate")
    def generate(form: GenerationForm) -> dict[str, Any]:
        try:
            job = jobs.submit(form)
        except QueueFull as error:
            raise HTTPException(429, str(error)) from error
        except UserInputError as error:
            raise _bad_request(error) from error
        return job.to_dict()

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str) -> dict[str, Any]:
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job.to_dict()

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel_job(job_id: str, body: CancelBody) -> dict[str, Any]:
        job = jobs.cancel(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job.to_dict()

    @app.get("/outputs/{job_id}/{name}", include_in_schema=False)
    def output_file(job_id: str, name: str) -> FileResponse:
        folder = jobs.job_dir(job_id).resolve()
        path = (folder / name).resolve()
        if jobs.get(job_id) is None or path.parent != folder or not path.is_file():
            raise HTTPException(404, "no such file")
        if path.suffix not in OUTPUT_FILES:
            raise HTTPException(404, "no such file")
        return FileResponse(path, media_type=OUTPUT_FILES[path.suffix], filename=path.name)

    # --- blind A/B ----------------------------------------------------------------------

    def test() -> CompareTest:
        if compare is None:
            raise HTTPException(404, "no A/B test: start serve with --compare DIR_A DIR_B")
        return compare

    def rater_id(rater: str) -> str:
        try:
            return check_rater(rater)
        except UserInputError as error:
            raise HTTPException(422, str(error)) from error

    def pair_of(current: CompareTest, pair_id: str):
        for pair in current.pairing.pairs:
            if pair.pair_id == pair_id:
                return pair
        raise HTTPException(404, f"no pair {pair_id}")

    @app.get("/api/compare/next")
    def next_pair(rater: str = Query(...)) -> dict[str, Any]:
        current, rater = test(), rater_id(rater)
        answered = current.answers.answered(rater)
        remaining = [
            p
            for p in rater_order(rater, current.pairing.pairs, current.salt)
            if p.pair_id not in answered and p.pair_id not in current.withdrawn
        ]
        # Pairs whose wavs were removed or rewritten since pairing (a stat each) leave the
        # test here, said once, rather than when a player fails to load them.
        skipped = [current.why_left(p) for p in remaining if not current.still_paired(p)]
        remaining = [p for p in remaining if p.pair_id not in current.withdrawn]
        done = sum(p.pair_id in answered for p in current.pairing.pairs)
        state = {
            "answered": done,
            "total": done + len(remaining),  # withdrawn pairs it did not answer are not due
            "allow_no_preference": current.allow_no_preference,
            "skipped": skipped,
        }
        if not remaining:
            return {**state, "done": True, "pair": None}
        pair = remaining[0]
        audio = f"/api/compare/audio/{pair.pair_id}"
        query = urlencode({"rater": rater})  # a '+' in an id would come back as a space
        return {
            **state,
            "done": False,
            "pair": {
                "pair_id": pair.pair_id,
                "prompt": pair.prompt,
                "first": f"{audio}/first?{query}",
                "second": f"{audio}/second?{query}",
            },
        }

    @app.get("/api/compare/audio/{pair_id}/{slot}", include_in_schema=False)
    def pair_audio(
        pair_id: str, slot: Literal["first", "second"], rater: str = Query(...)
    ) -> Response:
        current, rater = test(), rater_id(rater)
        pair = pair_of(current, pair_id)
        if not current.note_fetched(rater, pair_id, slot):
            raise HTTPException(429, f"this test already has {MAX_RATERS} raters")
        first = heard_first(rater, pair, current.salt)
        system = first if slot == "first" else ("B" if first == "A" else "A")
        # The bytes alone: no file name, modification date or ETag that could tell the
        # systems apart, and nothing a cache could keep.
        return Response(
            current.audio_bytes(pair, system),
            media_type="audio/wav",
            headers={"Cache-Control": "no-store"},
        )

    @app.post("/api/compare/answer")
    def answer(body: AnswerBody) -> dict[str, Any]:
        current, rater = test(), rater_id(body.rater)
        pair = pair_of(current, body.pair_id)
        if body.choice == "none" and not current.allow_no_preference:
            raise HTTPException(422, "this test is forced choice: pick the first or the second")
        if not current.still_paired(pair):
            current.refuse(pair)
        if not current.heard_both(rater, pair.pair_id):
            raise HTTPException(409, "listen to both samples before answering")
        first = heard_first(rater, pair, current.salt)
        second = "B" if first == "A" else "A"
        choice = {"first": first, "second": second, "none": "none"}[body.choice]
        try:
            current.answers.record(rater, pair, choice, first)
        except AlreadyAnswered as error:
            raise HTTPException(409, str(error)) from error
        except AnswerNotSaved as error:
            raise HTTPException(503, str(error)) from error
        return {"saved": True, "answered": len(current.answers.answered(rater))}

    @app.get("/api/compare/info")
    def compare_info() -> dict[str, Any]:
        current = test()
        return {
            "pairs": len(current.pairing.pairs),
            "left_out": len(current.pairing.left_out),
            "allow_no_preference": current.allow_no_preference,
        }

    app.state.jobs = jobs
    app.state.compare = compare
    return RequestGuard(app, policy or AccessPolicy())


def describe(compare: CompareTest) -> str:
    """What serve prints at start: the pairs, what was left out and the answers so far."""
    lines = [compare.pairing.summary(), f"answers: {compare.answers.path}"]
    if compare.answers.set_aside:
        lines.append(f"  warning: {compare.answers.set_aside}")
    if compare.answers.bad_lines:
        lines.append(f"  {len(compare.answers.bad_lines)} malformed lines skipped:")
        lines += [f"    {line}" for line in some_bad_lines(compare.answers.bad_lines)]
    if compare.answers.earlier_audio:
        lines.append(
            f"  {compare.answers.earlier_audio} answers in it were given to other audio of "
            "these folders (regenerated since): kept, asked again, reported apart"
        )
    if compare.answers.other_tests:
        lines.append(
            f"  {compare.answers.other_tests} answers in it compare other systems (kept; the "
            "report shows each comparison apart)"
        )
    return "\n".join(lines)
