"""The executor's pool (`execute` with workers): runs train in children, statuses and progress
come back, errors cross whole, a dead child is raised or recorded, nothing is left behind."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import ENV, interrupt_after_one_epoch
from vanishing import executor, records
from vanishing.data import datasets as data
from vanishing.errors import DataError, UsageError
from vanishing.executor import local, planning, pool
from vanishing.records import WriteError
from vanishing.settings.config import TrainConfig

pytestmark = pytest.mark.skipif(not pool.can_fork(), reason="the pool forks (Linux)")

TINY = TrainConfig(
    hidden=(8,), epochs=1, batch_size=32, probe_every=5, probe_size=32, device="cpu"
)  # 10 steps an epoch on the tiny data set
LONG = 1000  # epochs: far longer than any test waits


@pytest.fixture
def dataset(tiny_dir) -> data.Dataset:
    return data.load_dataset(data_dir=tiny_dir, verify=False)


def tiny_runs(out: Path, count: int, **changes) -> list[executor.Run]:
    """`count` tiny runs, seeds 0, 1, ..., each in out/run<seed>."""
    config = dataclasses.replace(TINY, **changes)
    return [
        executor.Run(dataclasses.replace(config, seed=s), out / f"run{s}") for s in range(count)
    ]


def watch(monkeypatch, folder: Path):
    """Have every run note, as it starts training, its process and thread count in
    folder/<seed>.json. `local.train` is what a unit of one calls: a child forked after this
    patch inherits it. Returns a function that reads the notes, by seed."""
    folder.mkdir()
    real = local.train

    def spy(config, **kwargs):
        note = {"pid": os.getpid(), "threads": torch.get_num_threads()}
        (folder / f"{config.seed}.tmp").write_text(json.dumps(note))
        (folder / f"{config.seed}.tmp").replace(folder / f"{config.seed}.json")  # read whole
        return real(config, **kwargs)

    monkeypatch.setattr(local, "train", spy)
    return lambda: {int(p.stem): json.loads(p.read_text()) for p in folder.glob("*.json")}


def break_seed(monkeypatch, seed: int, action) -> None:
    """The run of `seed` does `action()` instead of training (in whichever process trains it)."""
    real = local.train

    def train(config, **kwargs):
        if config.seed == seed:
            action()
        return real(config, **kwargs)

    monkeypatch.setattr(local, "train", train)


def test_children_train_the_runs_and_report_back(dataset, tmp_path, monkeypatch):
    notes = watch(monkeypatch, tmp_path / "notes")
    todo = tiny_runs(tmp_path / "out", 4, epochs=2)
    epochs, steps, finished = [], [], []
    statuses = executor.execute(
        todo,
        executor.Policy(workers=2),
        dataset=dataset,
        on_epoch=lambda config, row: epochs.append((config.seed, row["epoch"])),
        on_steps=steps.append,
        on_done=lambda run, status: finished.append((run.run_dir.name, status)),
    )
    assert statuses == {run.run_dir: "ok" for run in todo}
    assert sorted(finished) == [(f"run{s}", "ok") for s in range(4)]
    pids = {note["pid"] for note in notes().values()}
    assert len(notes()) == 4 and os.getpid() not in pids and len(pids) == 4  # a child per unit
    for seed in range(4):  # each run's rows arrive in the order it sent them
        assert [epoch for s, epoch in epochs if s == seed] == [1, 2]
    assert sum(steps) == 4 * 2 * 10
    for run in todo:
        assert records.read_json(run.run_dir / records.RESULT)["status"] == "ok"


def test_one_worker_trains_in_this_process(dataset, tmp_path, monkeypatch):
    notes = watch(monkeypatch, tmp_path / "notes")
    todo = tiny_runs(tmp_path / "out", 2)
    assert executor.execute(todo, executor.Policy(workers=1), dataset=dataset) == {
        run.run_dir: "ok" for run in todo
    }
    assert [note["pid"] for note in notes().values()] == [os.getpid()] * 2


@pytest.mark.parametrize(
    "error",
    [UsageError("unknown activation 'x'"), DataError("mnist: no source"),
     WriteError(28, "cannot write /x/metrics.jsonl: No space left on device")],
    ids=["usage", "data", "write"],
)  # fmt: skip
def test_our_errors_come_back_from_a_child_as_themselves(dataset, tmp_path, monkeypatch, error):
    def fail():
        raise error

    break_seed(monkeypatch, 1, fail)
    with pytest.raises(type(error)) as caught:
        executor.execute(tiny_runs(tmp_path / "a", 2), executor.Policy(workers=2), dataset=dataset)
    assert str(caught.value) == str(error) and caught.value.args == error.args
    if isinstance(error, WriteError):  # what the CLI prints; and a full disk stops even a sweep
        assert caught.value.strerror == error.strerror and caught.value.errno == 28
        policy = executor.Policy(workers=2, failures="record")
        with pytest.raises(WriteError):
            executor.execute(tiny_runs(tmp_path / "b", 2), policy, dataset=dataset)
        assert not (tmp_path / "b" / "run1" / records.RESULT).exists()


def test_an_unexpected_error_is_raised_with_the_childs_traceback_or_recorded(
    dataset, tmp_path, monkeypatch
):
    break_seed(monkeypatch, 0, lambda: {}["missing"])
    with pytest.raises(executor.WorkerError, match=r"(?s)Traceback.*KeyError: 'missing'"):
        executor.execute(tiny_runs(tmp_path / "a", 2), executor.Policy(workers=2), dataset=dataset)
    todo = tiny_runs(tmp_path / "b", 2)
    policy = executor.Policy(workers=2, failures="record")
    statuses = executor.execute(todo, policy, dataset=dataset)
    assert statuses == {todo[0].run_dir: "failed", todo[1].run_dir: "ok"}
    result = records.read_json(todo[0].run_dir / records.RESULT)
    assert (result["status"], result["error"]) == ("failed", "KeyError: 'missing'")


def test_a_child_that_dies_is_raised_or_recorded_not_a_hang(dataset, tmp_path, monkeypatch):
    break_seed(monkeypatch, 0, lambda: os._exit(9))  # as the OOM killer leaves it: no word
    start = time.monotonic()
    with pytest.raises(
        executor.WorkerError, match=r"^a worker process exited with code 9 before its job finished"
    ):
        executor.execute(tiny_runs(tmp_path / "a", 2), executor.Policy(workers=2), dataset=dataset)
    assert time.monotonic() - start < 30
    todo = tiny_runs(tmp_path / "b", 2)
    finished = []
    statuses = executor.execute(
        todo,
        executor.Policy(workers=2, failures="record"),
        dataset=dataset,
        on_done=lambda run, status: finished.append((run.run_dir.name, status)),
    )
    assert statuses == {todo[0].run_dir: "failed", todo[1].run_dir: "ok"}
    assert sorted(finished) == [("run0", "failed"), ("run1", "ok")]
    result = records.read_json(todo[0].run_dir / records.RESULT)
    assert (result["status"], result["error"]) == ("failed", "worker exited with code 9")


def gone(pid: int) -> bool:
    """Whether the process has ended (a zombie has: only its exit status is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_stop_kills_every_child_and_raises_keyboard_interrupt(dataset, tmp_path, monkeypatch):
    notes = watch(monkeypatch, tmp_path / "notes")
    todo = tiny_runs(tmp_path / "out", 3, epochs=LONG)
    stop = threading.Event()

    def on_steps(count: int) -> None:
        if len(notes()) == 2:  # both workers are training: stop as a signal handler would
            stop.set()

    policy = executor.Policy(workers=2, claim=True)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        executor.execute(todo, policy, dataset=dataset, on_steps=on_steps, stop=stop)
    assert time.monotonic() - start < 60
    assert sorted(notes()) == [0, 1] and not todo[2].run_dir.exists()  # the third never started
    for note in notes().values():
        assert gone(note["pid"])
    for run in todo[:2]:  # unfinished, to resume, and no longer locked
        assert not (run.run_dir / records.RESULT).exists()
        fd = records.lock_run(run.run_dir)
        assert fd is not None
        os.close(fd)


def test_children_share_the_cores_out(dataset, tmp_path, monkeypatch):
    """More than one thread in a forked child: OpenMP's pool, copied from a parent that used it,
    must not hang the child (a hang is a failure after 60 s, not a stuck test)."""
    notes = watch(monkeypatch, tmp_path / "notes")
    monkeypatch.setattr(pool, "cores", lambda: 6)
    torch.ones(1 << 20).sum()  # the parent's OpenMP pool in use before the fork
    stop = threading.Event()
    timer = threading.Timer(60, stop.set)
    timer.start()

    def threads(count: int, policy: executor.Policy) -> list[int]:
        for path in (tmp_path / "notes").iterdir():
            path.unlink()
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        try:
            executor.execute(tiny_runs(out, count), policy, dataset=dataset, stop=stop)
        except KeyboardInterrupt:
            pytest.fail("the children hung")
        return [notes()[seed]["threads"] for seed in range(count)]

    try:
        assert threads(3, executor.Policy(workers=2)) == [3, 3, 3]  # 6 cores, 2 at once
        assert threads(2, executor.Policy(workers=4)) == [3, 3]  # only 2 units: 2 at once
        assert threads(2, executor.Policy(workers=2, threads=1)) == [1, 1]
    finally:
        timer.cancel()


# A command that trains two runs in two children; each child notes its pid and whether it found
# torch._dynamo imported (`local.train` patched before the fork, as in `watch`).
SCRIPT = """\
import dataclasses, json, os, sys
from pathlib import Path
from vanishing.data import datasets as data
from vanishing import executor
from vanishing.executor import local
from vanishing.settings.config import TrainConfig

data_dir, out, epochs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
dataset = data.load_dataset(data_dir=data_dir, verify=False)
real = local.train

def train(config, **kwargs):
    note = {"pid": os.getpid(), "dynamo": "torch._dynamo" in sys.modules}
    (out / f"{config.seed}.tmp").write_text(json.dumps(note))
    (out / f"{config.seed}.tmp").replace(out / f"{config.seed}.json")
    return real(config, **kwargs)

local.train = train
config = TrainConfig(hidden=(8,), epochs=epochs, batch_size=32, probe_size=32, device="cpu")
todo = [executor.Run(dataclasses.replace(config, seed=s), out / f"run{s}") for s in (0, 1)]
print("torch._dynamo" in sys.modules, flush=True)
statuses = executor.execute(todo, executor.Policy(workers=2), dataset=dataset)
print(sorted(statuses.values()))
"""


def script_command(tiny_dir: Path, out: Path, epochs: int) -> list[str]:
    out.mkdir()
    return [sys.executable, "-c", SCRIPT, str(tiny_dir), str(out), str(epochs)]


def test_children_start_with_the_lazy_imports_done(tiny_dir, tmp_path):
    """A fresh process: without the warm-up each child would import torch._dynamo itself."""
    out = tmp_path / "out"
    done = subprocess.run(
        script_command(tiny_dir, out, 1), env=ENV, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["False", "['ok', 'ok']"]
    notes = [json.loads((out / f"{seed}.json").read_text()) for seed in (0, 1)]
    assert [note["dynamo"] for note in notes] == [True, True]
    assert os.getpid() not in {note["pid"] for note in notes}


def test_children_die_with_the_parent_even_on_sigkill(tiny_dir, tmp_path):
    """A SIGKILLed command has no `finally`: the kernel kills its children (no orphan training
    on, writing records and holding locks)."""
    out = tmp_path / "out"
    process = subprocess.Popen(
        script_command(tiny_dir, out, LONG), env=ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(pids) < 2:
            time.sleep(0.01)
            pids = [json.loads(p.read_text())["pid"] for p in out.glob("*.json")]
        assert len(pids) == 2, "the children did not start"
        assert all(not gone(pid) for pid in pids)
        process.kill()
        process.wait(timeout=60)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(gone(pid) for pid in pids):
            time.sleep(0.01)
        assert all(gone(pid) for pid in pids)
    finally:
        process.kill()
        for pid in pids:  # an orphan, if the test failed
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_child_killed_by_a_signal_to_the_group_leaves_its_runs_unfinished(
    dataset, tmp_path, monkeypatch
):
    # SIGTERM to the whole process group (a batch system, `timeout`): the children die of it.
    # Their runs are interrupted, not failed: no result.json, so the next sweep resumes them.
    break_seed(monkeypatch, 1, lambda: os.kill(os.getpid(), signal.SIGTERM))
    todo = tiny_runs(tmp_path / "out", 2, epochs=LONG)
    with pytest.raises(KeyboardInterrupt):
        executor.execute(todo, executor.Policy(workers=2, failures="record"), dataset=dataset)
    assert not any(records.is_complete(run.run_dir) for run in todo)


def test_a_unit_whose_checkpoints_moved_apart_trains_in_parts(dataset, tmp_path):
    # Units are planned before their runs are claimed; another executor may move some on since.
    first, second = tiny_runs(tmp_path / "out", 2, epochs=2)
    interrupt_after_one_epoch(first.config, first.run_dir, dataset)
    assert planning.checkpoint_epoch(first) == 1 and planning.checkpoint_epoch(second) is None
    policy = executor.Policy(group=2, resume=True)
    callbacks = local.Callbacks(None, None, threading.Event())
    assert local.train_unit([first, second], dataset, policy, callbacks) == ["ok", "ok"]
    epochs = [r["epoch"] for r in records.read_metrics(first.run_dir) if r["kind"] == "epoch"]
    assert epochs == [1, 2]  # continued from its checkpoint, not started afresh


def test_a_batch_larger_than_the_training_set_is_refused_before_training(dataset, tmp_path):
    todo = tiny_runs(tmp_path / "out", 1, batch_size=len(dataset.train_labels) + 1)
    with pytest.raises(UsageError, match=r"--batch-size 321 is larger than the training set"):
        executor.execute(todo, executor.Policy(failures="record"), dataset=dataset)
    assert not todo[0].run_dir.exists()


@pytest.mark.parametrize("workers", [1, 2], ids=["here", "pool"])
def test_a_run_another_process_holds_is_left_to_it_or_refused(dataset, tmp_path, workers):
    """One writer per run directory: with `claim` a held run is left to its holder and the others
    train; without, the whole execution is refused before anything is written."""
    todo = tiny_runs(tmp_path / "out", 3)
    fd = records.lock_run(todo[1].run_dir)  # another writer (an flock of its own, as a process's)
    assert fd is not None
    try:
        message = (
            f"{todo[1].run_dir} is being written by another process (pid {os.getpid()}); "
            "wait for it to finish, or give another --out"
        )
        with pytest.raises(UsageError) as refused:
            executor.execute(todo, executor.Policy(workers=workers), dataset=dataset)
        assert str(refused.value) == message
        assert not list((tmp_path / "out").glob("*/" + records.CONFIG))  # nothing trained
        policy = executor.Policy(workers=workers, claim=True)
        statuses = executor.execute(todo, policy, dataset=dataset)
        assert statuses == {todo[0].run_dir: "ok", todo[2].run_dir: "ok"}
        assert sorted(p.name for p in todo[1].run_dir.iterdir()) == [records.LOCK]
    finally:
        os.close(fd)
    for run in todo:  # every lock the executor took is released
        mine = records.lock_run(run.run_dir)
        assert mine is not None
        os.close(mine)
