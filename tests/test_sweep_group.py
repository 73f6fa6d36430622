"""Grouped sweeps: units of one shape train together, with the same records as one at a time."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import types
from pathlib import Path

import pytest
import torch

from conftest import interrupt_after_one_epoch, swept
from vanishing import executor, records
from vanishing.data import datasets as data
from vanishing.executor import local
from vanishing.executor.ray import ray_task
from vanishing.jobs import sweep
from vanishing.settings import grid, naming
from vanishing.settings.config import TrainConfig

TINY_SETTINGS = {"batch_size": 32, "probe_every": 5, "probe_size": 32, "device": "cpu", "epochs": 1}
TIMINGS = {"train_seconds", "eval_seconds", "probe_seconds", "run_dir"}  # may differ


def tiny_spec(**changes) -> grid.SweepSpec:
    values = {
        "activations": ("relu", "tanh"),
        "depths": (1,),
        "widths": (8,),
        "seeds": (0, 1),
        **TINY_SETTINGS,
        **changes,
    }
    return grid.spec_from_dict(values)


def options(tiny_dir: Path) -> dict:
    return {"data_dir": tiny_dir, "verify": False}


def spy(monkeypatch, name: str) -> list[list[TrainConfig]]:
    """Record the configs of each `local.<name>` call (train or train_group: what the executor
    calls for a unit of one or of several) in this process."""
    calls = []
    original = getattr(local, name)

    def wrapper(configs, **kwargs):
        calls.append(list(configs) if isinstance(configs, list) else [configs])
        return original(configs, **kwargs)

    monkeypatch.setattr(local, name, wrapper)
    return calls


def assert_close(got, expected, where: str = "") -> None:
    """Equal structure; numbers equal to the grouped trainer's float tolerance (test_group)."""
    if isinstance(expected, dict):
        assert set(got) == set(expected), where
        for key in set(expected) - TIMINGS:
            assert_close(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_close(a, b, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-6, nan_ok=True), where
    else:
        assert got == expected, where


def files_of(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir()}


def test_grouped_sweep_writes_what_one_at_a_time_writes(tiny_dir, tmp_path, monkeypatch):
    spec = tiny_spec(depths=(1, 2))  # two shapes of four runs: units of 3 and 1 each
    single = swept(spec, tmp_path / "one", workers=1, data_options=options(tiny_dir))
    groups = spy(monkeypatch, "train_group")
    singles = spy(monkeypatch, "train")
    finished = []
    grouped = swept(
        spec,
        tmp_path / "grouped",
        workers=1,
        data_options=options(tiny_dir),
        group=3,
        on_done=lambda c, d, s: finished.append((d.name, s)),
    )
    assert [len(g) for g in groups] == [3, 3] and len(singles) == 2
    assert {c.hidden for g in groups for c in g} == {(8,), (8, 8)}
    assert grouped.ran == single.ran == 8
    assert sorted(finished) == sorted((r["run_dir"], "ok") for r in single.rows)  # once each
    assert [r["run_dir"] for r in grouped.rows] == [r["run_dir"] for r in single.rows]
    for a, b in zip(grouped.rows, single.rows, strict=True):
        assert a["status"] == b["status"] == "ok"
        for key in ("test_accuracy", "test_loss", "vanishing_ratio_init", "dead_percent"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6, nan_ok=True), key
        one, many = tmp_path / "one" / b["run_dir"], tmp_path / "grouped" / a["run_dir"]
        assert files_of(many) == files_of(one) == {".lock", *records_files()}
        assert records.read_json(many / records.CONFIG) == records.read_json(one / records.CONFIG)
        assert_close(records.read_metrics(many), records.read_metrics(one), a["run_dir"])
        result = records.read_json(many / records.RESULT)
        assert_close(result, records.read_json(one / records.RESULT), a["run_dir"])
        assert result["run_dir"] == str(many)


def records_files() -> tuple[str, ...]:
    return (records.CONFIG, records.METRICS, records.RESULT)


def test_units_run_in_children_and_a_dead_child_fails_its_members(tiny_dir, tmp_path, monkeypatch):
    spec = tiny_spec(activations=("relu", "sigmoid"))  # units: both relu seeds, both sigmoid
    real = local.train_group
    pids = tmp_path / "pids"
    pids.mkdir()

    def killer(configs, **kwargs):
        if configs[0].activation == "sigmoid":
            os.kill(os.getpid(), signal.SIGKILL)  # the child dies without a word
        (pids / str(os.getpid())).write_text(str(len(configs)))
        return real(configs, **kwargs)

    monkeypatch.setattr(local, "train_group", killer)  # the forked children inherit it
    finished = []
    outcome = swept(
        spec,
        tmp_path / "out",
        workers=2,
        data_options=options(tiny_dir),
        group=2,
        on_done=lambda c, d, s: finished.append((c.activation, c.seed, s)),
    )
    assert [(p.name != str(os.getpid()), p.read_text()) for p in pids.iterdir()] == [(True, "2")]
    statuses = sorted((r["activation"], r["seed"], r["status"], r["error"]) for r in outcome.rows)
    assert statuses == [
        ("relu", 0, "ok", None),
        ("relu", 1, "ok", None),
        ("sigmoid", 0, "failed", "worker exited with code -9"),
        ("sigmoid", 1, "failed", "worker exited with code -9"),
    ]
    assert sorted(finished) == [s[:3] for s in statuses]


def test_a_group_that_raises_fails_every_member_and_retry_reruns_them(
    tiny_dir, tmp_path, monkeypatch
):
    spec = tiny_spec(activations=("relu", "tanh", "rrelu"))  # rrelu trains alone, unharmed

    real = local.train_group

    def boom(configs, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(local, "train_group", boom)
    out = tmp_path / "out"
    finished = []
    outcome = swept(
        spec,
        out,
        workers=1,
        data_options=options(tiny_dir),
        group=4,
        on_done=lambda c, d, s: finished.append((c.activation, c.seed, s)),
    )
    statuses = sorted((r["activation"], r["seed"], r["status"], r["error"]) for r in outcome.rows)
    assert statuses == [
        ("relu", 0, "failed", "RuntimeError: boom"),
        ("relu", 1, "failed", "RuntimeError: boom"),
        ("rrelu", 0, "ok", None),
        ("rrelu", 1, "ok", None),
        ("tanh", 0, "failed", "RuntimeError: boom"),
        ("tanh", 1, "failed", "RuntimeError: boom"),
    ]
    assert sorted(finished) == [s[:3] for s in statuses]
    monkeypatch.setattr(local, "train_group", real)
    groups = spy(monkeypatch, "train_group")
    assert swept(spec, out, workers=1, data_options=options(tiny_dir), group=4).ran == 0
    again = swept(spec, out, workers=1, data_options=options(tiny_dir), group=4, retry_failed=True)
    assert again.ran == 4 and [len(g) for g in groups] == [4]
    assert all(r["status"] == "ok" and r["error"] is None for r in again.rows)


def test_a_write_error_in_a_group_stops_the_sweep(tiny_dir, tmp_path, monkeypatch):
    def full(configs, **kwargs):
        raise records.WriteError(28, "No space left on device: metrics.jsonl")

    monkeypatch.setattr(local, "train_group", full)
    with pytest.raises(records.WriteError):
        swept(tiny_spec(), tmp_path / "out", workers=1, data_options=options(tiny_dir), group=4)
    assert not list((tmp_path / "out").glob("*/" + records.RESULT))


def test_a_checkpointed_run_resumes_alone_while_the_others_group(tiny_dir, tmp_path, monkeypatch):
    spec = tiny_spec(epochs=2)
    dataset = data.load_dataset(data_dir=tiny_dir, verify=False)
    out = tmp_path / "out"
    configs = grid.expand(spec)
    interrupted = configs[1]
    run_dir = out / naming.run_name(interrupted)
    interrupt_after_one_epoch(interrupted, run_dir, dataset)
    rows = records.read_metrics(run_dir)
    # Epoch 1's rows, the epoch row's timings included: a restart would change them.
    epoch_one = rows[: next(i for i, r in enumerate(rows) if r["kind"] == "epoch") + 1]
    groups = spy(monkeypatch, "train_group")
    singles = spy(monkeypatch, "train")
    outcome = swept(spec, out, workers=1, dataset=dataset, group=4)
    assert outcome.ran == 4 and all(r["status"] == "ok" for r in outcome.rows)
    assert groups == [[configs[0], configs[2], configs[3]]] and singles == [[interrupted]]
    rows = records.read_metrics(run_dir)
    assert rows[: len(epoch_one)] == epoch_one  # continued, not restarted
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2]
    assert not (run_dir / records.CHECKPOINT).exists()
    # Without resume a checkpoint is no reason to train alone: the run starts afresh in the group.
    other = dataclasses.replace(interrupted, seed=2)
    interrupt_after_one_epoch(other, tmp_path / "fresh" / "a", dataset)
    members = [
        executor.Run(configs[0], tmp_path / "fresh" / "b"),
        executor.Run(other, tmp_path / "fresh" / "a"),
    ]
    statuses = executor.execute(members, executor.Policy(group=2, resume=False), dataset=dataset)
    assert statuses == {run.run_dir: "ok" for run in members}
    assert groups[-1] == [configs[0], other] and len(singles) == 1
    assert not (tmp_path / "fresh" / "a" / records.CHECKPOINT).exists()
    rows = records.read_metrics(tmp_path / "fresh" / "a")
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2]


def test_runs_checkpointed_at_one_epoch_resume_as_a_group(tiny_dir, tmp_path, monkeypatch):
    spec = tiny_spec(epochs=2)
    dataset = data.load_dataset(data_dir=tiny_dir, verify=False)
    out = tmp_path / "out"
    configs = grid.expand(spec)
    for config in configs[:2]:
        interrupt_after_one_epoch(config, out / naming.run_name(config), dataset)
    damaged = out / naming.run_name(configs[2]) / records.CHECKPOINT
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a checkpoint")
    groups = spy(monkeypatch, "train_group")
    singles = spy(monkeypatch, "train")
    outcome = swept(spec, out, workers=1, dataset=dataset, group=4)
    # Both epoch-1 checkpoints continue together; the damaged one alone (after the units that
    # were planned), where it fails.
    assert groups == [configs[:2]] and sorted(singles, key=lambda unit: unit[0].seed) == [
        [configs[2]],
        [configs[3]],
    ]
    status = {r["run_dir"]: r["status"] for r in outcome.rows}
    assert status[damaged.parent.name] == "failed"
    assert sorted(status.values()) == ["failed", "ok", "ok", "ok"]
    for config in configs[:2]:
        rows = records.read_metrics(out / naming.run_name(config))
        assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2]


def test_ray_task_returns_every_members_files(tiny_dir, monkeypatch):
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # a Ray worker's, not ours
    configs = grid.expand(tiny_spec())[:3]
    groups = spy(monkeypatch, "train_group")
    files = ray_task(configs, options(tiny_dir))
    assert len(files) == 3 and [len(g) for g in groups] == [3]
    for config, run_files in zip(configs, files, strict=True):
        assert set(run_files) == set(records_files())
        result = json.loads(run_files[records.RESULT])
        assert result["status"] == "ok" and TrainConfig.from_dict(result["config"]) == config
    (one,) = ray_task(configs[:1], options(tiny_dir))
    assert json.loads(one[records.RESULT])["test_accuracy"] == pytest.approx(
        json.loads(files[0][records.RESULT])["test_accuracy"], rel=1e-4, abs=1e-6
    )
    assert len(groups) == 1  # a unit of one is the single path


@dataclasses.dataclass(eq=False)  # hashable by identity, as Ray's object refs
class Future:
    value: object


class FakeRay(types.ModuleType):
    """Just enough of Ray for `run_ray`: tasks run when submitted; `fail` names ones that die."""

    def __init__(self, fail: str) -> None:
        super().__init__("ray")
        self.fail = fail
        self.submitted: list[tuple[list[TrainConfig], dict]] = []

    def init(self, **kwargs) -> None:
        pass

    def remote(self, function):
        fake = self

        class Remote:
            def options(self, **resources):
                def submit(configs, data_options):
                    fake.submitted.append((list(configs), resources))
                    if any(c.activation == fake.fail for c in configs):
                        return Future(RuntimeError("worker died"))
                    return Future(function(configs, data_options))

                return types.SimpleNamespace(remote=submit)

        return Remote()

    def wait(self, futures, num_returns, timeout):
        return futures[:num_returns], futures[num_returns:]

    def get(self, future):
        if isinstance(future.value, Exception):
            raise future.value
        return future.value

    def cancel(self, future, force) -> None:
        pass


def test_run_ray_sends_one_task_per_unit(tiny_dir, tmp_path, monkeypatch):
    fake = FakeRay(fail="tanh")
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # a Ray worker's, not ours
    spec = tiny_spec(activations=("relu", "tanh"), depths=(1, 2))
    out = tmp_path / "out"
    outcome = swept(spec, out, backend="ray", data_options=options(tiny_dir), group=2)
    assert [[(c.activation, c.hidden) for c in configs] for configs, _ in fake.submitted] == [
        [("relu", (8,)), ("relu", (8,))],
        [("tanh", (8,)), ("tanh", (8,))],
        [("relu", (8, 8)), ("relu", (8, 8))],
        [("tanh", (8, 8)), ("tanh", (8, 8))],
    ]
    assert all(resources == {"num_cpus": 1, "num_gpus": 0} for _, resources in fake.submitted)
    assert outcome.ran == len(outcome.rows) == 8
    for row in outcome.rows:
        if row["activation"] == "tanh":
            assert (row["status"], row["error"]) == ("failed", "ray task failed: RuntimeError")
        else:
            assert row["status"] == "ok" and row["test_accuracy"] > 0
            assert (out / row["run_dir"] / records.METRICS).is_file()
        result = records.read_json(out / row["run_dir"] / records.RESULT)
        assert result["run_dir"] == str(out / row["run_dir"])


def test_cli_no_group_reaches_the_sweep(tiny_dir, tmp_path, monkeypatch):
    from vanishing.frontends.cli import main

    seen = []

    def fake_sweep(spec, out, **kwargs):
        seen.append(kwargs["group"])
        raise KeyboardInterrupt  # ends the command (exit 130) before any run or report

    monkeypatch.setattr(sweep, "sweep", fake_sweep)
    argv = [
        "sweep",
        "--activations",
        "relu",
        "--hidden",
        "8",
        "--seeds",
        "0",
        "--workers",
        "1",
        "--data-dir",
        str(tiny_dir),
        "--no-verify",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*argv, "--no-group"]) == 130
    assert main(argv) == 130
    assert seen == [False, True]
