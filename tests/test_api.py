"""The Python API on a tiny data set: what it returns is what the records say, it shows itself in
a notebook with the figures inline, and a wrong input fails with the command line's message."""

from __future__ import annotations

import ast
import csv
import math
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import vanishing
from conftest import ENV, make_arrays, write_arrays
from vanishing import records
from vanishing.errors import UsageError
from vanishing.frontends import api
from vanishing.frontends.cli import main
from vanishing.reporting.formats import fixed
from vanishing.settings import naming
from vanishing.settings.config import TrainConfig

TINY = {
    "verify": False,
    "batch_size": 32,
    "probe_every": 3,
    "probe_size": 32,
    "device": "cpu",
    "hidden": (16, 8),
    "epochs": 1,
}
URL = re.compile(r"https?://")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_arrays(tmp_path_factory.mktemp("data") / "tiny", make_arrays(), gz=True)


@pytest.fixture(scope="module")
def compared(data_dir, tmp_path_factory):
    """One tiny compare for the tests that read it: ReLU and sigmoid, seeds 0 and 1."""
    out = tmp_path_factory.mktemp("compare")
    return vanishing.compare(
        activations=["relu", "sigmoid"], seeds=[0, 1], out=out, workers=1, data_dir=data_dir, **TINY
    )


def same(a, b) -> bool:
    """Records equal, NaN (written as null, read back as NaN) equal to itself."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == b


def test_import_is_light_and_names_resolve():
    code = (
        "import sys, vanishing\n"
        "names = dir(vanishing)\n"
        "assert {'train', 'compare', 'sweep', 'report', 'watch'} <= set(names), names\n"
        "vanishing.compare, vanishing.report, vanishing.train, vanishing.sweep\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'scipy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        vanishing.nothing  # noqa: B018


def test_vanishing_watch_watches_a_model_into_its_records(tmp_path):
    """`vanishing.watch`, loaded on first use, is the watch: a step of a model is a probe row."""
    import torch
    from torch.nn import functional as F

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    with vanishing.watch(model, every=1, out=tmp_path) as w:
        F.cross_entropy(model(torch.ones(5, 3)), torch.zeros(5, dtype=torch.long)).backward()
    (row,) = records.read_metrics(tmp_path)
    assert row["kind"] == "probe" and row["step"] == 0 and len(row["grad_norms"]) == 2
    assert w.result is not None and w.result.steps == 1 and w.result.run_dir == str(tmp_path)


def test_compare_returns_the_records(compared):
    names = [d.name for d in compared.run_dirs]  # named by their settings, in order
    prefixes = [
        f"{a}-h16-8-default-adam-lr0.001-s{s}-" for a in ("relu", "sigmoid") for s in (0, 1)
    ]
    assert [n[: len(p)] for n, p in zip(names, prefixes, strict=True)] == prefixes
    for result, run_dir in zip(compared.results, compared.run_dirs, strict=True):
        assert same(result.to_dict(), records.read_json(run_dir / records.RESULT))
    assert compared.report.html_path == compared.out / "report.html"
    assert compared.report.html_path.is_file() and compared.report.markdown_path.is_file()
    assert (compared.out / "summary.csv").is_file()


def test_compare_shows_its_table_verdicts_and_figure(compared):
    page = compared._repr_html_()
    with open(compared.out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:  # each activation's mean accuracy and loss, as the table writes them
        assert fixed(100 * float(row["test_accuracy_mean"]), 2) in page
        assert fixed(float(row["test_loss_mean"]), 4) in page
    assert "<table" in page and "ReLU" in page and "Sigmoid" in page
    assert "<figure" in page and "data:image/png;base64," in page
    assert not URL.search(page)
    assert str(compared.report.html_path) in page


def test_train_returns_its_result_and_shows_it(data_dir, tmp_path):
    config = TrainConfig(activation="sigmoid", hidden=(16, 8), epochs=1, batch_size=32)
    result = vanishing.train(
        config, out=tmp_path, data_dir=data_dir, verify=False, device="cpu", probe_size=32
    )
    run_dir = tmp_path / naming.run_name(
        TrainConfig(activation="sigmoid", hidden=(16, 8), epochs=1, batch_size=32, device="cpu",
                    probe_size=32)
    )  # fmt: skip
    assert result.run_dir == str(run_dir)
    written = records.read_json(run_dir / records.RESULT)
    assert same(result.to_dict(), written)
    assert written["config"]["hidden"] == [16, 8] and written["config"]["epochs"] == 1
    assert written["config"]["probe_size"] == 32  # a setting given beside the config wins
    page = result._repr_html_()
    assert f"{100 * written['test_accuracy']:.2f}" in page
    assert f"{written['vanishing_ratio_init']:.3g}" in page and str(run_dir) in page


def test_a_shape_given_beside_a_config_replaces_its_widths(data_dir, tmp_path):
    config = TrainConfig(activation="tanh", hidden=(16, 8), epochs=1, batch_size=32)
    result = vanishing.train(
        config, depth=1, width=4, out=tmp_path, data_dir=data_dir, verify=False, device="cpu"
    )
    assert result.config["hidden"] == [4] and result.config["activation"] == "tanh"


def test_the_api_goes_through_neither_argparse_nor_the_cli():
    """The API is an adapter over the jobs, as the command line is: it imports neither."""
    tree = ast.parse(Path(api.__file__).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "vanishing.jobs.train" in imported or "vanishing.jobs" in imported, imported
    assert not [m for m in imported if m == "argparse" or m.startswith("vanishing.frontends.cli")]


def test_report_is_the_page_with_figures_inline(compared, tmp_path):
    written = vanishing.report(*compared.run_dirs, out=tmp_path / "page.html")
    assert written.path == written.html_path == tmp_path / "page.html"
    assert written.markdown_path == tmp_path / "page.md" and written.markdown_path.is_file()
    html_path, markdown_path = written  # unpacks as write_report's pair always did
    page = written._repr_html_()
    assert page.startswith('<div class="vanishing-report"><style>')
    assert "<h1>Vanishing gradients: Sigmoid, ReLU on mnist</h1>" in page
    assert page.count("data:image/png;base64,") >= 3 and not URL.search(page)
    assert "<body" not in page and "<html" not in page
    style = page[page.index("<style>") : page.index("</style>")]
    # every rule is scoped to the cell: nothing restyles the notebook around it
    rules = re.findall(r"([^{}]+)\{", style.removeprefix("<style>"))
    selectors = [s.strip() for rule in rules for s in rule.split(",")]
    assert selectors and all(s.startswith(".vanishing-report") for s in selectors), selectors


def test_sweep_runs_the_grid(data_dir, tmp_path):
    swept = vanishing.sweep(
        out=tmp_path / "s",
        activations=["relu", "sigmoid"],
        seeds=[0],
        depths=[1, 2],
        widths=[8],
        epochs=1,
        workers=1,
        data_dir=data_dir,
        **{k: v for k, v in TINY.items() if k not in ("hidden", "epochs")},
    )
    assert len(swept.run_dirs) == len(swept.results) == 4
    for result, run_dir in zip(swept.results, swept.run_dirs, strict=True):
        assert same(result.to_dict(), records.read_json(run_dir / records.RESULT))
    assert sorted(len(r.config["hidden"]) for r in swept.results) == [1, 1, 2, 2]
    assert (swept.out / "points.csv").is_file()
    page = swept._repr_html_()
    assert "<table" in page and not URL.search(page)
    for result in swept.results:
        assert result.run_dir is not None and result.run_dir.startswith(str(swept.out))


@pytest.mark.parametrize(
    ("call", "argv"),
    [
        (lambda: vanishing.compare(activations=["nope"]), ["compare", "--activations", "nope"]),
        (lambda: vanishing.compare(seeds=[0, 0]), ["compare", "--seeds", "0,0"]),
        (lambda: vanishing.compare(seeds="a"), ["compare", "--seeds", "a"]),
        (lambda: vanishing.train(momentum=0.9), ["train", "--momentum", "0.9"]),
        (lambda: vanishing.train(hidden=[0]), ["train", "--hidden", "0"]),
        (lambda: vanishing.train(lr=-1.0), ["train", "--lr", "-1"]),
        (lambda: vanishing.sweep(preset="nope"), ["sweep", "--preset", "nope"]),
        (
            lambda: vanishing.sweep(preset="depth", config="x.toml"),
            ["sweep", "--preset", "depth", "--config", "x.toml"],
        ),
        (lambda: vanishing.sweep(backend="spark"), ["sweep", "--backend", "spark"]),
        (lambda: vanishing.compare(workers="x"), ["compare", "--workers", "x"]),
        (lambda: vanishing.compare(workers=0), ["compare", "--workers", "0"]),
        (
            lambda: vanishing.sweep(hidden=[8], depths=[2]),
            ["sweep", "--hidden", "8", "--depths", "2"],
        ),
        (lambda: vanishing.sweep(depths=[]), ["sweep", "--depths", ""]),
        (
            lambda: vanishing.train(optimizer="SGD", momentum=0.5),
            ["train", "--optimizer", "SGD", "--momentum", "0.5"],
        ),
    ],
)
def test_wrong_input_fails_with_the_commands_message(call, argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written; if it were, not into the project
    with pytest.raises(UsageError) as raised:
        call()
    assert main(argv) == 2
    message = str(raised.value).removeprefix("sweep(): ")  # a sweep's settings name their source
    assert capsys.readouterr().err.strip().endswith(message)
    assert not list(tmp_path.iterdir())


def test_wrong_python_values_name_the_option():
    with pytest.raises(UsageError, match="^epochs: expected int, got 'two'$"):
        vanishing.train(epochs="two")
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'activation'.*activations"):
        vanishing.compare(activation="relu")  # compare takes a list
    with pytest.raises(UsageError, match="give at least one run or sweep directory"):
        vanishing.report()


def test_train_runs_from_a_thread_other_than_the_main_one(data_dir, tmp_path):
    """Signals reach the main thread only: from another one (a notebook's worker, a web app)
    the run trains without installing handlers."""
    box: list = []

    def job() -> None:
        try:
            box.append(vanishing.train(out=tmp_path, data_dir=data_dir, **TINY))
        except BaseException as e:  # the test reports it
            box.append(e)

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    (result,) = box
    assert isinstance(result, records.RunResult), result
    assert result.status == "ok"
