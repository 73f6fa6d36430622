"""`vanishing live`'s server: the API and its event stream through Starlette's test client, every
safety rule with a request it must refuse, stop and resume, and the real server's start and stop."""

from __future__ import annotations

import json
import mimetypes
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

import recurrent_records
from vanishing import records
from vanishing.frontends import live
from vanishing.frontends.live.jobs import parse_config
from vanishing.model.recurrent import ARCHS, RECURRENT, RECURRENT_HIDDEN, RECURRENT_PROBE_SIZE
from vanishing.reporting.verdict import live_headline
from vanishing.settings.config import settings
from vanishing.settings.naming import label

TOKEN = "t0ken"  # noqa: S105 - the tests' own
BASE = "http://127.0.0.1:8765"
JSON = {"X-Token": TOKEN, "Content-Type": "application/json"}
# Two tiny runs: 10 steps an epoch on the 320-image fixture, a probe every 4 steps.
TINY = {"depth": "3", "width": "16", "epochs": "2", "batch_size": "32"}
TINY |= {"probe_every": "4", "probe_size": "32", "device": "cpu"}


@pytest.fixture
def app(tmp_path, tiny_dir):
    served = tmp_path / "served"
    served.mkdir()
    return live.create_app(
        [served],
        tmp_path / "out",
        token=TOKEN,
        data_options={"data_dir": tiny_dir, "verify": False},
    )


@pytest.fixture
def client(app):
    with TestClient(app, base_url=BASE) as client:
        yield client


def start(client: TestClient, runs: list[dict], resume: bool = False) -> dict:
    response = client.post("/api/runs", json={"runs": runs, "resume": resume}, headers=JSON)
    assert response.status_code == 200, response.text
    return response.json()


def sse_events(response) -> Iterator[tuple[str | None, dict]]:
    """A streamed response's Server-Sent Events, (name, data), up to and including `end`."""
    event = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield event, json.loads(line.removeprefix("data: "))
            if event == "end":
                return


def read_events(client: TestClient, runs: list[str]) -> list[tuple[str, dict]]:
    """The stream's events, (name, data), up to and including `end`."""
    with client.stream("GET", f"/api/events?runs={','.join(runs)}&token={TOKEN}") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(sse_events(response))


def run_dir(app, run: str) -> Path:
    index, name = run.split("/", 1)
    return app.state.live.roots[int(index)] / name


def test_two_runs_stream_their_records_verdicts_and_end(app, client):
    answer = start(client, [{**TINY, "activation": "sigmoid"}, {**TINY, "activation": "relu"}])
    runs = [item["run"] for item in answer["runs"]]
    assert [item["label"] for item in answer["runs"]] == ["Sigmoid", "ReLU"]
    assert all(run.startswith("0/") for run in runs)
    found = read_events(client, runs)
    assert found[-1] == ("end", {"runs": runs})
    for run in runs:
        mine = [(event, data) for event, data in found if data.get("run") == run]
        rows = [data["row"] for event, data in mine if event == "row"]
        assert rows == records.read_metrics(run_dir(app, run))  # exactly what is on disk
        assert len(rows) == 5 + 2  # probes at steps 0, 4, .., 16 of 20, and 2 epoch rows
        statuses = [data["status"] for event, data in mine if event == "status"]
        assert statuses[-1] == "ok"
        # The layers' names once, before the first row: LayerNames' words, one per list entry.
        numbered = ["layer 1", "layer 2", "layer 3"]
        names = {"run": run, "weighted": [*numbered, "the output layer"], "hidden": numbered}
        assert [data for event, data in mine if event == "layers"] == [names]
        assert mine.index(("layers", names)) < [event for event, _ in mine].index("row")
        assert len(rows[0]["grad_norms"]) == 4 and len(rows[0]["dead_fraction"]) == 3
        # A verdict after every poll that read a probe row, on every row so far: the last
        # probe row is followed by one.
        events = [event for event, _ in mine]
        last_probe = max(
            i for i, (e, d) in enumerate(mine) if e == "row" and d["row"]["kind"] == "probe"
        )
        assert "verdict" in events[last_probe:]
        verdicts = [data["headline"] for event, data in mine if event == "verdict"]
        assert verdicts and all(headline.endswith(".") for headline in verdicts)
    # A finished run is the same stream: its rows again, then ok, then the end.
    again = read_events(client, runs[:1])
    assert [e for e, _ in again if e == "row"] == ["row"] * 7
    assert [e for e, _ in again].count("layers") == 1
    assert again[-2:] == [("status", {"run": runs[0], "status": "ok"}), ("end", {"runs": runs[:1]})]
    # The stream ends when the records say so; the job's thread records its own end just after.
    app.state.live.jobs.jobs[answer["job"]].thread.join(30)
    jobs = client.get("/api/jobs", headers=JSON).json()["jobs"]
    assert [(job["job"], job["state"], job["runs"]) for job in jobs] == [
        (answer["job"], "done", runs)
    ]
    items = client.get("/api/list", headers=JSON).json()["items"]
    assert {(i["kind"], i["path"], i["status"]) for i in items} == {
        ("run", run, "ok") for run in runs
    }
    assert all(0 <= i["test_accuracy"] <= 1 for i in items)


def test_the_same_setting_is_the_same_directory_and_is_kept(app, client):
    first = start(client, [{**TINY, "epochs": "1"}])
    read_events(client, [first["runs"][0]["run"]])
    result = records.read_json(run_dir(app, first["runs"][0]["run"]) / records.RESULT)
    second = start(client, [{**TINY, "epochs": 1, "lr": 0.001}])  # JSON numbers, same values
    assert second["runs"] == first["runs"]
    read_events(client, [second["runs"][0]["run"]])
    again = records.read_json(run_dir(app, first["runs"][0]["run"]) / records.RESULT)
    assert again == result  # finished: not trained again


def test_settings_lists_every_field(client):
    fields = client.get("/api/settings", headers=JSON).json()["fields"]
    assert [f["name"] for f in fields] == [s.name for s in settings()]
    by_name = {f["name"]: f for f in fields}
    assert by_name["hidden"]["kind"] == "widths"
    assert by_name["hidden"]["default"] == "520,320,240,120"
    assert by_name["lr"] == {
        "name": "lr",
        "kind": "float",
        "optional": False,
        "default": "0.001",
        "choices": None,
        "help": "learning rate (default: 0.001, the reference's)",
        "section": "optimisation",
        "axis": "lrs",
    }
    assert by_name["clip_grad_norm"]["optional"] is True
    assert "sigmoid" in by_name["activation"]["choices"]
    assert by_name["residual"]["kind"] == "bool"
    assert "%%" not in json.dumps(fields)
    assert by_name["arch"]["choices"] == list(ARCHS)
    assert by_name["sequence"]["optional"] is True and by_name["sequence"]["default"] == "none"
    # The defaults that differ with the network, which the parser applies where a run has none.
    defaults = client.get("/api/settings", headers=JSON).json()["arch_defaults"]
    recurrent = {
        "activation": "tanh",
        "hidden": ",".join(map(str, RECURRENT_HIDDEN)),
        "probe_size": str(RECURRENT_PROBE_SIZE),
    }
    assert defaults == {"mlp": {}, **dict.fromkeys(RECURRENT, recurrent)}


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        ([{"lr": "0"}], "learning rate must be a finite number > 0"),
        ([{"norm": "foo"}], "unknown norm 'foo'; choose from: none, batch, layer"),
        ([{"colour": "red"}], "unknown setting(s) colour"),
        ([{"epochs": "two"}], "epochs: expected int, got 'two'"),
        ([{"depth": "x"}], "depth: expected int, got 'x'"),
        ([{"hidden": "8,8", "depth": "2"}], "give either the hidden widths"),
        ([{"momentum": "0.9"}], "--momentum applies to --optimizer sgd only"),
        ([{}] * 5, "give 1 to 4 runs at once, got 5"),
        ([], "give 1 to 4 runs at once, got 0"),
        ([{"width": "100000000", "depth": "20"}], "more than the"),
        (
            [{"dataset": "mnist"}, {"dataset": "fashion-mnist"}],
            "the runs of one job share one dataset, got mnist, fashion-mnist: start a job for each",
        ),
    ],
)
def test_bad_values_are_the_clis_message(client, runs, message):
    response = client.post("/api/runs", json={"runs": runs}, headers=JSON)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert "Traceback" not in response.text


def test_bad_bodies_are_refused(client):
    for body in (b"{", b"[]", b'{"runs": [{}], "go": 1}', b'{"runs": [{}], "resume": "yes"}'):
        response = client.post("/api/runs", content=body, headers=JSON)
        assert response.status_code == 400, body
        assert set(response.json()) == {"error"}


def test_token_is_required(client):
    assert client.get("/api/settings").status_code == 403
    assert client.get("/api/settings", headers={"X-Token": "wrong"}).status_code == 403
    response = client.get("/api/list?token=wrong")
    assert (response.status_code, set(response.json())) == (403, {"error"})
    assert client.get("/").status_code == 403
    assert client.get("/static/index.html").status_code == 403
    assert client.get(f"/api/settings?token={TOKEN}").status_code == 200
    assert client.get("/api/settings", headers={"X-Token": TOKEN}).status_code == 200


def test_the_page_sets_the_token_cookie(client):
    response = client.get(f"/?token={TOKEN}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"vanishing_token={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/api/settings").status_code == 200  # the cookie alone now
    assert client.get("/static/index.html").status_code == 200
    assert client.get("/static/../app.py").status_code == 404


STATIC = Path(live.__file__).parent / "static"
IMPORT = re.compile(r'^import (?:\{ ([\w, ]+) \}|\* as \w+) from "([^"]+)";$', re.MULTILINE)
EXPORT = re.compile(r"^export (?:async )?(?:function|class|const) (\w+)", re.MULTILINE)


@pytest.mark.parametrize("system_type", [None, "text/plain"])
def test_the_pages_modules_are_served_as_javascript_like_its_script(
    client, monkeypatch, system_type
):
    """A browser runs a module script of a JavaScript type only; a system's MIME table may call
    .js text/plain (Windows' registry can), the server says text/javascript all the same."""
    if system_type is not None:
        mimetypes.guess_type("x.js")  # the table read, then changed as such a system has it
        monkeypatch.setitem(mimetypes.types_map, ".js", system_type)
        assert mimetypes.guess_type("x.js")[0] == system_type
    modules = sorted(path.name for path in STATIC.glob("*.js"))
    assert '<script type="module" src="/static/main.js">' in (STATIC / "index.html").read_text()
    for name in [*modules, "uplot/uPlot.iife.min.js"]:
        assert client.get(f"/static/{name}").status_code == 403  # no token
        response = client.get(f"/static/{name}", headers={"X-Token": TOKEN})
        assert response.status_code == 200, name
        assert response.headers["content-type"] == "text/javascript; charset=utf-8", name
        assert response.text == (STATIC / name).read_text()
        # As a browser fetches a module: the cookie that GET /?token= set, and its own Origin.
        response = client.get(
            f"/static/{name}",
            headers={"Origin": "http://127.0.0.1:8765", "Cookie": f"vanishing_token={TOKEN}"},
        )
        assert response.status_code == 200, name


def test_the_pages_modules_import_only_each_other():
    """Every import is a sibling module that exists and exports the names taken from it: the
    page loads nothing but its own files (uPlot is a classic script beside them)."""
    exports = {path.name: set(EXPORT.findall(path.read_text())) for path in STATIC.glob("*.js")}
    assert {"main.js", "api.js", "form.js", "list.js", "stream.js", "panel.js", "charts.js"} <= set(
        exports
    )
    reached, todo = set(), ["main.js"]
    while todo:
        name = todo.pop()
        reached.add(name)
        text = (STATIC / name).read_text()
        lines = re.findall(r"^import\b.*$", text, re.MULTILINE)
        assert len(lines) == len(IMPORT.findall(text)) and "import(" not in text, name
        for names, source in IMPORT.findall(text):
            module = source.removeprefix("./")
            assert source.startswith("./") and module in exports, source
            assert {n.strip() for n in names.split(",") if n.strip()} <= exports[module], source
            if module not in reached:
                todo.append(module)
        assert "fetch(" not in text or name == "api.js", name  # requests go through the API
    assert reached == set(exports)  # no module left unused


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_pages_modules_parse_as_modules(tmp_path):
    """node --check on each module; as .mjs, since node does not report a syntax error in a .js
    file it has to guess is a module."""
    for path in STATIC.glob("*.js"):
        (tmp_path / f"{path.stem}.mjs").write_text(path.read_text())
        done = subprocess.run(
            ["node", "--check", str(tmp_path / f"{path.stem}.mjs")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, (path.name, done.stderr)


@pytest.mark.parametrize("host", ["evil.example:8765", "127.0.0.1:9999", "localhost", ""])
def test_a_foreign_host_header_is_refused(client, host):
    response = client.get("/api/settings", headers={"X-Token": TOKEN, "Host": host})
    assert response.status_code == 400
    assert "Host" in response.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765"])
def test_the_servers_own_host_is_answered(client, host):
    response = client.get("/api/settings", headers={"X-Token": TOKEN, "Host": host})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:9999"},
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
    ],
)
def test_cross_origin_and_non_json_posts_are_refused(client, headers):
    response = client.post(
        "/api/runs", content=json.dumps({"runs": [TINY]}), headers={**JSON, **headers}
    )
    assert response.status_code == 403
    assert client.get("/api/jobs", headers=JSON).json()["jobs"] == []  # nothing started


def test_a_same_origin_post_is_answered(client):
    response = client.post(
        "/api/jobs/nosuch/stop", json={}, headers={**JSON, "Origin": "http://localhost:8765"}
    )
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("0/../served", 400),
        ("1/../../etc", 400),
        ("/etc", 400),
        ("2/x", 400),
        ("x/y", 400),
        ("1/nosuch", 404),
        ("1/outside", 400),
    ],
)
def test_paths_stay_inside_the_served_directories(app, client, tmp_path, path, status):
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / records.CONFIG).write_text("{}")
    (tmp_path / "served" / "outside").symlink_to(tmp_path / "secret")
    response = client.get(f"/api/events?runs={path}", headers=JSON)
    assert response.status_code == status
    assert set(response.json()) == {"error"}
    items = client.get("/api/list", headers=JSON).json()["items"]
    assert items == []  # the symlinked run is not listed either


def test_too_many_streamed_runs_are_refused(client):
    response = client.get("/api/events?runs=0,0/a,0/b,0/c,0/d", headers=JSON)
    assert response.status_code == 400


def test_list_groups_compares_and_sweeps(app, client, tmp_path):
    served = tmp_path / "served"
    config = parse_config({**TINY}).to_dict()
    for group, names in (("compare", ["a", "b"]), ("sweep", ["c", "d", "e"]), ("one", ["f"])):
        for name in names:
            (served / group / name).mkdir(parents=True)
            records.write_json(served / group / name / records.CONFIG, config)
    records.write_json(served / "sweep" / "sweep.json", {})
    records.write_json(
        served / "compare" / "a" / records.RESULT, {"status": "ok", "test_accuracy": 0.5}
    )
    items = client.get("/api/list", headers=JSON).json()["items"]
    groups = [(i["kind"], i["path"], i["runs"], i["status"]) for i in items if i["kind"] != "run"]
    assert groups == [
        ("compare", "1/compare", ["1/compare/a", "1/compare/b"], "mixed"),
        ("sweep", "1/sweep", ["1/sweep/c", "1/sweep/d", "1/sweep/e"], "unfinished"),
    ]
    runs = {
        i["path"]: (i["parent"], i["status"], i["test_accuracy"])
        for i in items
        if i["kind"] == "run"
    }
    assert runs["1/compare/a"] == ("1/compare", "ok", 0.5)
    assert runs["1/one/f"] == (None, "unfinished", None)
    assert items[0]["test_accuracy"] == 0.5


def test_list_gives_a_regressions_test_loss_and_baseline(client, tmp_path):
    served = tmp_path / "served"
    recurrent_records.write_adding_run(served / "adding" / "a")
    recurrent_records.write_lstm_run(served / "adding" / "lstm")
    items = {i["path"]: i for i in client.get("/api/list", headers=JSON).json()["items"]}
    adding, lstm = items["1/adding/a"], items["1/adding/lstm"]
    scores = ("test_accuracy", "test_loss", "baseline_loss")
    assert [adding[key] for key in scores] == pytest.approx([None, 0.06, 1 / 6])
    assert [lstm[key] for key in scores] == pytest.approx([0.9, 0.5, None])
    # a compare of both: each run's scores that it has, averaged
    assert [items["1/adding"][key] for key in scores] == pytest.approx([0.9, 0.28, 1 / 6])


def test_stop_leaves_a_checkpoint_and_resume_finishes_it_as_an_uninterrupted_run(
    app, client, tmp_path, tiny_dir
):
    setting = {**TINY, "epochs": "40", "activation": "tanh"}  # 400 steps, ~1 s
    answer = start(client, [setting])
    run = answer["runs"][0]["run"]
    checkpoint = run_dir(app, run) / records.CHECKPOINT
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    response = client.post(f"/api/jobs/{answer['job']}/stop", json={}, headers=JSON)
    assert response.status_code == 200
    found = read_events(client, [run])
    assert found[-2][1] == {"run": run, "status": "stopped"}
    assert not (run_dir(app, run) / records.RESULT).exists()
    assert checkpoint.exists()
    jobs = client.get("/api/jobs", headers=JSON).json()["jobs"]
    assert jobs[0]["state"] == "stopped"

    resumed = start(client, [setting], resume=True)
    assert resumed["runs"] == answer["runs"]
    found = read_events(client, [run])
    assert found[-2][1] == {"run": run, "status": "ok"}
    result = records.read_json(run_dir(app, run) / records.RESULT)

    other = live.create_app(
        [],
        tmp_path / "reference",
        token=TOKEN,
        data_options={"data_dir": tiny_dir, "verify": False},
    )
    with TestClient(other, base_url=BASE) as reference:
        answer = start(reference, [setting])
        read_events(reference, [answer["runs"][0]["run"]])
    uninterrupted = records.read_json(run_dir(other, answer["runs"][0]["run"]) / records.RESULT)
    assert result["test_accuracy"] == uninterrupted["test_accuracy"]
    assert result["grad_norms_final"] == uninterrupted["grad_norms_final"]


def test_more_jobs_than_cores_is_409(tmp_path, tiny_dir):
    app = live.create_app(
        [],
        tmp_path / "out",
        token=TOKEN,
        max_jobs=1,
        data_options={"data_dir": tiny_dir, "verify": False},
    )
    with TestClient(app, base_url=BASE) as client:
        first = start(client, [{**TINY, "epochs": "200"}])
        response = client.post("/api/runs", json={"runs": [TINY]}, headers=JSON)
        assert response.status_code == 409
        assert "already training" in response.json()["error"]
        client.post(f"/api/jobs/{first['job']}/stop", json={}, headers=JSON)


def test_live_headline_names_steps_as_large_as_the_weights_while_the_loss_has_not_fallen():
    config = {"activation": "relu", "hidden": [8, 8], "optimizer": "adam", "lr": 1.0}
    first = {"kind": "probe", "step": 0, "signal_norms": [1.0, 1.0], "loss": 2.3}
    first |= {"activation_std": [0.5, 0.5], "update_ratio": [0.02, 0.03, 0.01]}
    assert "Steps too large" not in live_headline([first], config)
    big = {**first, "step": 40, "update_ratio": [0.4, 1.5, 0.2], "loss": 2.31}
    line = live_headline([first, big], config)
    assert line.startswith(
        "Steps too large: at step 40 Adam moved layer 2 by 1.5 times its own weights' norm in a "
        "single step (update ratio ||ΔW||/||W||); a step that large replaces the weights instead "
        "of adjusting them. Healthy gradient"
    ), line
    # Just under the threshold (an update ratio of 1), or a loss that fell: not named.
    under = {**big, "update_ratio": [0.4, 0.99, 0.2]}
    assert "Steps too large" not in live_headline([first, under], config)
    learning = {**big, "loss": 0.4}  # a zero-initialised layer's first steps are large
    assert "Steps too large" not in live_headline([first, learning], config)
    # No loss recorded (a model watched without a probe batch): nothing says it did not learn.
    unknown = [{**first, "loss": None}, {**big, "loss": None}]
    assert "Steps too large" not in live_headline(unknown, config)
    # A watched model's layer is named as the model names it.
    watched = {**config, "source": "watch", "layers": ["conv1", "conv2", "fc"]}
    assert live_headline([first, big], watched).startswith(
        "Steps too large: at step 40 Adam moved conv2 by 1.5 times"
    )


def test_live_headline_reads_the_first_and_the_latest_probe():
    config = {"activation": "sigmoid", "hidden": [8, 8, 8]}
    assert live_headline([], config) == "No probe yet: no verdict."
    first = {"kind": "probe", "step": 0, "signal_norms": [1e-4, 1e-2, 1.0]}
    first["activation_std"] = [0.5, 0.5, 0.5]
    line = live_headline([first], config)
    assert line.startswith("Vanishing gradient: the back-propagated signal shrinks 10,000-fold")
    later = {**first, "step": 40, "signal_norms": [0.5, 0.7, 1.0]}
    line = live_headline([first, {"kind": "epoch"}, later], config)
    assert line.endswith(
        "At step 40 the signal reads healthy: ×0.5 from the last hidden layer to layer 1."
    )
    # What step 0 cannot show heads the line: a loss that blew up, gradients grown huge; dead
    # units follow it.
    blown = {**later, "loss": 1e21}
    assert live_headline([first, blown], config).startswith(
        "Blew up: by step 40 the loss is 1.0e+21, far above chance's 2.30. Vanishing gradient"
    )
    at_init = {**first, "loss": 1e9}  # nothing trained yet: the init's loss, not a blow-up
    assert live_headline([at_init], config).startswith(
        "At initialisation the loss is 1.0e+09, far above chance's 2.30. Vanishing gradient"
    )
    nan = {**later, "loss": None}
    assert live_headline([first, nan], config).startswith(
        "Blew up: by step 40 the loss is no longer a finite number."
    )
    grown = {**later, "grad_norms": [5e4, 10.0, 1.0, 0.5], "loss": 2.0}
    assert live_headline([{**first, "grad_norms": [0.1] * 4}, grown], config).startswith(
        "Exploding during training: gradient norms reached 5.0e+04 (layer 1) by step 40."
    )
    dead = {**later, "dead_fraction": [0.0, 0.3, 0.1]}
    assert live_headline([first, dead], {**config, "activation": "relu"}).endswith(
        "Dead units: 30 % of layer-2 units output 0 on every probe image at step 40."
    )
    one = {"kind": "probe", "step": 0, "vanishing_ratio": 0.5, "signal_norms": [1.0]}
    assert live_headline([one], {"activation": "relu", "hidden": [8]}) == (
        "No vanishing gradient: layer 1 receives 0.5 of the output layer's weight gradient at "
        "step 0."
    )


def test_live_help():
    done = subprocess.run(
        [sys.executable, "-m", "vanishing", "live", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    for option in ("--port", "--host", "--out", "--no-browser", "--workers"):
        assert option in done.stdout


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_the_real_server_starts_serves_and_stops_its_training(tmp_path, tiny_dir):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "vanishing", "live", "--no-browser", "--port", "0"]
    command += ["--out", str(out), "--data-dir", str(tiny_dir), "--no-verify"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url
        base, token = url.split("/?token=")
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own server
            assert response.status == 200
        body = json.dumps(
            {"runs": [{**TINY, "epochs": "400"}] * 1 + [{**TINY, "epochs": "400", "seed": "1"}]}
        )
        request = urllib.request.Request(  # noqa: S310
            f"{base}/api/runs",
            body.encode(),
            {"Content-Type": "application/json", "X-Token": token},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            run = json.loads(response.read())["runs"][0]["run"]
        checkpoint = out / run.split("/", 1)[1] / records.CHECKPOINT
        deadline = time.monotonic() + 60
        while not checkpoint.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert checkpoint.exists()
        workers = children(process.pid)
        assert workers  # two runs: forked training children
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert checkpoint.exists() and not (checkpoint.parent / records.RESULT).exists()


def test_labels_name_what_differs_among_the_runs_started_together():
    configs = [parse_config({**TINY, "seed": seed}) for seed in ("0", "1")]
    assert [label(c, configs) for c in configs] == ["ReLU, seed 0", "ReLU, seed 1"]
    assert label(configs[0]) == "ReLU"


def test_a_symlinked_record_file_is_neither_streamed_nor_listed(client, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    records.write_json(secret / records.CONFIG, parse_config({**TINY}).to_dict())
    (secret / records.METRICS).write_text('{"kind": "epoch", "secret": "outside"}\n')
    leak = tmp_path / "served" / "leak"
    leak.mkdir(parents=True)
    for name in (records.CONFIG, records.METRICS):
        (leak / name).symlink_to(secret / name)
    text = client.get("/api/events?runs=1/leak", headers=JSON).text
    assert "outside" not in text and "event: row" not in text
    assert client.get("/api/list", headers=JSON).json()["items"] == []


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"[" * 20_000 + b"]" * 20_000, 400, "the body is not valid JSON"),
        (b'{"runs": [{"activation": "' + b"x" * 100_000 + b'"}]}', 413, "larger than 65536"),
        (b'{"runs": [{"depth": 100000000000000000000}]}', 400, "depth must be 1 to 10000"),
    ],
    ids=["deep", "huge", "overflowing-depth"],
)
def test_odd_bodies_are_one_line_refusals(client, body, status, message):
    response = client.post("/api/runs", content=body, headers=JSON)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_a_nul_in_a_path_is_refused(client):
    response = client.get("/api/events?runs=0/evil%00x", headers=JSON)
    assert response.status_code == 400 and "NUL" in response.json()["error"]


@pytest.mark.parametrize(
    "option, message",
    [(["--port", "-1"], "--port must be 0"), (["--port", "70000"], "--port must be 0"),
     (["--workers", "0"], "--workers must be >= 1")],
)  # fmt: skip
def test_bad_live_options_exit_2_in_one_line(option, message):
    done = subprocess.run(
        [sys.executable, "-m", "vanishing", "live", "--no-browser", *option],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert message in done.stderr


def test_a_closing_server_ends_each_stream_saying_so(tmp_path):
    import asyncio
    import threading

    from vanishing.frontends.live.events import stream
    from vanishing.frontends.live.reading import Status

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    closing = threading.Event()

    async def read() -> list[str]:
        events = []
        async for event in stream([("0/run", run_dir)], lambda path: Status("running"), closing):
            events.append(event)
            closing.set()  # the server shuts down while the run still trains
        return events

    events = asyncio.run(read())
    assert events[-1] == 'event: end\ndata: {"runs": ["0/run"], "server": "stopped"}\n\n'


def test_listed_runs_are_named_by_what_sets_them_apart(client, tmp_path):
    served = tmp_path / "served"
    for name, width, lr in (("a", "64", "0.001"), ("b", "128", "0.001"), ("c", "64", "10")):
        config = parse_config({**TINY, "width": width, "lr": lr}).to_dict()
        (served / name).mkdir(parents=True)
        records.write_json(served / name / records.CONFIG, config)
    items = client.get("/api/list", headers=JSON).json()["items"]
    labels = {i["path"]: i["label"] for i in items if i["kind"] == "run"}
    assert labels == {
        "1/a": "ReLU, width 64, lr 0.001",
        "1/b": "ReLU, width 128, lr 0.001",
        "1/c": "ReLU, width 64, lr 10",
    }
