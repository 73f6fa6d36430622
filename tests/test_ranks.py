"""A data-parallel watched run's rank directories (SPEC23: D and D/rank0 .. D/rank{W-1}) as the
report, the live page and the export read them: one run with its ranks, never ranks as seeds; a
rank given alone is a run that says which rank it is; a damaged rank is skipped with a note."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from rank_records import ddp_run, last_probe
from vanishing import records, stats
from vanishing.frontends import live
from vanishing.frontends.cli import main
from vanishing.reporting import loading
from vanishing.reporting.formats import fixed, scientific
from vanishing.reporting.ranks import COMBINED, rank_table
from vanishing.reporting.results import make_points
from vanishing.reporting.verdict import judge

TOKEN = "t0ken"  # noqa: S105 - the tests' own
BASE = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """One 2-rank job's records (D, D/rank0, D/rank1), written once for the module."""
    return ddp_run(tmp_path_factory.mktemp("written") / "job")


@pytest.fixture
def job(written, tmp_path) -> Path:
    """A copy of the job's records, the test's own to damage: tmp_path/runs/job."""
    return Path(shutil.copytree(written, tmp_path / "runs" / "job"))


def test_the_written_records_are_a_data_parallel_jobs(job):
    """The fixture keeps SPEC23's layout and numbers: the combined run's signal is
    sqrt(sum_r s_r^2) / W of the ranks', its weight gradients every rank's."""
    combined = last_probe(job)
    ranks = [last_probe(job / f"rank{r}") for r in range(2)]
    for layer in range(2):
        signals = [row["signal_norms"][layer] for row in ranks]
        expected = math.sqrt(sum(s * s for s in signals)) / 2
        assert combined["signal_norms"][layer] == pytest.approx(expected, rel=1e-5)
    assert all(row["grad_norms"] == combined["grad_norms"] for row in ranks)
    assert ranks[0]["signal_norms"] != ranks[1]["signal_norms"]  # each rank's own batch
    assert records.read_json(job / "rank1" / records.CONFIG)["rank"] == 1


def test_ranks_are_attached_to_their_run_never_runs_of_their_own(job):
    for given in (job, job.parent):  # the run itself, or a directory holding it
        runs, notes = loading.load_runs([given])
        assert notes == []
        (run,) = runs
        assert run.path == job and run.world_size == 2 and run.rank is None
        assert [rank.path for rank in run.ranks] == [job / "rank0", job / "rank1"]
        assert [rank.rank for rank in run.ranks] == [0, 1]
        assert all(rank.ranks == [] for rank in run.ranks)
        (point,) = make_points(runs)
        assert len(point.runs) == 1  # one run, not a point of seeds
    # Given beside its run, in either order, a rank is still its run's, read once.
    for given in ([job, job / "rank1"], [job / "rank1", job]):
        runs, notes = loading.load_runs(given)
        assert [run.path for run in runs] == [job] and notes == []
        assert len(runs[0].ranks) == 2


def test_a_single_process_run_has_no_ranks(job):
    for r in range(2):
        shutil.rmtree(job / f"rank{r}")
    config = records.read_json(job / records.CONFIG)
    del config["world_size"], config["ranks"]
    records.write_json(job / records.CONFIG, config)
    (run,), notes = loading.load_runs([job])
    assert run.ranks == [] and run.world_size == 1 and notes == []


def test_a_rank_given_alone_is_a_run_that_says_which_rank(job, tmp_path, capsys):
    (run,), notes = loading.load_runs([job / "rank1"])
    assert notes == [] and run.rank == 1 and run.ranks == []
    (point,) = make_points([run])
    assert point.label == "Sequential (ReLU), rank 1 of 2"
    out = tmp_path / "page.html"
    assert main(["report", str(job / "rank1"), "--out", str(out)]) == 0
    text = out.with_suffix(".md").read_text()
    assert text.startswith("# Vanishing gradients: Sequential (ReLU), rank 1 of 2\n")
    assert "rank 1 of a job data-parallel over 2 processes (DistributedDataParallel)" in text
    assert "this rank's own" in text
    assert "## Ranks" not in text
    # Both ranks given without their run: two runs, each its rank, never seeds of one point.
    runs, _ = loading.load_runs([job / "rank0", job / "rank1"])
    assert [g.label for g in make_points(runs)] == [
        "Sequential (ReLU), rank 0 of 2",
        "Sequential (ReLU), rank 1 of 2",
    ]


def test_a_damaged_rank_is_skipped_with_a_note(job, tmp_path, capsys):
    (job / "rank1" / records.CONFIG).write_text("{not json")
    (run,), notes = loading.load_runs([job])
    assert [rank.rank for rank in run.ranks] == [0]
    assert len(notes) == 1
    assert notes[0].startswith(f"{job / 'rank1'}: config.json: ") and notes[0].endswith("skipped")
    out = tmp_path / "page.html"
    assert main(["report", str(job), "--out", str(out)]) == 0
    assert f"{job / 'rank1'}: config.json: " in capsys.readouterr().err
    assert "| 1 |" not in out.with_suffix(".md").read_text().split("## Ranks")[1].split("##")[0]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"rank": 0}, "config.json says rank 0 of 2, not rank 1 of"),
        ({"world_size": 3}, "config.json says rank 1 of 3, not rank 1 of"),
        ({"rank": None}, "config.json: rank holds None"),
        ({"rank": 2}, "config.json: rank holds 2"),
        ({"ranks": "some"}, "config.json: ranks holds 'some'"),
    ],
)
def test_a_rank_that_is_not_its_runs_is_skipped_with_a_note(job, change, said):
    config = records.read_json(job / "rank1" / records.CONFIG)
    records.write_json(job / "rank1" / records.CONFIG, {**config, **change})
    (run,), notes = loading.load_runs([job])
    assert [rank.rank for rank in run.ranks] == [0]
    assert len(notes) == 1 and notes[0].startswith(f"{job / 'rank1'}: {said}")


def test_a_missing_rank_is_said(job):
    shutil.rmtree(job / "rank0")
    (run,), notes = loading.load_runs([job])
    assert [rank.rank for rank in run.ranks] == [1]
    assert notes == [
        f'{job}: no records of rank 0 of 2 (written with ranks="all"); the per-rank table '
        "leaves it out"
    ]


def expected_cells(run_dir: Path, name: str) -> list[str]:
    """A row of the per-rank table, from the run's last probe row as written."""
    row = last_probe(run_dir)
    widths = records.read_json(run_dir / records.CONFIG)["hidden"]
    dead = stats.percent_of_units(row["dead_fraction"], widths)
    return [
        name,
        str(row["step"]),
        scientific(row["signal_norms"][0]),
        scientific(row["signal_norms"][-1]),
        fixed(dead, 1),
        "-",  # a rectifier's share is its dead units
    ]


def test_the_report_shows_one_run_and_a_table_of_its_ranks(job, tmp_path):
    out = tmp_path / "page.html"
    assert main(["report", str(job), "--out", str(out)]) == 0
    text = out.with_suffix(".md").read_text()
    assert "data-parallel over 2 processes (DistributedDataParallel)" in text
    summary = text.split("## Summary")[1].split("##")[0]
    assert "| Sequential (ReLU) | 1 | 50.00 |" in summary  # one run: no spread over seeds
    assert "±" not in summary
    ranks = text.split("## Ranks\n")[1].split("\n## ")[0]
    table = [line for line in ranks.splitlines() if line.startswith("| ")]
    assert table[0] == (
        "| rank | step | signal at module 0 | signal at module 2 | dead % | saturated % |"
    )
    rows = [line.strip("| ").split(" | ") for line in table[2:]]  # under the header's rule
    assert rows == [
        expected_cells(job, COMBINED),
        expected_cells(job / "rank0", "0"),
        expected_cells(job / "rank1", "1"),
    ]
    assert rows[1][2] != rows[2][2]  # each rank's own signal
    assert "Weight gradients are all-reduced over the 2 processes" in ranks
    assert "each rank's own" in ranks
    page = out.read_text()
    assert '<table class="ranks">' in page
    assert f"<tr><td>{COMBINED}</td><td>{rows[0][1]}</td><td>{rows[0][2]}</td>" in page
    assert "the same on every rank" in page
    assert "rank0" not in text.split("## Runs")[1]  # listed once, as its run


def test_the_verdict_is_the_combined_runs(job, tmp_path):
    alone = Path(shutil.copytree(job, tmp_path / "alone"))
    for r in range(2):
        shutil.rmtree(alone / f"rank{r}")
    with_ranks, _ = loading.load_runs([job])
    without, _ = loading.load_runs([alone])
    found, alone_found = judge(make_points(with_ranks)[0]), judge(make_points(without)[0])
    assert (found.kinds, found.sentences) == (alone_found.kinds, alone_found.sentences)
    assert rank_table(without[0]) is None


def test_the_live_list_shows_the_run_once(job, tmp_path):
    app = live.create_app([job.parent], tmp_path / "out", token=TOKEN)
    with TestClient(app, base_url=BASE) as client:
        items = client.get("/api/list", headers={"X-Token": TOKEN}).json()["items"]
    assert [(item["kind"], item["path"], item["label"]) for item in items] == [
        ("run", "1/job", "Sequential (ReLU)")  # 0 is the page's --out
    ]


def stream_events(client: TestClient, run: str) -> list[tuple[str, dict]]:
    """The page's event stream of one run, (name, data), up to `end`."""
    found, event = [], None
    with client.stream("GET", f"/api/events?runs={run}&token={TOKEN}") as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                found.append((event, json.loads(line.removeprefix("data: "))))
                if event == "end":
                    break
    return found


def test_the_live_stream_sends_the_per_rank_table(job, tmp_path, caplog):
    (job / "rank1" / records.CONFIG).write_text("{not json")  # left out, said in the log
    app = live.create_app([job.parent], tmp_path / "out", token=TOKEN)
    with TestClient(app, base_url=BASE) as client:  # the server closes when it ends
        found = stream_events(client, "1/job")
        alone = stream_events(client, "1/job/rank0")
    (table, *_) = [data for event, data in found if event == "ranks"]
    assert table["header"][:3] == ["rank", "step", "signal at module 0"]
    assert table["rows"] == [expected_cells(job, COMBINED), expected_cells(job / "rank0", "0")]
    assert table["note"].startswith("Weight gradients are all-reduced over the 2 processes")
    assert f"{job / 'rank1'}: config.json: " in caplog.text
    # The rank alone streams as any run: no table of its own.
    assert "verdict" in [event for event, _ in alone]
    assert "ranks" not in [event for event, _ in alone]


@pytest.mark.parametrize("given", ["job", "runs"])
def test_export_writes_each_rank_below_its_runs_events(job, tmp_path, given, capsys):
    """Each rank's events are its own run below the combined run's (TensorBoard: job,
    job/rank0, job/rank1), whether the run or a directory holding it is given."""
    pytest.importorskip("tensorboardX")
    logdir = tmp_path / "tb"
    path = job if given == "job" else job.parent
    assert main(["export", str(path), "--to", "tensorboard", "--logdir", str(logdir)]) == 0
    found = sorted(p.parent.relative_to(logdir).as_posix() for p in logdir.rglob("events.*"))
    assert found == ["job", "job/rank0", "job/rank1"]
    assert "3 run(s) written" in capsys.readouterr().out
    reader = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    for name in found:  # each its own signals, read back with TensorBoard's reader
        events = reader.EventAccumulator(str(logdir / name)).Reload()
        tags = sorted(t for t in events.Tags()["scalars"] if t.startswith("signal_norm/"))
        last = [events.Scalars(tag)[-1] for tag in tags]
        row = last_probe(job / name.removeprefix("job").lstrip("/"))
        assert [(e.step, e.value) for e in last] == [
            (row["step"], float(np.float32(value))) for value in row["signal_norms"]
        ]


def test_the_page_shows_the_per_rank_table(job, tmp_path):
    """In a real browser: the job's panel, opened from the list, has the server's table."""
    from test_browser import CHROMIUM_ARGS, browser_or_skip
    from test_live_browser import serving
    from vanishing.frontends.live.server import bind

    sync_playwright, executable = browser_or_skip()
    sock = bind("127.0.0.1", 0)
    app = live.create_app([job.parent], tmp_path / "out", token=TOKEN, port=sock.getsockname()[1])
    with serving(app, sock) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/?token={TOKEN}")
            page.wait_for_selector('#list li[data-path="1/job"]')
            listed = page.eval_on_selector_all("#list li", "li => li.map(i => i.dataset.path)")
            page.click('#list li[data-path="1/job"] .open')
            page.wait_for_selector('.panel[data-run="1/job"] .ranks-card:not([hidden])')
            cells = page.eval_on_selector_all(
                '.panel[data-run="1/job"] .ranks tr',
                "rows => rows.map(r => [...r.children].map(c => c.textContent))",
            )
            note = page.text_content('.panel[data-run="1/job"] .ranks-note')
        finally:
            browser.close()
    assert errors == []
    assert listed == ["1/job"]  # the run once, not its ranks
    assert cells[1:] == [
        expected_cells(job, COMBINED),
        expected_cells(job / "rank0", "0"),
        expected_cells(job / "rank1", "1"),
    ]
    assert cells[0][0] == "rank" and note.startswith("Weight gradients are all-reduced")


def test_a_data_parallel_run_beside_a_single_process_one_is_labelled_by_its_processes(
    job, tmp_path
):
    """Beside the same model trained in one process, the job is its own point, labelled by
    its processes; another job written with ranks="one" is the same point (a second run)."""
    single = Path(shutil.copytree(job, tmp_path / "runs" / "single"))
    other = Path(shutil.copytree(job, tmp_path / "runs" / "other"))
    for run_dir in (single, other):
        for r in range(2):
            shutil.rmtree(run_dir / f"rank{r}")
    config = records.read_json(single / records.CONFIG)
    del config["world_size"], config["ranks"]
    records.write_json(single / records.CONFIG, config)
    config = records.read_json(other / records.CONFIG)
    records.write_json(other / records.CONFIG, {**config, "ranks": "one"})
    runs, notes = loading.load_runs([job.parent])
    assert notes == []
    points = make_points(runs)
    assert [(g.label, [r.path.name for r in g.runs]) for g in points] == [
        ("Sequential (ReLU)", ["single"]),
        ("Sequential (ReLU), 2 processes", ["job", "other"]),
    ]


def test_every_damage_to_a_rank_is_read_or_skipped_with_one_note(written, tmp_path):
    """Each way a record gets damaged (tests/damage.py), done to rank 1 of its own copy of the
    job: the job is still one run, rank 0 still in its table, and rank 1 either read (a damaged
    number reads as missing) or skipped with one note naming it."""
    from damage import CATALOGUE

    root = tmp_path / "damaged"
    jobs = {}
    for index, (name, damage) in enumerate(CATALOGUE.items()):
        copy = Path(shutil.copytree(written, root / f"job-{index}"))
        damage(copy / "rank1")
        jobs[copy] = name
    runs, notes = loading.load_runs([root])
    assert sorted(run.path for run in runs) == sorted(jobs)
    for run in runs:
        name = jobs[run.path]
        said = [note for note in notes if note.startswith(f"{run.path}/rank1")]
        assert len(said) == (0 if 1 in [r.rank for r in run.ranks] else 1), (name, said)
        assert all("\n" not in note for note in said), name
        table = rank_table(run)
        assert table is not None and table.rows[1] == tuple(expected_cells(written / "rank0", "0"))
        assert len(table.rows) == 1 + len(run.ranks), name


def test_a_linked_rank_directory_is_not_read(job, tmp_path):
    """A rank directory that is a symlink (it could lead outside a served directory) is not a
    rank: the live page never reads through it."""
    elsewhere = Path(shutil.move(job / "rank1", tmp_path / "elsewhere"))
    (job / "rank1").symlink_to(elsewhere, target_is_directory=True)
    (run,), notes = loading.load_runs([job])
    assert [rank.rank for rank in run.ranks] == [0]
    assert notes == [
        f'{job}: no records of rank 1 of 2 (written with ranks="all"); the per-rank table '
        "leaves it out"
    ]
