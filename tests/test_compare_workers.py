"""`compare` on the CPU: runs train at once in one-thread child processes, with nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ENV, compared, swept, without_timings
from vanishing import records
from vanishing.data import datasets as data
from vanishing.errors import UsageError
from vanishing.executor import local, preflight
from vanishing.frontends.cli import main
from vanishing.jobs import common
from vanishing.settings import grid, naming
from vanishing.settings.config import TrainConfig

SMALL = TrainConfig(
    activation="relu", hidden=(16, 8), epochs=2, batch_size=32, probe_every=3, probe_size=32
)
EPOCHS = 30  # about 2 s a run here: time to kill the command after its first checkpoint


def run_records(out: Path) -> dict[str, tuple]:
    """Every run's metrics rows and result, wall-clock fields aside."""
    return {
        d.name: (
            without_timings(records.read_metrics(d)),
            without_timings(records.read_json(d / records.RESULT)),
        )
        for d in sorted(out.iterdir())
        if d.is_dir()
    }


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the children's count, so the two ways agree bit for bit
    yield
    torch.set_num_threads(threads)


def test_workers_train_in_children_and_agree_with_one_at_a_time(
    tiny_dir, tmp_path, monkeypatch, one_thread
):
    dataset = data.load_dataset(data_dir=tiny_dir, verify=False)
    pids = tmp_path / "pids"
    pids.mkdir()
    real = local.train  # what trains a run alone (one model a unit on the CPU), child or not

    def spy(*args, **kwargs):
        (pids / str(os.getpid())).touch()
        return real(*args, **kwargs)

    monkeypatch.setattr(local, "train", spy)  # the forked children inherit it
    seen, steps = {}, {}
    for workers in (1, 2):
        seen[workers], steps[workers] = [], []
        compared(
            SMALL,
            ["relu", "sigmoid"],
            [0, 1],
            tmp_path / str(workers),
            dataset,
            on_epoch=lambda c, row, s=seen[workers]: s.append((c.activation, c.seed, row["epoch"])),
            on_steps=steps[workers].append,
            workers=workers,
        )
    ran_in = {int(p.name) for p in pids.iterdir()}
    assert os.getpid() in ran_in and len(ran_in - {os.getpid()}) >= 2  # 4 runs, 2 at a time
    assert sorted(seen[1]) == sorted(seen[2]) and len(seen[2]) == 4 * 2
    steps_per_run = 2 * -(-len(dataset.train_labels) // SMALL.batch_size)
    assert sum(steps[1]) == sum(x for x in steps[2]) == 4 * steps_per_run
    assert run_records(tmp_path / "1") == run_records(tmp_path / "2")


def test_a_run_that_fails_in_a_child_is_one_line(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    damaged = out / naming.run_name(TrainConfig(seed=1, hidden=(16, 8), epochs=1))
    damaged.mkdir(parents=True)
    (damaged / records.CHECKPOINT).write_bytes(b"damaged")
    argv = ["compare", "--data-dir", str(tiny_dir), "--no-verify", "--activations", "relu",
            "--seeds", "0,1", "--hidden", "16,8", "--epochs", "1", "--out", str(out)]  # fmt: skip
    code = main([*argv, "--workers", "2", "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("vanishing compare: error: ")
    assert "checkpoint.pt: not a readable checkpoint" in err[-1]
    assert main([*argv, "--workers", "0"]) == 2
    assert capsys.readouterr().err.strip().endswith("--workers must be >= 1, got 0")


def compare_command(tiny_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vanishing", "compare", "--data-dir", str(tiny_dir),
            "--no-verify", "--activations", "relu,rrelu", "--seeds", "0,1", "--hidden", "32,16",
            "--epochs", str(EPOCHS), "--batch-size", "32", "--probe-every", "3",
            "--probe-size", "32", "--device", "cpu", "--workers", "2", "--out", str(out),
            *extra]  # fmt: skip


def sizes(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_size for p in out.rglob("*") if p.is_file()}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_killed_compare_leaves_no_worker_behind_and_resumes(
    tiny_dir, tmp_path, tmp_path_factory, sig
):
    out = tmp_path / "out"
    process = subprocess.Popen(
        compare_command(tiny_dir, out), env=ENV, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob("*/" + records.CHECKPOINT)):
        time.sleep(0.005)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert process.returncode == 130, stderr
        assert "run the same command with --resume" in stderr and "Traceback" not in stderr
    else:
        assert process.returncode == -signal.SIGKILL
    time.sleep(0.5)  # a worker left behind would still be writing
    before = sizes(out)
    time.sleep(1.0)
    assert sizes(out) == before
    assert len(list(out.glob("*/" + records.CHECKPOINT))) >= 1

    done = subprocess.run(
        compare_command(tiny_dir, out, "--resume"), env=ENV, text=True, capture_output=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not list(out.glob("*/" + records.CHECKPOINT))
    assert run_records(out) == uninterrupted(tiny_dir, tmp_path_factory)


def test_a_run_directory_another_process_writes_is_refused(tiny_dir, tmp_path):
    """One writer per run directory: `compare` refuses, in one line naming the directory and the
    holder, a run another process holds, before it writes anything there or anywhere."""
    out = tmp_path / "out"
    # The second run: the first is not trained either.
    held = out / naming.run_name(TrainConfig(seed=1, hidden=(8,), epochs=1))
    fd = records.lock_run(held)
    assert fd is not None
    (held / records.METRICS).write_text('{"kind": "probe", "step": 0}\n')  # the holder's rows
    before = {p.name: p.read_bytes() for p in held.iterdir()}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "vanishing", "compare", "--data-dir", str(tiny_dir),
             "--no-verify", "--activations", "relu", "--seeds", "0,1", "--hidden", "8",
             "--epochs", "1", "--device", "cpu", "--out", str(out)],
            env=ENV, text=True, capture_output=True, timeout=120,
        )  # fmt: skip
        after = {p.name: p.read_bytes() for p in held.iterdir()}
    finally:
        os.close(fd)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"vanishing compare: error: {held} is being written by another process "
        f"(pid {os.getpid()}); wait for it to finish, or give another --out"
    )
    assert "Traceback" not in done.stderr
    assert after == before  # the lock file still names this process; the rows are untouched
    assert not list(out.glob("*/" + records.CONFIG))  # nothing trained


REFERENCE: dict[str, dict] = {}


def uninterrupted(tiny_dir: Path, tmp_path_factory) -> dict:
    """The same compare, never interrupted (once for every test): its records."""
    if "records" not in REFERENCE:
        out = tmp_path_factory.mktemp("reference")
        subprocess.run(compare_command(tiny_dir, out), env=ENV, check=True, capture_output=True,
                       timeout=300)  # fmt: skip
        REFERENCE["records"] = run_records(out)
    return REFERENCE["records"]


def test_default_workers_one_per_core_on_the_cpu(monkeypatch, tiny_dir, tmp_path):
    seen = []

    def fake_execute(runs, policy, **kwargs):
        seen.append(policy.workers)
        raise KeyboardInterrupt  # stop here: the CLI reports an interruption, exit 130

    monkeypatch.setattr(common, "execute", fake_execute)
    monkeypatch.setattr(preflight, "cores", lambda: 3)
    argv = ["--data-dir", str(tiny_dir), "--no-verify", "--out", str(tmp_path / "o")]
    assert main(["compare", *argv]) == 130
    assert main(["compare", *argv, "--workers", "2"]) == 130
    assert main(["train", *argv]) == 130
    assert seen == [3, 2, 1]  # train is one run: no pool


def test_a_worker_that_dies_or_breaks_is_one_line_not_a_traceback(
    tiny_dir, tmp_path, monkeypatch, capsys
):
    argv = ["compare", "--data-dir", str(tiny_dir), "--no-verify", "--activations", "relu",
            "--seeds", "0,1", "--hidden", "16,8", "--epochs", "1", "--workers", "2"]  # fmt: skip

    def dies(*args, **kwargs):
        os._exit(9)  # as the kernel's OOM killer would leave it: no word

    monkeypatch.setattr(local, "train", dies)  # what the forked children call
    assert main([*argv, "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "vanishing compare: error: a worker process exited with code 9 before its job finished "
        "(killed, or out of memory: fewer --workers need less)"
    )
    assert not any("Traceback" in line for line in err)

    def full_disk(*args, **kwargs):
        raise records.WriteError(28, "cannot write /x/metrics.jsonl: No space left on device")

    monkeypatch.setattr(local, "train", full_disk)
    assert main([*argv, "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vanishing compare: error: cannot write /x/metrics.jsonl: No space left on device"
    )


def test_on_a_gpu_runs_train_in_one_process(monkeypatch, tiny_dir, tmp_path, capsys):
    """A forked child cannot use CUDA: on a GPU, one process (groups), and --workers > 1 is an
    error; sweeps likewise (their local backend)."""

    monkeypatch.setattr(preflight, "resolve_device", lambda name: torch.device("cuda"))
    seen = []

    def fake_execute(runs, policy, **kwargs):
        seen.append(policy.workers)
        raise KeyboardInterrupt

    monkeypatch.setattr(common, "execute", fake_execute)
    argv = ["compare", "--data-dir", str(tiny_dir), "--no-verify", "--out", str(tmp_path / "o")]
    assert main(argv) == 130 and seen == [1]
    assert main([*argv, "--workers", "1"]) == 130 and seen == [1, 1]
    assert main([*argv, "--workers", "2"]) == 2 and seen == [1, 1]
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vanishing compare: error: --workers 2: on a GPU the runs train in one process (runs of "
        "one shape together, as a group); more workers need --device cpu"
    )
    spec = grid.spec_from_dict({"activations": ["relu"], "hidden": [8], "seeds": [0], "epochs": 1})
    with pytest.raises(UsageError, match="more workers need --device cpu"):
        swept(spec, tmp_path / "s", workers=2)
    assert not (tmp_path / "s").exists()  # refused before anything was written
    assert preflight.workers_for("cuda", None) == 1
    monkeypatch.setattr(preflight, "resolve_device", lambda name: torch.device("cpu"))
    monkeypatch.setattr(preflight, "cores", lambda: 5)
    assert preflight.workers_for("auto", None) == 5 and preflight.workers_for("cpu", 3) == 3
