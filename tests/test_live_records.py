"""`vanishing live` over damaged and hostile run directories, and what the server does around
every request: a run that cannot be read is skipped with one line in the server's log while the
others are listed and streamed; its stream ends with `unreadable` and `end`; a huge records file
is read in bounded chunks off the event loop; security headers on every response; an access log
without the token; a run another process trains says so; a job's memory check counts the jobs
already training."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
import torch
from starlette.testclient import TestClient

from test_live import sse_events
from vanishing import records
from vanishing.errors import UsageError
from vanishing.frontends import live
from vanishing.frontends.live import events
from vanishing.frontends.live.jobs import Job, Jobs, parse_config
from vanishing.frontends.live.reading import held_by
from vanishing.frontends.live.safety import SECURITY_HEADERS, access_line
from vanishing.jobs.live import live_runs
from vanishing.training import memory

TOKEN = "t0ken-Secret_42"  # noqa: S105 - the tests' own
BASE = "http://127.0.0.1:8765"
JSON = {"X-Token": TOKEN, "Content-Type": "application/json"}
TINY = {"depth": "3", "width": "16", "epochs": "2", "batch_size": "32"}
TINY |= {"probe_every": "4", "probe_size": "32", "device": "cpu"}
STREAM_SECONDS = 20  # the most one stream of a damaged run may take to end


def config() -> dict:
    return parse_config(TINY).to_dict()


def probe(step: int) -> dict:
    return {
        "kind": "probe",
        "step": step,
        "epoch": 0,
        "grad_norms": [1e-4, 1e-3, 1e-2, 1.0],
        "signal_norms": [1e-4, 1e-2, 1.0],
        "activation_std": [0.5, 0.5, 0.5],
        "dead_fraction": [0.0, 0.0, 0.0],
        "vanishing_ratio": 1e-4,
        "loss": 2.3,
    }


GOOD_ROWS = [probe(0), probe(4), {"kind": "epoch", "epoch": 1, "step": 10, "train_loss": 2.0}]


def write_run(
    run_dir: Path,
    config_text: str | bytes | None = None,
    result: object = None,
    metrics: str | bytes | None = None,
) -> None:
    """A run directory: config.json (default: a good one), result.json when given (a value, or
    raw bytes/text), metrics.jsonl (default: three good rows)."""
    run_dir.mkdir(parents=True)
    text = json.dumps(config()) if config_text is None else config_text
    (run_dir / records.CONFIG).write_bytes(text.encode() if isinstance(text, str) else text)
    if metrics is None:
        metrics = "".join(json.dumps(row) + "\n" for row in GOOD_ROWS)
    (run_dir / records.METRICS).write_bytes(
        metrics.encode() if isinstance(metrics, str) else metrics
    )
    if result is not None:
        raw = result if isinstance(result, (str, bytes)) else json.dumps(result)
        (run_dir / records.RESULT).write_bytes(raw.encode() if isinstance(raw, str) else raw)


def with_config(**changes: object) -> str:
    return json.dumps({**config(), **changes})


DEEP = "[" * 100_000 + "]" * 100_000  # json.loads: RecursionError
OK = {"status": "ok", "test_accuracy": 0.5}
# name -> (what to write, whether the list must show it)
HOSTILE: dict[str, tuple[dict, bool]] = {
    "activation-list": ({"config_text": with_config(activation=["relu"])}, False),
    "activation-table": ({"config_text": with_config(activation={"relu": 1})}, False),
    "hidden-number": ({"config_text": with_config(hidden=8)}, False),
    "hidden-strings": ({"config_text": with_config(hidden=["8", "8"])}, False),
    "hidden-nested": ({"config_text": with_config(hidden=[[8], [8]])}, False),
    "hidden-negative": ({"config_text": with_config(hidden=[-8])}, False),
    "lr-string": ({"config_text": with_config(lr="fast")}, False),
    "epochs-string": ({"config_text": with_config(epochs="two")}, False),
    "seed-float": ({"config_text": with_config(seed=1.5)}, False),
    "unknown-list": ({"config_text": with_config(extra=[1, [2]])}, False),
    "config-null": ({"config_text": "null"}, False),
    "config-list": ({"config_text": "[1, 2]"}, False),
    "config-string": ({"config_text": '"relu"'}, False),
    "config-deep": ({"config_text": DEEP}, False),
    "config-not-utf8": ({"config_text": b'{"activation": "\xff\xfe"}'}, False),
    "config-truncated": ({"config_text": '{"activation": '}, False),
    "config-empty": ({"config_text": ""}, False),
    "result-null": ({"result": "null"}, False),
    "result-list": ({"result": [OK]}, False),
    "result-string-config": ({"result": {**OK, "config": "relu"}}, False),
    "result-unknown-status": ({"result": {**OK, "status": "weird"}}, False),
    "result-running-status": ({"result": {**OK, "status": "running"}}, False),
    "result-status-list": ({"result": {**OK, "status": ["ok"]}}, False),
    "result-deep": ({"result": DEEP}, False),
    "result-not-utf8": ({"result": b'{"status": "ok\xff"}'}, False),
    "result-accuracy-string": ({"result": {**OK, "test_accuracy": "high"}}, True),
    "metrics-not-utf8": (
        {"metrics": b'{"kind": "probe\xff"}\n\xff\xfe\n' + b'{"kind": "epoch"}\n'},
        True,
    ),
    "metrics-not-objects": ({"metrics": '[1, 2]\n"probe"\n5\nnull\n{"kind": "epoch"}\n'}, True),
    "metrics-deep-line": ({"metrics": "[" * 100_000 + "\n" + json.dumps(probe(0)) + "\n"}, True),
    "metrics-odd-values": (
        {
            "metrics": json.dumps(
                {
                    "kind": "probe",
                    "step": "x",
                    "grad_norms": "abc",
                    "signal_norms": {"a": 1},
                    "activation_std": [[1]],
                    "dead_fraction": "x",
                    "loss": [2],
                }
            )
            + "\n"
            + json.dumps({"kind": ["probe"], "step": None})
            + "\n"
        },  # fmt: skip
        True,
    ),
    "metrics-torn": ({"metrics": json.dumps(probe(0)) + "\n" + '{"kind": "pro'}, True),
}
# Records that are not files: made after write_run.
SPECIAL = (
    "config-huge",
    "config-fifo",
    "result-dir",
    "result-fifo",
    "metrics-dir",
    "metrics-fifo",
    "lock-fifo",
)


def build(served: Path) -> dict[str, bool]:
    """Two good runs and every hostile run under `served`: name -> whether it must be listed."""
    listed = {"good-a": True, "good-b": True}
    write_run(served / "good-a", result=OK)
    write_run(served / "good-b", config_text=with_config(activation="sigmoid"))
    for name, (parts, shown) in HOSTILE.items():
        write_run(served / name, **parts)
        listed[name] = shown
    for name in SPECIAL:
        run_dir = served / name
        write_run(run_dir)
        kind, _ = name.split("-")
        path = run_dir / {"config": records.CONFIG, "result": records.RESULT,
                          "metrics": records.METRICS, "lock": records.LOCK}[kind]  # fmt: skip
        path.unlink(missing_ok=True)
        if name.endswith("huge"):  # sparse: no time, no disk
            with open(path, "wb") as f:
                f.truncate(records.MAX_RECORD_BYTES + 1)
        elif name.endswith("dir"):
            path.mkdir()
        else:
            os.mkfifo(path)
        listed[name] = kind == "lock"  # a lock's holder is looked for without waiting on it
    return listed


@pytest.fixture
def served(tmp_path) -> tuple[Path, dict[str, bool]]:
    served = tmp_path / "served"
    return served, build(served)


@pytest.fixture
def client(tmp_path, served):
    app = live.create_app([served[0]], tmp_path / "out", token=TOKEN)
    with TestClient(app, base_url=BASE) as client:
        yield client


def read_events(client: TestClient, runs: list[str], seconds: float = STREAM_SECONDS) -> list:
    """The stream's events up to `end`, read in a thread that must finish within `seconds`."""
    found: list = []

    def read() -> None:
        with client.stream("GET", f"/api/events?runs={','.join(runs)}", headers=JSON) as response:
            assert response.status_code == 200
            found.extend(sse_events(response))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    assert not reader.is_alive(), f"the stream of {runs} did not end in {seconds} s: {found}"
    return found


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
def test_a_damaged_run_is_skipped_in_one_line_and_the_others_are_served(client, served, caplog):
    caplog.set_level(logging.INFO, logger="vanishing.live")
    root, listed = served
    assert len(listed) - 2 >= 24
    for _ in range(2):  # read twice: each skipped run said once
        response = client.get("/api/list", headers=JSON)
        assert response.status_code == 200
        paths = {item["path"] for item in response.json()["items"] if item["kind"] == "run"}
        assert paths == {f"1/{name}" for name, shown in listed.items() if shown}
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    for name, shown in listed.items():
        mine = [line for line in skips if line.startswith(f"skipped 1/{name}: ")]
        assert len(mine) == (0 if shown else 1), (name, mine)
    said = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in skips}
    # The report's reasons (`loading.config_problem`, `checked_result`, `records.read_json`).
    assert (
        said["skipped 1/activation-list"] == "config.json: activation: expected str, got ['relu']"
    )
    assert (
        said["skipped 1/hidden-number"] == "config.json: hidden: expected a list of widths, got 8"
    )
    assert said["skipped 1/lr-string"] == "config.json: lr: expected float, got 'fast'"
    assert said["skipped 1/config-deep"] == "config.json: nested too deeply to read"
    assert said["skipped 1/config-not-utf8"] == "config.json: not UTF-8 text"
    assert said["skipped 1/result-null"] == "result.json holds no result"
    assert said["skipped 1/result-string-config"] == "result.json: config holds 'relu'"
    assert said["skipped 1/result-unknown-status"] == (
        "result.json has an unknown status 'weird' (known: ok, diverged, failed)"
    )
    assert said["skipped 1/result-dir"] == "result.json: not a file"
    assert said["skipped 1/config-huge"] == f"config.json: larger than {2**26} bytes, not a record"
    assert said["skipped 1/config-list"] == "config.json holds no settings"
    assert said["skipped 1/unknown-list"] == "config.json: extra holds [1, [2]], not one value"
    assert said["skipped 1/seed-float"] == "config.json: seed: expected int, got 1.5"
    assert said["skipped 1/config-truncated"].startswith("config.json: not valid JSON (Expect")
    items = {i["path"]: i for i in client.get("/api/list", headers=JSON).json()["items"]}
    assert items["1/good-a"]["status"] == "ok" and items["1/good-a"]["test_accuracy"] == 0.5
    assert items["1/result-accuracy-string"]["test_accuracy"] is None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
def test_the_stream_of_a_damaged_run_says_so_and_ends(client, served, caplog):
    caplog.set_level(logging.INFO, logger="vanishing.live")
    _, listed = served
    for name, shown in listed.items():
        run = f"1/{name}"
        found = read_events(client, [run])
        names = [event for event, _ in found]
        assert names[-1] == "end", (name, found)
        unreadable = [data for event, data in found if event == "unreadable"]
        if shown:  # listed: its good rows stream, the rest is skipped
            assert not unreadable, (name, found)
            assert names[-2] == "status", (name, found)
        else:
            assert len(unreadable) == 1 and unreadable[0]["run"] == run, (name, found)
            assert names[-2:] == ["unreadable", "end"], (name, found)
    # Both good runs stream their rows and a verdict beside the damaged ones, in one stream.
    found = read_events(client, ["1/good-a", "1/config-deep", "1/metrics-dir", "1/good-b"])
    rows = [data["run"] for event, data in found if event == "row"]
    assert rows.count("1/good-a") == rows.count("1/good-b") == len(GOOD_ROWS)
    assert {data["run"] for event, data in found if event == "verdict"} == {"1/good-a", "1/good-b"}
    statuses = {data["run"]: data["status"] for event, data in found if event == "status"}
    assert statuses == {"1/good-a": "ok", "1/good-b": "unfinished"}
    # What a damaged row holds is skipped, the rest of the file is read.
    found = read_events(client, ["1/metrics-not-objects"])
    assert [data["row"] for event, data in found if event == "row"] == [{"kind": "epoch"}]
    found = read_events(client, ["1/metrics-deep-line"])
    assert [data["row"] for event, data in found if event == "row"] == [probe(0)]


def test_a_huge_line_is_read_in_bounded_chunks_and_other_requests_are_served(tmp_path, caplog):
    """metrics.jsonl of 64 MB without a newline (then one good row): the stream skips the long
    line, reading at most CHUNK bytes a poll off the event loop; /api/list answers meanwhile."""
    served = tmp_path / "served"
    write_run(served / "huge", metrics="")
    size = 64 * 2**20
    with open(served / "huge" / records.METRICS, "wb") as f:
        f.truncate(size)  # sparse: 64 MB of NUL bytes, no newline, written at once
        f.seek(size)
        f.write(b"\n" + json.dumps(probe(0)).encode() + b"\n")
    app = live.create_app([served], tmp_path / "out", token=TOKEN)
    with TestClient(app, base_url=BASE) as client:
        follower = events.RunFollower(
            "1/huge", served / "huge", app.state.live.status_of, app.state.live.skipped
        )
        tracemalloc.start()
        follower.poll()
        polls = 1
        while follower.behind:
            follower.poll()
            polls += 1
            assert polls < 100
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert polls > size // events.CHUNK  # each poll read at most a chunk
        assert peak < 3 * events.CHUNK, peak  # nothing of the long line was kept
        assert [row for row in follower.rows] == [probe(0)]
        said = [r.getMessage() for r in caplog.records if r.name == "vanishing.live"]
        assert said == [
            f"skipped 1/huge: metrics.jsonl: a line of more than {events.MAX_LINE} bytes at byte "
            "0 is not a record, skipped"
        ]

        answered = []
        done = threading.Event()

        def list_while_streaming() -> None:
            while not done.is_set():
                started = time.perf_counter()
                response = client.get("/api/list", headers=JSON)
                answered.append((response.status_code, time.perf_counter() - started))

        lister = threading.Thread(target=list_while_streaming, daemon=True)
        lister.start()
        try:
            found = read_events(client, ["1/huge"], seconds=60)
        finally:
            done.set()
            lister.join(30)
        assert [data["row"] for event, data in found if event == "row"] == [probe(0)]
        assert found[-1][0] == "end"
        assert len(answered) >= 3 and all(status == 200 for status, _ in answered)
        assert max(seconds for _, seconds in answered) < 2.0, answered


def test_every_response_carries_the_security_headers(tmp_path):
    app = live.create_app([], tmp_path / "out", token=TOKEN)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        responses = {
            "refused": client.get("/api/list"),  # before the page sets the cookie
            "page": client.get(f"/?token={TOKEN}"),
            "api": client.get("/api/list", headers=JSON),
            "static": client.get("/static/main.js", headers=JSON),
            "not found": client.get("/nosuch", headers=JSON),
            "bad path": client.get("/api/events?runs=0/../x", headers=JSON),
            "foreign host": client.get("/api/list", headers={**JSON, "Host": "evil.example"}),
        }
    statuses = {name: r.status_code for name, r in responses.items()}
    assert statuses == {
        "page": 200, "api": 200, "static": 200, "refused": 403, "not found": 404,
        "bad path": 400, "foreign host": 400,
    }  # fmt: skip
    for name, response in responses.items():
        csp = response.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp, name
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, name
        assert response.headers["x-content-type-options"] == "nosniff", name
        assert response.headers["referrer-policy"] == "no-referrer", name
        for header, value in SECURITY_HEADERS.items():
            assert response.headers[header] == value, (name, header)


def test_an_error_no_route_caught_is_a_500_with_the_headers(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="vanishing.live")
    app = live.create_app([], tmp_path / "out", token=TOKEN)
    listing = app.state.live.listing

    def broken() -> list:
        raise KeyError("boom")

    monkeypatch.setattr(listing, "items", broken)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        response = client.get("/api/list", headers=JSON)
    assert response.status_code == 500
    assert response.json() == {"error": "internal error: KeyError: 'boom'"}
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    said = [r.getMessage() for r in caplog.records if r.name == "vanishing.live.access"]
    assert said[0] == "internal error: KeyError: 'boom', in testclient GET /api/list"
    assert said[1].startswith("testclient GET /api/list 500 ")


def test_the_page_has_no_inline_script_or_style():
    """The CSP allows the page's own files only: index.html must load everything from them."""
    static = Path(live.__file__).parent / "static"
    page = (static / "index.html").read_text()
    scripts = page.split("<script")[1:]
    assert scripts and all(' src="/static/' in s.split(">", 1)[0] for s in scripts)
    assert "<style" not in page and " style=" not in page and "javascript:" not in page
    assert not re.search(r"<[^>]*\son\w+=", page)  # no onclick= and the like
    for path in static.glob("*.js"):
        text = path.read_text()
        assert 'setAttribute("style"' not in text and "eval(" not in text, path.name
        assert "new Function" not in text, path.name


def test_the_access_log_has_one_line_per_request_and_never_the_token(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="vanishing.live")
    app = live.create_app([], tmp_path / "out", token=TOKEN)
    with TestClient(app, base_url=BASE) as client:
        client.get(f"/?token={TOKEN}")
        client.get(f"/api/list?token={TOKEN}&x=1")
        client.get(f"/api/list?%74oken={TOKEN}")  # token, percent-encoded
        client.get(f"/api/{TOKEN}", headers=JSON)  # the token in the path: written ***
        client.get("/api/settings", headers=JSON)
        client.get("/api/settings?token=wrong")
        client.get("/api/list?x=%0Afake%20line", headers=JSON)
    lines = [r.getMessage() for r in caplog.records if r.name == "vanishing.live.access"]
    assert len(lines) == 7
    assert all(TOKEN not in line for line in lines)
    assert all("\n" not in line for line in lines)
    assert lines[0].startswith("testclient GET /?token=*** 200 ")
    assert lines[1].startswith("testclient GET /api/list?token=***&x=1 200 ")
    assert lines[2].startswith("testclient GET /api/list?token=*** 200 ")
    assert lines[3].startswith("testclient GET /api/*** 404 ")
    assert lines[4].startswith("testclient GET /api/settings 200 ")
    assert lines[5].startswith("testclient GET /api/settings?token=*** 403 ")
    assert lines[6].startswith("testclient GET /api/list?x=\\nfake line 200 ")
    assert all(line.endswith(" ms") for line in lines)
    assert access_line("::1", "GET", "/", b"TOKEN=abc", "abc") == "::1 GET /?TOKEN=***"


def test_the_real_servers_log_never_holds_its_token(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "vanishing", "live", "--no-browser", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        url = process.stdout.readline().strip()
        base, token = url.split("/?token=")
        import urllib.request

        for path in (f"/?token={token}", f"/api/list?token={token}", "/api/list"):
            try:
                urllib.request.urlopen(base + path, timeout=10).read()  # noqa: S310
            except urllib.error.HTTPError as e:
                assert e.code == 403
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert token not in stderr
    lines = [line for line in stderr.splitlines() if " GET " in line]
    assert len(lines) == 3, stderr
    assert lines[0].startswith("vanishing live: 127.0.0.1 GET /?token=*** 200 ")
    assert lines[2].startswith("vanishing live: 127.0.0.1 GET /api/list 403 ")


@pytest.mark.skipif(sys.platform != "linux", reason="flock")
def test_a_run_another_process_trains_says_which(client, served, tmp_path):
    root, _ = served
    run_dir = root / "good-b"  # no result.json: unfinished, until another process holds it
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from vanishing import records; "
            "assert records.lock_run(Path(sys.argv[1])) is not None; print('held', flush=True); "
            "time.sleep(60)",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        items = {i["path"]: i for i in client.get("/api/list", headers=JSON).json()["items"]}
        assert items["1/good-b"]["status"] == "running"
        assert items["1/good-b"]["note"] == f"in another process (pid {holder.pid})"
        assert items["1/good-a"]["note"] is None
        found: list = []

        def read() -> None:
            with client.stream("GET", "/api/events?runs=1/good-b", headers=JSON) as response:
                for line in response.iter_lines():
                    if line.startswith("data: ") and '"status"' in line:
                        found.append(json.loads(line.removeprefix("data: ")))
                    if line.startswith("event: end"):
                        return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + 20
        while not found and time.monotonic() < deadline:
            time.sleep(0.05)
        assert found[0] == {
            "run": "1/good-b",
            "status": "running",
            "note": f"in another process (pid {holder.pid})",
        }
        holder.kill()  # its lock goes with it: the run is unfinished, the stream ends
        holder.wait()
        reader.join(STREAM_SECONDS)
        assert not reader.is_alive()
        assert found[-1] == {"run": "1/good-b", "status": "unfinished"}
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    # Its own lock, or a lock no one holds, is no other process's.
    assert held_by(run_dir) is None


def test_a_jobs_memory_check_counts_the_jobs_already_training(tmp_path, tiny_dir):
    """A job's runs are checked against what the machine has less what this server's jobs
    already training need: a job still allocating holds back its estimate."""
    cpu = torch.device("cpu")
    free = memory.available(cpu)
    if free is None:
        pytest.skip("this system does not say how much memory is free")
    configs = [parse_config(TINY)]
    out = tmp_path / "out"
    needed = live_runs(configs, out, False).memory  # checked alone: it fits
    assert needed[cpu] == memory.estimate(configs[0]).total  # one run, one worker
    jobs = Jobs(max_jobs=4, data_options={"data_dir": tiny_dir, "verify": False})
    busy = Job("busy", [], memory={cpu: free})  # a job training that needs all there is
    jobs.jobs[busy.id] = busy
    with pytest.raises(UsageError) as refused:
        jobs.start(configs, out, False)
    assert re.fullmatch(
        r"these runs of 784-16-16-16-10 need about [\d.]+ [kMG]B, more than the [\d.]+ [kMG]?B "
        r"of memory available on cpu once the [\d.]+ [kMG]B that the runs already training need "
        r"is set aside; wait for them to finish, or stop one",
        str(refused.value),
    ), str(refused.value)
    assert list(jobs.jobs) == ["busy"]  # nothing started
    busy.state = "stopped"  # no longer training: the same job starts
    job = jobs.start(configs, out, False)
    try:
        assert job.memory == needed and job.active
    finally:
        jobs.close(60)
    assert job.state in ("done", "stopped")


def test_the_page_says_a_run_cannot_be_read_under_its_csp(tmp_path):
    """In chromium: a listed run whose metrics.jsonl turns into a directory opens as
    `unreadable` with the server's reason, the page under its CSP without a console error."""
    import uvicorn

    from test_browser import CHROMIUM_ARGS, browser_or_skip
    from vanishing.frontends.live.server import bind

    sync_playwright, executable = browser_or_skip()
    served = tmp_path / "served"
    write_run(served / "bad", metrics="")
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = live.create_app([served], tmp_path / "out", token=TOKEN, port=port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(executable), args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_page()
                page.set_default_timeout(30_000)
                errors: list[str] = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                response = page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")
                assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
                page.wait_for_selector('#list li[data-path="1/bad"]')
                (served / "bad" / records.METRICS).unlink()
                (served / "bad" / records.METRICS).mkdir()
                page.click('#list li[data-path="1/bad"] .open')
                page.wait_for_function(
                    "() => document.querySelector('.panel .status')?.textContent === 'unreadable'"
                )
                verdict = page.text_content(".panel .verdict")
                assert verdict == "cannot read this run: metrics.jsonl is not a file"
                assert errors == []
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
