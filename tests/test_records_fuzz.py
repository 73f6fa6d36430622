"""Damaged records, for every reader: `report`, `export`, the live page's list and event stream.
Each damage of `damage.CATALOGUE`, and any JSON value hypothesis draws in any key of any
record, or any bytes cut, flipped or added, ends in the run read or skipped with one line
naming it, the other runs read as before: never a traceback, never a hung stream."""

from __future__ import annotations

import io
import shutil
import tempfile
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from damage import CATALOGUE, FILES, Damage, json_values, set_in_rows, set_key
from test_live import sse_events
from vanishing import records
from vanishing.frontends import live
from vanishing.frontends.cli import main
from vanishing.settings.config import TrainConfig
from vanishing.training.loop import train

TOKEN = "t" * 32
WITNESS, DAMAGED = "witness", "damaged"
STREAM_SECONDS = 20  # a stream that has not ended by then hangs


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny_data) -> Path:
    """Two finished runs: the one to damage and a witness that must read as before."""
    root = tmp_path_factory.mktemp("pristine")
    for name, activation in ((DAMAGED, "relu"), (WITNESS, "sigmoid")):
        config = TrainConfig(
            activation=activation,
            hidden=(16, 8),
            epochs=2,
            batch_size=32,
            probe_every=4,
            probe_size=32,
            device="cpu",
        )
        train(config, dataset=tiny_data, run_dir=root / name)
    return root


def damaged_copies(pristine: Path, damages: list[Damage]) -> Path:
    """A tree with the witness and one copy of the run to damage per damage, damaged."""
    root = Path(tempfile.mkdtemp(prefix="damaged-"))
    runs = root / "runs"
    shutil.copytree(pristine / WITNESS, runs / WITNESS)
    for index, damage in enumerate(damages):
        shutil.copytree(pristine / DAMAGED, runs / f"{DAMAGED}-{index}")
        damage(runs / f"{DAMAGED}-{index}")
    return root


def command(*argv: str) -> tuple[int, list[str]]:
    """`vanishing ARGV` in this process: its exit code and the lines it wrote to stderr. An
    exception escaping the command fails the test with its traceback."""
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue().splitlines()


def assert_one_line_per_skipped_run(lines: list[str], runs: Path, count: int) -> None:
    """Every line the command wrote is a note on one damaged run (it was skipped, or has not
    finished), at most one per run; none is on the witness."""
    named = []
    for line in lines:
        if "have not finished" in line:
            continue
        assert len(line) < 1000, line[:200]  # a value of any size is quoted cut short
        run, _, reason = line.partition(": ")
        assert Path(run).parent == runs and Path(run).name.startswith(DAMAGED), line
        assert reason.endswith("; skipped") and "Traceback" not in reason, line
        named.append(run)
    assert len(named) == len(set(named)) <= count


def read_events(client: TestClient, run: str) -> list[str]:
    """The names of the stream's events for one run, up to `end` (or the stream's own end)."""
    with client.stream("GET", f"/api/events?runs={run}&token={TOKEN}") as response:
        if response.status_code != 200:
            return [f"status {response.status_code}"]
        return [str(name) for name, _ in sse_events(response)]


def check_live(root: Path, count: int) -> None:
    """The live page lists the witness whatever the damaged runs hold, and each damaged run's
    stream ends, within STREAM_SECONDS."""
    app = live.create_app([root / "runs"], root / "out", token=TOKEN)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        response = client.get(f"/api/list?token={TOKEN}")
        assert response.status_code == 200, response.text
        listed = [item["path"] for item in response.json()["items"]]
        assert f"1/{WITNESS}" in listed
        found: list[list[str]] = []

        def read_all() -> None:
            for index in range(count):
                found.append(read_events(client, f"1/{DAMAGED}-{index}"))

        reader = threading.Thread(target=read_all, daemon=True)
        reader.start()
        reader.join(STREAM_SECONDS)
        assert len(found) == count, f"the stream of {DAMAGED}-{len(found)} did not end"
        for index, names in enumerate(found):
            assert names[-1] == "end" or names[0].startswith("status 4"), (index, names)


def check_every_reader(pristine: Path, damages: list[Damage]) -> None:
    """Each damage on its own copy of the run, all beside the witness: `report`, `export` and
    the live page read them at once."""
    root = damaged_copies(pristine, damages)
    try:
        runs = root / "runs"
        code, lines = command("report", str(runs), "--out", str(root / "report.html"))
        assert code == 0, lines
        assert_one_line_per_skipped_run(lines, runs, len(damages))
        assert "sigmoid" in (root / "report.md").read_text().lower()  # the witness is reported
        code, lines = command("export", str(runs), "--to", "tensorboard", "--logdir", str(root))
        assert code == 0, lines
        assert_one_line_per_skipped_run(lines, runs, len(damages))
        assert list((root / WITNESS).glob("events.out.tfevents.*"))
        check_live(root, len(damages))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def part_of_catalogue(prefix: str) -> list[str]:
    return [name for name in CATALOGUE if name.startswith(prefix)]


PARTS = ("config.json ", "result.json ", "config ", "result ", "metrics.jsonl ", "rows ")


@pytest.mark.parametrize("part", PARTS)
def test_each_damage_is_read_or_skipped_with_one_line(pristine, part):
    names = part_of_catalogue(part)
    assert names
    check_every_reader(pristine, [CATALOGUE[name] for name in names])


def test_the_parts_cover_the_catalogue():
    assert sorted(n for part in PARTS for n in part_of_catalogue(part)) == sorted(CATALOGUE)
    assert len(CATALOGUE) > 150


CONFIG_KEYS = [
    "activation", "hidden", "init", "optimizer", "lr", "momentum", "seed", "dataset", "norm",
    "batch_size", "epochs", "probe_every", "probe_size", "residual", "init_gain", "source",
]  # fmt: skip
RESULT_KEYS = [
    "status", "config", "test_accuracy", "test_loss", "history", "grad_norms_init", "steps",
    "signal_norms_init", "grad_norms_final", "dead_fraction", "saturated_fraction", "error",
    "diverged_step", "norms_before_divergence", "vanishing_ratio_init", "versions",
]  # fmt: skip
ROW_KEYS = [
    "kind", "step", "epoch", "grad_norms", "signal_norms", "activation_std", "dead_fraction",
    "saturated_fraction", "activation_histogram", "update_ratio", "train_loss", "loss",
    "test_accuracy", "weight_norms", "vanishing_ratio",
]  # fmt: skip
FUZZ = settings(
    max_examples=3,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is never a matter of luck
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def keyed(where: str, key: str, value: object) -> Damage:
    return {
        "config": lambda: set_key(records.CONFIG, key, value),
        "result": lambda: set_key(records.RESULT, key, value),
        "rows": lambda: set_in_rows(key, value),
    }[where]()


@FUZZ
@given(
    st.lists(
        st.builds(
            keyed,
            st.sampled_from(["config", "result", "rows"]),
            st.sampled_from(CONFIG_KEYS + RESULT_KEYS + ROW_KEYS) | st.text(max_size=6),
            json_values,
        ),
        min_size=20,
        max_size=20,
    )
)
def test_any_value_in_any_key_is_read_or_skipped_with_one_line(pristine, damages):
    check_every_reader(pristine, damages)


def spoiled(name: str, how: str, where: float, byte: int) -> Damage:
    """A record's bytes cut, flipped or added to at a fraction `where` of its length."""

    def damage(run_dir: Path) -> None:
        path = run_dir / name
        data = path.read_bytes()
        at = int(where * len(data))
        if how == "cut":
            data = data[:at]
        elif how == "flip":
            data = data[:at] + bytes([data[at] ^ (byte or 1)]) + data[at + 1 :] if data else data
        else:
            data = data[:at] + bytes([byte]) * 3 + data[at:]
        path.write_bytes(data)

    return damage


@FUZZ
@given(
    st.lists(
        st.builds(
            spoiled,
            st.sampled_from(FILES),
            st.sampled_from(["cut", "flip", "insert"]),
            st.floats(min_value=0, max_value=0.999),
            st.integers(min_value=0, max_value=255),
        ),
        min_size=20,
        max_size=20,
    )
)
def test_any_bytes_cut_flipped_or_added_are_read_or_skipped_with_one_line(pristine, damages):
    check_every_reader(pristine, damages)


def test_report_and_export_name_each_skipped_run(pristine, tmp_path, capsys):
    """`report` and `export` leave out a run they cannot use with one line on stderr that names
    it and says why, and read the others."""
    runs = tmp_path / "runs"
    shutil.copytree(pristine, runs)
    set_key(records.CONFIG, "activation", ["relu"])(runs / DAMAGED)
    expected = f"{runs / DAMAGED}: config.json: activation: expected str, got ['relu']; skipped"
    assert main(["report", str(runs), "--out", str(tmp_path / "report.html")]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [expected] and "report in" in out
    assert main(["export", str(runs), "--to", "tensorboard", "--logdir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [expected] and out.startswith("1 run(s) written")


def test_a_failed_run_is_exported_and_a_watched_runs_own_settings_are_read(
    pristine, tmp_path, capsys
):
    """A sweep's failed run (its result.json holds its error, not a finished run's fields) keeps
    its rows in an export; a watched model's config with the user's own `settings=` values of
    any type (a null momentum, an optimizer described as a table) is reported, not skipped."""
    import torch

    import vanishing

    runs = tmp_path / "runs"
    shutil.copytree(pristine / DAMAGED, runs / "failed")
    config = records.read_json(runs / "failed" / records.CONFIG)
    failed = {"status": "failed", "error": "RuntimeError: boom", "config": config}
    records.write_json(runs / "failed" / records.RESULT, failed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    own = {"momentum": None, "optimizer": {"name": "adamw"}, "every": None}
    with vanishing.watch(model, optimizer, out=runs / "watched", every=1, settings=own):
        for _ in range(3):
            optimizer.zero_grad()
            model(torch.randn(16, 4)).pow(2).mean().backward()
            optimizer.step()
    assert main(["export", str(runs), "--to", "tensorboard", "--logdir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("2 run(s) written")
    assert list((tmp_path / "failed").glob("events.out.tfevents.*"))
    assert main(["report", str(runs), "--out", str(tmp_path / "report.html")]) == 0
    out, err = capsys.readouterr()
    assert err == f"{runs / 'failed'}: the run failed (RuntimeError: boom); skipped\n"
    assert "watched" in (tmp_path / "report.md").read_text()
