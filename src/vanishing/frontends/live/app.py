"""The live server's Starlette app: a few routes over the config, the executor and the records
(the API is described in `vanishing.frontends.live`)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from vanishing.errors import UsageError
from vanishing.frontends.live import events
from vanishing.frontends.live.jobs import MAX_RUNS, Jobs, parse_request
from vanishing.frontends.live.listing import Listing
from vanishing.frontends.live.reading import Skipped, Status, held_by, read_result
from vanishing.frontends.live.safety import (
    TOKEN_COOKIE,
    Guard,
    Refused,
    Served,
    allowed_hosts,
    resolve,
    run_path,
)
from vanishing.model.mlp import DEFAULT_WIDTH
from vanishing.model.recurrent import arch_defaults
from vanishing.settings.config import choices_of, help_text, kind_of, optional, settings, shown
from vanishing.settings.naming import label

PACKAGE = "vanishing.frontends.live"


class LiveState:
    """What the routes share: the served directories (the first is --out), the jobs, the list,
    and the flag that ends every event stream when the server closes."""

    def __init__(self, roots: Sequence[Path], jobs: Jobs) -> None:
        self.roots = list(roots)
        self.jobs = jobs
        self.skipped = Skipped()  # the runs that cannot be read, each said once in the log
        self.listing = Listing(self.roots, self.status_of, self.skipped)
        self.closing = threading.Event()

    @property
    def out(self) -> Path:
        return self.roots[0]

    def status_of(self, run_dir: Path) -> Status:
        """running, ok, diverged, failed, stopped or unfinished; running with a note where
        another process trains the run (it holds its lock). A result.json that cannot be read,
        or says an unknown status, is Unreadable."""
        result = read_result(run_dir)
        if result is not None:
            return Status(result["status"])
        holder = held_by(run_dir)
        if holder is not None:  # another server, or a `vanishing train` of the same --out
            return Status("running", f"in another process (pid {holder})")
        job = self.jobs.latest(run_dir)
        if job is None or job.state == "done":  # done: another process had the run
            return Status("unfinished")
        return Status("running" if job.active else job.state)  # stopped or failed

    def interrupt(self) -> None:
        """End the streams and tell every job to stop, without waiting."""
        self.closing.set()
        for job in list(self.jobs.jobs.values()):
            job.stop.set()

    def close(self, timeout: float | None = None) -> None:
        """End the streams, stop the training and wait for it."""
        self.interrupt()
        self.jobs.close(timeout)


def served_roots(dirs: Sequence[Path | str], out: Path | str) -> list[Path]:
    """--out first (created), then each DIR (which must exist), resolved, without repeats."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    roots = [out.resolve()]
    for given in dirs:
        path = Path(given)
        if not path.is_dir():
            raise UsageError(f"no such directory: {path}")
        if path.resolve() not in roots:
            roots.append(path.resolve())
    return roots


def settings_payload() -> dict[str, Any]:
    """Every TrainConfig field as the page's form needs it, in declaration order, and the
    defaults that depend on the network (`model.recurrent.arch_defaults`)."""
    fields = []
    for setting in settings():
        fields.append(
            {
                "name": setting.name,
                "kind": "widths" if setting.name == "hidden" else kind_of(setting).__name__,
                "optional": optional(setting),
                "default": shown(setting.default),
                "choices": choices_of(setting.name) or None,
                "help": help_text(setting).replace("%%", "%"),
                "section": setting.metadata["section"],
                "axis": setting.metadata["axis"],
            }
        )
    return {
        "fields": fields,
        "depth_width": {"default_width": DEFAULT_WIDTH},
        "arch_defaults": {
            arch: {name: shown(value) for name, value in arch_defaults(arch).items()}
            for arch in choices_of("arch")
        },
    }


JAVASCRIPT = "text/javascript; charset=utf-8"  # the type a browser runs a module script of


class PageFiles(StaticFiles):
    """The page's files under static/, its ES modules always as text/javascript: a browser runs
    a module script of no other type, and a system's MIME table may call .js text/plain."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        if isinstance(response, FileResponse) and str(full_path).endswith(".js"):
            response.headers["content-type"] = JAVASCRIPT
        return response


MAX_BODY = 64 * 1024  # 4 runs of every setting take a few kB


def state_of(request: Request) -> LiveState:
    state: LiveState = request.app.state.live
    return state


def index(request: Request) -> Response:  # a thread of its own: it reads a file
    page = resources.files(PACKAGE).joinpath("static/index.html").read_text()
    response = HTMLResponse(page, headers={"Cache-Control": "no-store"})
    token = request.query_params.get("token")
    if token:  # the guard has checked it: later requests may carry the cookie instead
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
    return response


async def get_settings(request: Request) -> Response:
    return JSONResponse(settings_payload())


async def start_runs(request: Request) -> Response:
    state = state_of(request)
    data = b""
    async for chunk in request.stream():  # read no more than a form of 4 runs can need
        data += chunk
        if len(data) > MAX_BODY:
            raise Refused(413, f"the body is larger than {MAX_BODY} bytes")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # not JSON, or nested beyond the parser's depth
        raise UsageError("the body is not valid JSON") from None
    configs, resume = parse_request(body)
    try:  # the checks read checkpoints and the machine's memory: in a thread
        job = await run_in_threadpool(state.jobs.start, configs, state.out, resume)
    except RuntimeError as e:
        raise Refused(409, str(e)) from None
    by_dir = {run.run_dir: run for run in job.runs}
    return JSONResponse(
        {
            "job": job.id,
            "runs": [
                {
                    "run": run_path(state.roots, 0, run.run_dir),
                    "label": label(run.config, [other.config for other in job.runs]),
                }
                for run in by_dir.values()
            ],
        }
    )


def job_summary(state: LiveState, job_id: str) -> dict[str, Any]:
    job = state.jobs.jobs[job_id]
    return job.summary([run_path(state.roots, 0, run.run_dir) for run in job.runs])


async def list_jobs(request: Request) -> Response:
    state = state_of(request)
    return JSONResponse({"jobs": [job_summary(state, job) for job in list(state.jobs.jobs)]})


async def stop_job(request: Request) -> Response:
    state = state_of(request)
    job_id = request.path_params["job"]
    if state.jobs.stop(job_id) is None:
        raise Refused(404, f"no job {job_id!r}")
    return JSONResponse(job_summary(state, job_id))


def event_stream(request: Request) -> Response:  # in a thread: `resolve` looks at the disk
    state = state_of(request)
    given = [part.strip() for part in request.query_params.get("runs", "").split(",")]
    paths = list(dict.fromkeys(part for part in given if part))
    if not 1 <= len(paths) <= MAX_RUNS:
        raise Refused(400, f"runs=: give 1 to {MAX_RUNS} run paths, comma-separated")
    followed = [(path, resolve(state.roots, path)) for path in paths]
    return StreamingResponse(
        events.stream(followed, state.status_of, state.closing, state.skipped),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def list_runs(request: Request) -> Response:  # a thread of its own: it reads files
    return JSONResponse({"items": state_of(request).listing.items()})


async def refused(request: Request, exc: Exception) -> Response:
    if isinstance(exc, Refused):
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    if isinstance(exc, HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    return JSONResponse({"error": str(exc)}, status_code=400)  # a UsageError: the CLI's words


def create_app(
    dirs: Sequence[Path | str],
    out: Path | str,
    *,
    token: str,
    host: str = "127.0.0.1",
    port: int = 8765,
    workers: int | None = None,
    max_jobs: int | None = None,
    data_options: dict[str, Any] | None = None,
) -> Starlette:
    """The app serving `out` (index 0, where new runs go) and `dirs`, answering only to
    `host:port` (and 127.0.0.1 or localhost at that port) with `token`. `workers`: the executor's
    per job (default: the cores); `max_jobs`: jobs training at once (default: the cores);
    `data_options`: `load_dataset`'s keywords (data_dir, verify, ...)."""
    state = LiveState(served_roots(dirs, out), Jobs(workers, max_jobs, data_options))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        state.close()

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/settings", get_settings),
            Route("/api/runs", start_runs, methods=["POST"]),
            Route("/api/jobs", list_jobs),
            Route("/api/jobs/{job}/stop", stop_job, methods=["POST"]),
            Route("/api/events", event_stream),
            Route("/api/list", list_runs),
            Mount("/static", PageFiles(packages=[(PACKAGE, "static")]), name="static"),
        ],
        middleware=[
            Middleware(Served, token=token),  # outermost: every response, the Guard's too
            Middleware(Guard, token=token, hosts=allowed_hosts(host, port)),
        ],
        exception_handlers={Refused: refused, UsageError: refused, HTTPException: refused},
        lifespan=lifespan,
    )
    app.state.live = state
    return app
