"""`vanishing export --to mlflow` and `--to wandb`: a trained run and a watch run, read back with
each tool's own reader (MlflowClient; `wandb leet inspect`, wandb's reader of its .wandb logs),
hold the records' numbers at their steps under the tags TensorBoard gets, and nothing contacts a
server."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import make_arrays, write_arrays
from export_records import SMALL, write_watch_run
from rank_records import ddp_run
from vanishing import records
from vanishing.data import datasets as data
from vanishing.frontends.cli import main
from vanishing.reporting.export import export_runs
from vanishing.reporting.verdict.judging import headline
from vanishing.settings.naming import label
from vanishing.training.loop import train

mlflow_client = pytest.importorskip("mlflow.tracking")
pytest.importorskip("wandb")

TRAINED, WATCHED = "relu-seed0", "watch/net"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A compare-like directory: one tiny trained run and a watch run one level deeper."""
    root = tmp_path_factory.mktemp("trackers") / "compare"
    folder = write_arrays(tmp_path_factory.mktemp("tiny"), make_arrays(), gz=True)
    train(SMALL, dataset=data.load_dataset(data_dir=folder, verify=False), run_dir=root / TRAINED)
    write_watch_run(root / WATCHED)
    return root


def expected(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} as the records hold them, written out by hand (not by the export's
    own `scalars`): losses, accuracy, the ratio and every per-layer list, nulls left out."""
    config = json.loads((run_dir / records.CONFIG).read_text())
    weighted = config.get("layers") or ["layer1", "layer2", "output"]
    activations = config.get("layer_labels") or ["layer1", "layer2"]
    found: dict[str, list[tuple[int, float]]] = {}

    def add(tag: str, step: int, value: Any) -> None:
        if value is not None:
            found.setdefault(tag, []).append((step, float(value)))

    for row in records.read_metrics(run_dir):
        step = row["step"]
        if row["kind"] == "probe":
            add("loss/probe", step, row["loss"])
            add("vanishing_ratio", step, row["vanishing_ratio"])
            for key, prefix, names in (
                ("grad_norms", "grad_norm", weighted),
                ("weight_norms", "weight_norm", weighted),
                ("update_ratio", "update_ratio", weighted),
                ("signal_norms", "signal_norm", activations),
                ("saturated_fraction", "saturated_fraction", activations),
                ("dead_fraction", "dead_fraction", activations),
            ):
                for name, value in zip(names, row.get(key) or [], strict=False):
                    add(f"{prefix}/{name}", step, value)
        else:
            add("loss/train", step, row["train_loss"])
            add("loss/test", step, row.get("test_loss"))
            add("accuracy/test", step, row.get("test_accuracy"))
            add("logged/lr", step, row.get("lr"))
            for name, value in zip(activations, row.get("dead_fraction") or [], strict=False):
                add(f"dead_fraction_epoch/{name}", step, value)
    return found


def test_expected_holds_what_the_fixture_recorded(runs):
    """The hand-made expectation is not empty where it matters (a check on the check)."""
    trained, watched = expected(runs / TRAINED), expected(runs / WATCHED)
    assert [s for s, _ in trained["loss/train"]] == [10, 20]
    assert len(trained["grad_norm/layer1"]) == len(trained["signal_norm/layer2"]) > 2
    assert watched["loss/probe"] == [(0, 2.0), (100, 1.9)]  # step 200's null left out
    assert watched["dead_fraction/conv2"] == [(0, 0.0), (100, 1.0), (200, 1.0)]


# MLflow


@pytest.fixture(scope="module")
def mlflow_store(runs) -> tuple[Any, str, str]:
    """The default export (sqlite:///DIR/mlflow.db), made twice: (client, URI, what it printed).
    A new sqlite store costs MLflow seconds (its migrations): made once for these tests."""
    argv = ["export", str(runs), "--to", "mlflow"]
    for _ in range(2):  # the second export replaces the first's runs
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            assert main(argv) == 0
    uri = f"sqlite:///{(runs / 'mlflow.db').resolve()}"
    return mlflow_client.MlflowClient(tracking_uri=uri), uri, printed.getvalue()


def mlflow_runs(client: Any, experiment: str = "vanishing") -> dict[str, Any]:
    """The experiment's active runs by their `vanishing.name` tag."""
    found = client.get_experiment_by_name(experiment)
    return {r.data.tags["vanishing.name"]: r for r in client.search_runs([found.experiment_id])}


def history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_mlflow_says_where_and_how_to_open(runs, mlflow_store):
    _, uri, printed = mlflow_store
    assert printed.splitlines() == [
        f"2 run(s) written to the MLflow store {uri}, experiment 'vanishing'",
        f"open them with: mlflow ui --backend-store-uri {uri}",
    ]


@pytest.mark.parametrize("name", [TRAINED, WATCHED])
def test_mlflow_metrics_equal_the_records_at_their_steps(runs, mlflow_store, name):
    client, _, _ = mlflow_store
    run = mlflow_runs(client)[name]
    want = expected(runs / name)
    assert set(run.data.metrics) == set(want)  # every tag, nothing else
    for tag, points in want.items():
        assert history(client, run.info.run_id, tag) == points, tag


def test_mlflow_run_names_params_verdict_and_a_second_export_replacing_the_first(
    runs, mlflow_store
):
    client, _, _ = mlflow_store
    found = mlflow_runs(client)
    assert sorted(found) == [TRAINED, WATCHED]  # two exports, two active runs
    configs = {n: json.loads((runs / n / records.CONFIG).read_text()) for n in found}
    for name, run in found.items():
        others = [c for n, c in configs.items() if n != name]
        assert run.info.run_name == label(configs[name], others)
        # the watch run wrote no result.json: records of a run that did not end
        assert run.info.status == {TRAINED: "FINISHED", WATCHED: "KILLED"}[name]
        assert run.data.tags["mlflow.note.content"] == headline(runs / name)
    trained = found[TRAINED].data.params
    assert trained["activation"] == "relu" and trained["hidden"] == "[32, 16]"
    assert trained["lr"] == json.dumps(configs[TRAINED]["lr"])
    watched = found[WATCHED].data.params
    assert watched["layers"] == '["conv1", "conv2", "fc"]' and watched["optimizer"] == "null"
    assert watched["description"] == configs[WATCHED]["description"]  # a string as it is
    experiment = client.get_experiment_by_name("vanishing")
    deleted = client.search_runs([experiment.experiment_id], run_view_type=2)  # DELETED_ONLY
    assert sorted(r.data.tags["vanishing.name"] for r in deleted) == [TRAINED, WATCHED]
    assert experiment.artifact_location == (runs / "mlartifacts").resolve().as_uri()


def test_mlflow_file_store_and_experiment_name(runs, tmp_path, capsys):
    store = tmp_path / "mlruns"
    assert main(["export", str(runs / "watch"), "--to", "mlflow", "--uri", str(store),
                 "--experiment", "mine"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {store}" in out
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # set for the export's own calls only
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        client = mlflow_client.MlflowClient(tracking_uri=store.as_uri())
        (run,) = mlflow_runs(client, "mine").values()
        assert run.data.tags["vanishing.name"] == "net"  # a run given: its own name
        assert history(client, run.info.run_id, "grad_norm/conv1") == [
            (0, 1e-5),
            (100, 101e-5),
            (200, 201e-5),
        ]


def test_a_failed_run_is_exported_with_its_error_in_place_of_a_verdict(runs, tmp_path):
    """A sweep's failed run (its result.json holds its error) keeps its rows, is marked failed
    in both trackers, and no verdict is made up for it (the report leaves it out)."""
    failed = tmp_path / "runs" / "failed"
    shutil.copytree(runs / TRAINED, failed)
    config = records.read_json(failed / records.CONFIG)
    result = {"status": "failed", "error": "RuntimeError: boom", "config": config}
    records.write_json(failed / records.RESULT, result)
    said = "The run failed (RuntimeError: boom): no verdict."
    store = tmp_path / "mlruns"  # a file store: quicker to make than a sqlite store
    export_runs([failed], to="mlflow", uri=str(store))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        client = mlflow_client.MlflowClient(tracking_uri=store.as_uri())
        (run,) = mlflow_runs(client).values()
        assert run.info.status == "FAILED"
        assert run.data.tags["mlflow.note.content"] == said
        assert history(client, run.info.run_id, "loss/train") == expected(failed)["loss/train"]
    ((_, out),) = export_runs([failed], to="wandb", wandb_dir=tmp_path).runs
    logged = inspect(Path(out))
    (started,) = [r["run"] for r in logged if r["type"] == "run"]
    assert started["notes"] == said and started["tags"] == ["failed"]
    (exit,) = [r["exit"] for r in logged if r["type"] == "exit"]
    assert exit.get("exit_code") == 1


# A data-parallel run's ranks


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> Path:
    """A data-parallel run of 2 ranks: the combined run in D, each rank's in D/rank{r}."""
    return ddp_run(tmp_path_factory.mktemp("ddp") / "job")


def test_mlflow_ranks_are_child_runs_of_the_combined_run_without_a_verdict(ddp, tmp_path):
    store = tmp_path / "mlruns"  # a file store: quicker to make than a sqlite store
    export_runs([ddp], to="mlflow", uri=str(store))
    export_runs([ddp], to="mlflow", uri=str(store))  # again: the parent is the new run
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        client = mlflow_client.MlflowClient(tracking_uri=store.as_uri())
        found = mlflow_runs(client)
    assert sorted(found) == ["job", "job/rank0", "job/rank1"]
    job = found["job"]
    assert "mlflow.parentRunId" not in job.data.tags
    assert job.data.tags["mlflow.note.content"] == headline(ddp)
    for r in (0, 1):
        rank = found[f"job/rank{r}"]
        assert rank.data.tags["mlflow.parentRunId"] == job.info.run_id
        assert rank.data.tags["mlflow.note.content"] == (
            f"rank {r} of 2 of {job.info.run_name}: its own signals and unit statistics; "
            "the verdict is the run's"
        )
        probes = [row for row in records.read_metrics(ddp / f"rank{r}") if row["kind"] == "probe"]
        assert len(probes) == 3
        assert history(client, rank.info.run_id, "signal_norm/2") == [
            (row["step"], row["signal_norms"][1]) for row in probes
        ]  # the rank's own signals


def test_wandb_ranks_are_grouped_with_the_combined_run_without_a_verdict(ddp, tmp_path):
    result = export_runs([ddp], to="wandb", wandb_dir=tmp_path)
    places = [(Path(run_dir).name, Path(out)) for run_dir, out in result.runs]
    started = {n: next(r["run"] for r in inspect(p) if r["type"] == "run") for n, p in places}
    assert sorted(started) == ["job", "rank0", "rank1"]
    job = started["job"]
    assert job["notes"] == headline(ddp) and job.get("job_type", "") == ""
    group = job["run_group"]
    assert group and group == job["run_id"]  # the combined run's id names the group
    for r in (0, 1):
        rank = started[f"rank{r}"]
        assert rank["run_group"] == group and rank["job_type"] == "rank"
        assert rank["notes"] == (
            f"rank {r} of 2 of {job['display_name']}: its own signals and unit statistics; "
            "the verdict is the run's"
        )


# W&B


def inspect(run_dir: Path) -> list[dict[str, Any]]:
    """The records of an offline run's .wandb log, as wandb's own reader prints them."""
    done = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def wandb_export(runs, tmp_path_factory) -> tuple[Path, dict[str, Path], float]:
    """Two exports of the two runs: (W&B directory, offline run directory by name, seconds
    the second took)."""
    target = tmp_path_factory.mktemp("wandb")
    export_runs([runs], to="wandb", wandb_dir=target)
    start = time.perf_counter()
    result = export_runs([runs], to="wandb", wandb_dir=target)
    seconds = time.perf_counter() - start
    assert result.where == target / "wandb" and not result.notes
    names = {str(Path(run_dir).relative_to(runs)): Path(out) for run_dir, out in result.runs}
    return target / "wandb", names, seconds


def test_wandb_writes_one_offline_run_per_run_and_replaces_on_a_second_export(wandb_export):
    where, names, seconds = wandb_export
    assert sorted(names) == [TRAINED, WATCHED]
    assert sorted(p.name for p in where.glob("offline-run-*")) == sorted(
        p.name for p in names.values()
    )  # the first export's runs replaced
    for out in names.values():
        assert out.parent == where and len(list(out.glob("run-*.wandb"))) == 1
    assert seconds < 30, f"exporting 2 runs to W&B took {seconds:.1f} s"


@pytest.mark.parametrize("name", [TRAINED, WATCHED])
def test_wandb_history_config_and_name_read_back(runs, wandb_export, name):
    _, names, _ = wandb_export
    logged = inspect(names[name])
    (run,) = [r["run"] for r in logged if r["type"] == "run"]
    config = json.loads((runs / name / records.CONFIG).read_text())
    assert {k: v for k, v in run["config"]["update"].items() if k != "_wandb"} == config
    assert run["project"] == "vanishing"
    other = WATCHED if name == TRAINED else TRAINED
    others = [json.loads((runs / other / records.CONFIG).read_text())]
    assert run["display_name"] == label(config, others)
    rows = [r["history"] for r in logged if r["type"] == "history"]
    steps = [row["step"]["num"] for row in rows]
    assert steps == sorted(set(steps))  # one row per step, in order
    got: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row["item"].items():
            if not key.startswith(("_", "activation/")):
                got.setdefault(key, []).append((row["item"]["_step"], value))
    assert got == expected(runs / name)


def test_wandb_activation_histograms_are_the_recorded_bins(runs, wandb_export):
    _, names, _ = wandb_export
    rows = [r["history"]["item"] for r in inspect(names[WATCHED]) if r["type"] == "history"]
    probes = [r for r in records.read_metrics(runs / WATCHED) if r["kind"] == "probe"]
    assert [r["_step"] for r in rows] == [p["step"] for p in probes]  # the epoch row: step 200
    for row, probe in zip(rows, probes, strict=True):
        for layer, recorded in zip(["conv1", "conv2"], probe["activation_histogram"], strict=True):
            assert row[f"activation/{layer}._type"] == "histogram"
            assert row[f"activation/{layer}.values"] == recorded["counts"]
            assert row[f"activation/{layer}.bins"] == pytest.approx(recorded["edges"], rel=1e-12)


# Nothing contacts a network; nothing is imported before it is needed


GUARD = """
import socket, sys, traceback
from vanishing.frontends.cli import main

tried = []
connect = socket.socket.connect

def local_only(self, address):
    if self.family != socket.AF_UNIX:
        tried.append(f"{address} from\\n{''.join(traceback.format_stack(limit=12))}")
        raise OSError("the export tried the network")
    return connect(self, address)

socket.socket.connect = local_only
runs, out = sys.argv[1:]
codes = [
    main(["export", runs, "--to", "mlflow", "--uri", f"sqlite:///{out}/mlflow.db"]),
    main(["export", runs, "--to", "wandb", "--dir", out]),
]
print(codes, tried)
"""


def test_no_export_opens_a_network_connection(runs, tmp_path):
    """In a process of its own, as a user runs it (no test or CI variables, which MLflow reads
    as "no telemetry"), any connection but a Unix socket (wandb's own service) raises and is
    recorded with its stack: MLflow 3's telemetry, at import, was one. The wandb-core child is
    given a proxy and a W&B server that go nowhere: offline, it needs neither."""
    quiet = ("PYTEST_", "CI", "GITHUB_", "WANDB_", "MLFLOW_", "DO_NOT_TRACK")
    env = {k: v for k, v in os.environ.items() if not k.startswith(quiet)}
    unreachable = "http://10.255.255.1:9"
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "WANDB_BASE_URL"):
        env[key] = unreachable
    done = subprocess.run(
        [sys.executable, "-c", GUARD, str(runs / "watch"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[0, 0] []", done.stdout
    logs = " ".join(p.read_text(errors="replace") for p in tmp_path.rglob("debug*.log"))
    assert "10.255.255.1" not in logs


def test_importing_vanishing_imports_no_tracker():
    code = (
        "import sys, vanishing, vanishing.reporting.export, vanishing.frontends.cli\n"
        "print(sorted({'mlflow', 'wandb', 'tensorboardX'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# Bad input: one line, exit 2


@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("http", ["--to", "mlflow", "--uri", "http://localhost:5000"],
         "--uri http://localhost:5000: not a local MLflow store; give sqlite:///PATH"),
        ("https", ["--to", "mlflow", "--uri", "https://mlflow.example.com"],
         "--uri https://mlflow.example.com: not a local MLflow store; "),
        ("databricks", ["--to", "mlflow", "--uri", "databricks"], None),
        ("database server", ["--to", "mlflow", "--uri", "postgresql://u@db/mlflow"], None),
        ("no mlflow", ["--to", "mlflow"],
         "mlflow export needs the optional extra: pip install 'vanishing[mlflow]'"),
        ("no wandb", ["--to", "wandb"],
         "wandb export needs the optional extra: pip install 'vanishing[wandb]'"),
        ("uri with tensorboard", ["--to", "tensorboard", "--uri", "sqlite:///x.db"],
         "--uri applies to --to mlflow only"),
        ("experiment with wandb", ["--to", "wandb", "--experiment", "x"],
         "--experiment applies to --to mlflow only"),
        ("empty experiment", ["--to", "mlflow", "--experiment", " "],
         "--experiment: give a name"),
        ("dir with mlflow", ["--to", "mlflow", "--dir", "x"], "--dir applies to --to wandb only"),
        ("logdir with wandb", ["--to", "wandb", "--logdir", "x"],
         "--logdir applies to --to tensorboard only"),
        ("unwritable store", ["--to", "mlflow", "--uri", "sqlite:///{file}/mlflow.db"],
         "cannot write to the MLflow store sqlite:///{file}/mlflow.db: "),
        ("not a database", ["--to", "mlflow", "--uri", "sqlite:///{file}"],
         "cannot write to the MLflow store sqlite:///{file}: file is not a database"),
        ("directory as database", ["--to", "mlflow", "--uri", "sqlite:///{dir}"],
         "cannot write to the MLflow store sqlite:///{dir}: {dir} is a directory, not a "
         "database file"),
        ("no database folder", ["--to", "mlflow", "--uri", "sqlite:///{dir}/no/x.db"],
         "cannot write to the MLflow store sqlite:///{dir}/no/x.db: no such directory: {dir}/no"),
        ("file store in a file", ["--to", "mlflow", "--uri", "{file}"],
         "cannot write to the MLflow store {file}: {file} is not a directory"),
        ("no file store folder", ["--to", "mlflow", "--uri", "{dir}/no/mlruns"],
         "cannot write to the MLflow store {dir}/no/mlruns: no such directory: {dir}/no"),
        ("unwritable W&B", ["--to", "wandb", "--dir", "{file}/w"],
         "cannot write to the W&B directory {file}/w/wandb: "),
        ("format", ["--to", "csv"],
         "unknown export format 'csv'; choose from: tensorboard, mlflow, wandb"),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line_exit_2(runs, tmp_path, capsys, monkeypatch, case, extra, message):
    in_the_way = tmp_path / "file"
    in_the_way.write_text("in the way")
    folder = str(tmp_path.resolve())
    argv = [part.replace("{file}", str(in_the_way)).replace("{dir}", folder) for part in extra]
    if case.startswith("no "):
        module = case.removeprefix("no ")
        for name in (module, f"{module}.tracking") if module == "mlflow" else (module,):
            monkeypatch.setitem(sys.modules, name, None)  # import fails, as uninstalled
    monkeypatch.chdir(tmp_path)  # a relative x.db or x, were one made, would be seen here
    before = sorted(p.name for p in runs.iterdir())
    code = main(["export", str(runs), *argv])
    out, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and not out, (out, err)  # no warnings, no retries
    if message is None:
        message = f"--uri {argv[-1]}: not a local MLflow store; "
    message = message.replace("{file}", str(in_the_way)).replace("{dir}", folder)
    assert err.startswith(f"vanishing export: error: {message}")
    assert sorted(p.name for p in runs.iterdir()) == before  # nothing written beside the runs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
