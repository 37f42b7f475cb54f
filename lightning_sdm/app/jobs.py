"""Generation jobs of the web app: one at a time in a worker thread (generation takes every
core), with the progress the page polls, cancel, and the files each result made.

What one request may cost is bounded (prompts, their length, seconds, the queue), and so
is the number of models kept loaded (least recently used goes first).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from lightning_sdm.errors import UserInputError
from lightning_sdm.families import family_named, family_of
from lightning_sdm.generation import GenerationOptions, generate_requests, read_requests
from lightning_sdm.generation.requests import check_first_seed
from lightning_sdm.generation.source import GenerationSource, load_path, source_family

MAX_SECONDS = 120.0  # one request from the page; longer ones belong to the command line
MAX_PROMPTS = 16  # per request
MAX_PROMPT_CHARS = 1000  # T5 reads 512 tokens at most
MAX_TOTAL_SECONDS = 600.0  # prompts x seconds per request
MAX_QUEUED = 8  # jobs waiting or running; more is refused (HTTP 429)
MAX_LOADED_MODELS = 2


class QueueFull(Exception):
    """Too many jobs are waiting: try again when one has finished."""


class JobCancelled(Exception):
    """Raised from the progress hook to stop a running job."""


@pydantic_dataclass(config=ConfigDict(extra="forbid"))  # a misspelt field is an error
class GenerationForm:
    """What the generate page sends: the model, prompts, and the options of the model
    family's sampling config (names as `/api/family` lists them; unset: its defaults)."""

    model: str
    prompts: list[str]
    seconds: float = 5.0
    seed: int = 0
    sampling: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    job_id: str
    form: GenerationForm
    status: str = "queued"  # queued, loading, running, done, failed, cancelled
    done_steps: int = 0
    total_steps: int = 0
    error: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    cancel_requested: bool = False

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "done_steps": self.done_steps,
            "total_steps": self.total_steps,
            "error": self.error,
            "results": self.results,
        }


class GenerationJobs:
    """`allowed(path)` decides which model paths may be loaded (the server's --model list
    and --models_dir root); nothing else is opened or even looked at."""

    def __init__(
        self,
        output_dir: Path,
        codec_dir: str | None = None,
        allowed: Callable[[str], bool] = lambda path: True,
        max_loaded_models: int = MAX_LOADED_MODELS,
    ) -> None:
        self.output_dir = output_dir
        self.codec_dir = codec_dir
        self.allowed = allowed
        self.max_loaded_models = max(1, max_loaded_models)
        self._jobs: dict[str, Job] = {}
        self._sources: OrderedDict[str, GenerationSource] = OrderedDict()
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")

    def submit(self, form: GenerationForm) -> Job:
        prompts = [p.strip() for p in form.prompts[: MAX_PROMPTS * 4] if p.strip()]
        if not prompts:
            raise UserInputError("type at least one prompt")
        if len(prompts) > MAX_PROMPTS:
            raise UserInputError(f"at most {MAX_PROMPTS} prompts per request, got {len(prompts)}")
        longest = max(len(p) for p in prompts)
        if longest > MAX_PROMPT_CHARS:
            raise UserInputError(
                f"a prompt is at most {MAX_PROMPT_CHARS} characters, got one of {longest}"
            )
        if not 0 < form.seconds <= MAX_SECONDS:
            raise UserInputError(f"the duration must be in (0, {MAX_SECONDS:g}] s")
        check_first_seed(form.seed, len(prompts), "the seed")  # now, not as a failed job
        if len(prompts) * form.seconds > MAX_TOTAL_SECONDS:
            raise UserInputError(
                f"at most {MAX_TOTAL_SECONDS:g} s of audio per request (prompts x seconds)"
            )
        if not self.allowed(form.model):
            raise UserInputError(
                "this server loads only the models it was started with (--model) or those "
                "under --models_dir"
            )
        if not Path(form.model).exists():
            raise UserInputError(f"model {form.model} not found")
        family_named(source_family(form.model)).sampling_from(form.sampling)  # before queueing
        form.prompts = prompts
        job = Job(uuid.uuid4().hex[:12], form)
        with self._lock:
            if sum(not j.finished for j in self._jobs.values()) >= MAX_QUEUED:
                raise QueueFull(f"{MAX_QUEUED} jobs are waiting or running; try again shortly")
            self._jobs[job.job_id] = job
        self._worker.submit(self._run, job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        """A queued job never starts; a running one stops at its next model step."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and not job.finished:
                job.cancel_requested = True
                if job.status == "queued":
                    job.status = "cancelled"
        return job

    def job_dir(self, job_id: str) -> Path:
        return self.output_dir / job_id

    def shutdown(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    def loaded_models(self) -> list[str]:
        return list(self._sources)

    def _source(self, model: str) -> GenerationSource:
        key = str(Path(model).resolve())
        if key in self._sources:
            self._sources.move_to_end(key)
            return self._sources[key]
        while len(self._sources) >= self.max_loaded_models:
            self._sources.popitem(last=False)  # the least recently used
        self._sources[key] = load_path(model, self.codec_dir)
        return self._sources[key]

    def _run(self, job: Job) -> None:
        form = job.form
        if job.cancel_requested:
            return
        try:
            job.status = "loading"
            source = self._source(form.model)
            if source.codec is None:
                raise UserInputError(
                    f"{form.model} has no codec to make audio with: export it with "
                    "--codec_dir, or start serve with --codec_dir"
                )
            options = GenerationOptions(
                sampling=family_of(source.model).sampling_from(form.sampling),
                progress=False,
                spectrograms=True,
            )
            requests = read_requests(form.prompts, None, form.seconds, form.seed)
            job.status = "running"

            def progress(done: int, total: int) -> None:
                job.done_steps, job.total_steps = done, total
                if job.cancel_requested:
                    raise JobCancelled

            summary = generate_requests(
                source, requests, options, self.job_dir(job.job_id), on_progress=progress
            )
            job.results = [self._result(job.job_id, row) for row in summary.rows]
            job.status = "done"
        except JobCancelled:
            job.status = "cancelled"
        except (UserInputError, ValueError, FileNotFoundError) as error:
            job.error, job.status = str(error), "failed"
        except Exception as error:  # the page must hear about any failure, not hang
            job.error, job.status = f"{type(error).__name__}: {error}", "failed"

    def _result(self, job_id: str, row: dict[str, Any]) -> dict[str, Any]:
        name = row["name"]
        base = f"/outputs/{job_id}"
        sidecar = json.loads((self.job_dir(job_id) / f"{name}.json").read_text(encoding="utf-8"))
        return {
            "name": name,
            "prompt": row["prompt"],
            "wav": f"{base}/{name}.wav",
            "spectrogram": f"{base}/{name}.png",
            "settings": sidecar,
        }
