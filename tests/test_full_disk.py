"""A full disk: every file the tool writes fails in one line (`cannot write PATH: REASON`, exit
2), leaves no torn or temporary file and keeps the old one; nothing hangs.

Two real failing file systems, no patched calls: a tmpfs of a few pages (needs root, as CI has;
skipped where mount is not allowed), where a write fails with ENOSPC, and, for any user, a file
size limit (RLIMIT_FSIZE) on a child process, where the same write fails with EFBIG.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ENV
from vanishing import executor, records
from vanishing.frontends.cli import main
from vanishing.frontends.live.jobs import Jobs
from vanishing.settings.config import TrainConfig
from vanishing.settings.naming import run_name

FULL = os.strerror(errno.ENOSPC)  # "No space left on device"
TOO_LARGE = os.strerror(errno.EFBIG)  # "File too large"
TINY = ["--no-verify", "--batch-size", "32", "--probe-every", "3", "--probe-size", "32"]
# A run whose checkpoint (about 96 kB) is far larger than its other records (a few kB).
RUN = ["--hidden", "8", "--epochs", "3", "--device", "cpu", *TINY]
CONFIG = TrainConfig(
    hidden=(8,), epochs=3, batch_size=32, probe_every=3, probe_size=32, device="cpu"
)


@pytest.fixture
def small_disk(tmp_path):
    """`mount(size)`: a tmpfs of `size` (e.g. "160k") at a new directory, unmounted after."""
    mounted = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or 'not root'}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> None:
    """Take every free byte of `disk`."""
    try:
        with open(disk / "filler", "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC


def limited(argv: list[str], limit: int, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m vanishing ARGV` with no file allowed to grow past `limit` bytes."""

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "vanishing", *argv],
        env=ENV,
        preexec_fn=limit_files,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def leftovers(folder: Path) -> list[str]:
    """Temporary files an atomic write left behind."""
    return sorted(p.name for p in folder.rglob("*.tmp"))


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_a_checkpoint_on_a_full_disk_is_one_line_and_keeps_the_last_one(
    capsys, small_disk, tiny_dir
):
    # Room for one checkpoint (and the other records), not for a second one beside it.
    disk = small_disk("160k")
    code = main(["train", "--data-dir", str(tiny_dir), "--out", str(disk), *RUN])
    run_dir = disk / run_name(CONFIG)
    assert code == 2
    assert last_line(capsys.readouterr().err) == (
        f"vanishing train: error: cannot write {run_dir / records.CHECKPOINT}: {FULL}"
    )
    assert leftovers(disk) == []
    kept = torch.load(run_dir / records.CHECKPOINT, weights_only=True)
    assert kept["epoch"] == 1  # the last whole one: the failed save replaced nothing
    assert not records.is_complete(run_dir)


def test_a_checkpoint_past_the_file_size_limit_is_one_line(tmp_path, tiny_dir):
    done = limited(["train", "--data-dir", str(tiny_dir), "--out", str(tmp_path), *RUN], 65536)
    run_dir = tmp_path / run_name(CONFIG)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert last_line(done.stderr) == (
        f"vanishing train: error: cannot write {run_dir / records.CHECKPOINT}: {TOO_LARGE}"
    )
    assert leftovers(tmp_path) == [] and not (run_dir / records.CHECKPOINT).exists()


def test_a_live_job_on_a_full_disk_fails_with_the_line(small_disk, tiny_dir):
    disk = small_disk("160k")
    jobs = Jobs(workers=1, data_options={"data_dir": tiny_dir, "verify": False})
    job = jobs.start([CONFIG], disk, resume=False)
    assert job.thread is not None
    job.thread.join(120)
    run_dir = disk / run_name(CONFIG)
    assert (job.state, job.error) == (
        "failed",
        f"cannot write {run_dir / records.CHECKPOINT}: {FULL}",
    )
    assert job.summary([])["error"] == job.error


def test_a_write_error_is_said_as_the_cli_says_it():
    error = records.write_error(Path("/x/checkpoint.pt"), OSError(errno.ENOSPC, FULL))
    assert executor.error_line(error) == f"cannot write /x/checkpoint.pt: {FULL}"
    assert error.reason == FULL


@pytest.fixture
def finished(tmp_path, tiny_dir) -> Path:
    """A finished run to report and export."""
    out = tmp_path / "runs"
    argv = ["train", "--data-dir", str(tiny_dir), "--out", str(out), "--hidden", "8"]
    assert main([*argv, "--epochs", "1", "--device", "cpu", *TINY]) == 0
    return out


def test_a_report_on_a_full_disk_leaves_the_old_one(capsys, small_disk, finished):
    disk = small_disk("4m")
    report = disk / "report.html"
    assert main(["report", str(finished), "--out", str(report)]) == 0
    before = report.read_bytes(), report.with_suffix(".md").read_bytes()
    fill(disk)
    capsys.readouterr()
    assert main(["report", str(finished), "--out", str(report)]) == 2
    assert last_line(capsys.readouterr().err) == (
        f"vanishing report: error: cannot write the report to {report}: {FULL}"
    )
    assert (report.read_bytes(), report.with_suffix(".md").read_bytes()) == before
    assert leftovers(disk) == []


def test_a_report_past_the_file_size_limit_leaves_no_part_of_it(tmp_path, finished):
    report = tmp_path / "report.html"
    done = limited(["report", str(finished), "--out", str(report)], 4096)
    assert done.returncode == 2, done.stderr
    assert last_line(done.stderr) == (
        f"vanishing report: error: cannot write the report to {report}: {TOO_LARGE}"
    )
    assert not report.exists() and leftovers(tmp_path) == []


def test_an_export_on_a_full_disk_ends_in_one_line(small_disk, finished):
    pytest.importorskip("tensorboardX")
    disk = small_disk("64k")
    (logdir := disk / "tb").mkdir()
    fill(disk)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vanishing",
            "export",
            str(finished),
            "--to",
            "tensorboard",
            "--logdir",
            str(logdir),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,  # tensorboardX's writer thread died here, and the export waited forever
    )
    assert done.returncode == 2, done.stderr
    line = last_line(done.stderr)
    assert line.startswith(f"vanishing export: error: cannot write {logdir}/")
    assert "/events.out.tfevents." in line and line.endswith(f": {FULL}")
    assert not list(logdir.rglob("events.out.tfevents.*")) and leftovers(disk) == []


def test_an_export_past_the_file_size_limit_ends_in_one_line(tmp_path, finished):
    pytest.importorskip("tensorboardX")
    logdir = tmp_path / "tb"
    try:
        done = limited(
            ["export", str(finished), "--to", "tensorboard", "--logdir", str(logdir)],
            1024,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the export hung on a write that failed")
    assert done.returncode == 2, done.stderr
    line = last_line(done.stderr)
    assert line.startswith(f"vanishing export: error: cannot write {logdir}/")
    assert line.endswith(f": {TOO_LARGE}")
    assert not list(logdir.rglob("events.out.tfevents.*")) and leftovers(tmp_path) == []


def test_tables_are_written_whole_or_not_at_all(tmp_path):
    """runs.csv, points.csv, pairs.csv and summary.csv: atomically, a WriteError when they fail."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from vanishing import records\n"
        "from vanishing.reporting import summary\n"
        "rows = [{'activation': 'relu', 'note': 'x' * 5000}]\n"
        "for write, name in ((summary.write_csv, 'runs.csv'),\n"
        "                    (summary.write_summary_csv, 'summary.csv')):\n"
        "    try:\n"
        "        write(Path(sys.argv[1]) / name, rows * 2)\n"
        "    except records.WriteError as e:\n"
        "        print(e.strerror)\n"
    )

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env=ENV,
        preexec_fn=limit_files,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"cannot write {tmp_path / 'runs.csv'}: {TOO_LARGE}"
    # summary.csv keeps only its own columns: the long note is left out, so it fits
    assert len(lines) == 1 and (tmp_path / "summary.csv").is_file()
    assert not (tmp_path / "runs.csv").exists() and leftovers(tmp_path) == []
