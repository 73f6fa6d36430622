"""Surviving long runs: checkpoints, kill and resume, Ctrl-C, full disks, locks, divergence."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ENV, interrupt_after_one_epoch, swept, without_timings
from vanishing import records
from vanishing.data import datasets as data
from vanishing.errors import UsageError
from vanishing.frontends.cli import main
from vanishing.settings import grid, naming
from vanishing.settings.config import TrainConfig, older_defaults
from vanishing.training.loop import train

TINY = ["--no-verify", "--batch-size", "32", "--probe-every", "3", "--probe-size", "32"]
EPOCHS = 50  # about 20 ms each: time to interrupt the run after its first checkpoint
# RReLU draws its slopes from the global RNG while training: resuming must restore that too.
CONFIG = TrainConfig(
    activation="rrelu",
    hidden=(32, 16),
    epochs=EPOCHS,
    batch_size=32,
    probe_every=3,
    probe_size=32,
    device="cpu",
)


def train_command(tiny_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "vanishing",
        "train",
        "--data-dir",
        str(tiny_dir),
        "--activation",
        "rrelu",
        "--hidden",
        "32,16",
        "--epochs",
        str(EPOCHS),
        "--device",
        "cpu",
        "--out",
        str(out),
        *TINY,
        *extra,
    ]


def reference(tiny_dir: Path, run_dir: Path) -> tuple[list, dict]:
    """An uninterrupted run, in this process, with the subprocesses' thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset = data.load_dataset(data_dir=tiny_dir, verify=False)
        train(CONFIG, dataset=dataset, run_dir=run_dir)
    finally:
        torch.set_num_threads(threads)
    return records.read_metrics(run_dir), records.read_json(run_dir / records.RESULT)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupt_and_resume_equals_an_uninterrupted_run(tiny_dir, tmp_path, sig):
    out = tmp_path / "out"
    run_dir = out / naming.run_name(CONFIG)  # train names a run's directory by its settings
    process = subprocess.Popen(
        train_command(tiny_dir, out),
        env=ENV,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (run_dir / records.CHECKPOINT).exists():
        time.sleep(0.005)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert process.returncode == 130, stderr
        assert "interrupted" in stderr and "run the same command with --resume" in stderr
        assert "Traceback" not in stderr
        lines = (run_dir / records.METRICS).read_text().splitlines()
        assert all(json.loads(line) for line in lines)  # no torn line
    else:
        assert process.returncode == -signal.SIGKILL
    assert not (run_dir / records.RESULT).exists()
    checkpoint = torch.load(run_dir / records.CHECKPOINT, weights_only=True)
    epoch = checkpoint["epoch"]
    assert 1 <= epoch < EPOCHS

    done = subprocess.run(
        train_command(tiny_dir, out, "--resume"),
        env=ENV,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # It continued: the first epoch it trained is the one after the checkpoint.
    assert done.stdout.startswith(f"[RReLU] epoch {epoch + 1} |")
    assert not (run_dir / records.CHECKPOINT).exists()

    rows, result = reference(tiny_dir, tmp_path / "reference")
    resumed_rows = records.read_metrics(run_dir)
    assert [r["kind"] for r in resumed_rows] == [r["kind"] for r in rows]  # no row twice
    assert without_timings(resumed_rows) == without_timings(rows)  # bitwise: floats equal
    assert without_timings(records.read_json(run_dir / records.RESULT)) == without_timings(result)


def interrupted_run(tiny_dir: Path, run_dir: Path, steps: int) -> None:
    """Train CONFIG into run_dir and stop it (as Ctrl-C does) after `steps` steps."""
    count = {"steps": 0}

    def stop(n: int) -> None:
        count["steps"] += n
        if count["steps"] >= steps:
            raise KeyboardInterrupt

    dataset = data.load_dataset(data_dir=tiny_dir, verify=False)
    with pytest.raises(KeyboardInterrupt):
        train(
            dataclasses.replace(CONFIG, epochs=5), dataset=dataset, run_dir=run_dir, on_steps=stop
        )


def test_checkpoint_is_plain_tensors_and_a_mismatch_is_refused(capsys, tiny_dir, tmp_path):
    config = dataclasses.replace(CONFIG, epochs=5)
    run_dir = tmp_path / "out" / naming.run_name(config)
    interrupted_run(tiny_dir, run_dir, steps=25)  # 10 steps an epoch: checkpoints of epoch 2
    checkpoint = torch.load(run_dir / records.CHECKPOINT, weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["step"] == 20
    assert checkpoint["generator"].dtype == torch.uint8
    assert checkpoint["torch_rng"].dtype == torch.uint8
    assert {"linears.0.weight", "linears.2.bias"} <= set(checkpoint["model"])
    log = json.loads(checkpoint["log"])
    assert [row["epoch"] for row in log["history"]] == [1, 2]
    assert log["offset"] < (run_dir / records.METRICS).stat().st_size  # rows after it are cut

    dataset = data.load_dataset(data_dir=tiny_dir, verify=False)
    other = dataclasses.replace(config, lr=0.01)
    with pytest.raises(UsageError, match=r"another config: lr=0\.001 \(now 0\.01\)"):
        train(other, dataset=dataset, run_dir=run_dir, resume=True)
    # The command line names its directory by the settings: the other lr is another run.
    argv = ["train", "--data-dir", str(tiny_dir), "--activation", "rrelu", "--hidden", "32,16"]
    argv += ["--epochs", "5", "--device", "cpu", "--out", str(tmp_path / "out"), *TINY]
    assert main([*argv, "--lr", "0.01", "--resume"]) == 0
    assert (tmp_path / "out" / naming.run_name(other) / records.RESULT).is_file()
    assert (run_dir / records.CHECKPOINT).is_file()  # the other run's checkpoint untouched
    # A checkpoint that does not match its directory's settings is refused, never used.
    saved = torch.load(run_dir / records.CHECKPOINT, weights_only=True)
    stranger = tmp_path / "out" / naming.run_name(dataclasses.replace(config, seed=9))
    stranger.mkdir()
    torch.save(saved, stranger / records.CHECKPOINT)
    capsys.readouterr()
    assert main([*argv, "--seed", "9", "--resume"]) == 2
    stderr = capsys.readouterr().err
    assert "checkpoint.pt belongs to a run with another config: seed=0 (now 9)" in stderr
    assert stderr.strip().splitlines()[-1].startswith("vanishing train: error: ")
    # The same config resumes; rows after the checkpoint were cut back, none is duplicated.
    assert main([*argv, "--resume"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("[RReLU] epoch 3 |")
    rows = records.read_metrics(run_dir)
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in rows if r["kind"] == "probe"] == list(range(0, 50, 3))
    assert not (run_dir / records.CHECKPOINT).exists()
    # Without --resume a run starts afresh.
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("[RReLU] epoch 1 |")


def test_an_older_train_directory_resumes_where_it_is(capsys, tiny_dir, tmp_path):
    """`train` named its directory ACTIVATION-seedSEED before: such a directory holding this
    very run resumes there, instead of a second run starting beside it."""
    config = dataclasses.replace(CONFIG, epochs=5)
    run_dir = tmp_path / "out" / "rrelu-seed0"
    interrupted_run(tiny_dir, run_dir, steps=25)
    argv = ["train", "--data-dir", str(tiny_dir), "--activation", "rrelu", "--hidden", "32,16"]
    argv += ["--epochs", "5", "--device", "cpu", "--out", str(tmp_path / "out"), *TINY]
    assert main([*argv, "--resume"]) == 0
    assert capsys.readouterr().out.startswith("[RReLU] epoch 3 |")
    assert records.is_complete(run_dir)
    assert not (tmp_path / "out" / naming.run_name(config)).exists()


def test_divergence_records_the_step_and_the_norms_before(tiny_dir, tmp_path):
    dataset = data.load_dataset(data_dir=tiny_dir, verify=False)
    config = dataclasses.replace(CONFIG, activation="relu", optimizer="sgd", lr=1e12, epochs=3)
    result = train(config, dataset=dataset, run_dir=tmp_path / "run")
    assert result.status == "diverged"
    saved = records.read_json(tmp_path / "run" / records.RESULT)
    before = saved["norms_before_divergence"]
    assert saved["diverged_step"] == result.diverged_step > before["step"] >= 0
    assert len(before["grad_norms"]) == len(before["weight_norms"]) == 3  # two hidden + output
    assert all(v is not None and v > 0 for v in before["grad_norms"] + before["weight_norms"])
    probe = next(
        r for r in records.read_metrics(tmp_path / "run") if r.get("step") == before["step"]
    )
    assert probe["weight_norms"] == before["weight_norms"]
    ok = train(dataclasses.replace(CONFIG, epochs=1), dataset=dataset)
    assert ok.status == "ok" and ok.norms_before_divergence is None


def test_detect_anomaly_option(monkeypatch, tiny_dir, tmp_path):
    from vanishing.jobs import common

    seen = []
    real = common.execute
    monkeypatch.setattr(
        common, "execute", lambda *a, **k: seen.append(torch.is_anomaly_enabled()) or real(*a, **k)
    )
    argv = ["train", "--data-dir", str(tiny_dir), "--hidden", "8", "--epochs", "1"]
    argv += ["--device", "cpu", "--out", str(tmp_path), *TINY]
    assert main([*argv, "--detect-anomaly"]) == 0 and main(argv) == 0
    assert seen == [True, False] and not torch.is_anomaly_enabled()


def test_full_disk_is_one_line_and_leaves_no_torn_row(monkeypatch, capsys, tiny_dir, tmp_path):
    real_write = os.write
    disk = {"full": False}

    def full_disk(fd: int, data: bytes) -> int:
        if disk["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if b'"kind": "epoch", "epoch": 2' in data:
            disk["full"] = True  # a short write, then the disk is full
            return real_write(fd, data[: len(data) // 2])
        return real_write(fd, data)

    monkeypatch.setattr(records.os, "write", full_disk)
    argv = ["train", "--data-dir", str(tiny_dir), "--hidden", "8", "--epochs", "3"]
    code = main([*argv, "--device", "cpu", "--out", str(tmp_path), *TINY])
    stderr = capsys.readouterr().err
    (run_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("relu-d1w8-default-adam")]
    assert code == 2
    assert stderr.strip().splitlines()[-1] == (
        f"vanishing train: error: cannot write {run_dir / records.METRICS}: No space left on device"
    )
    lines = (run_dir / records.METRICS).read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line whole
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1]
    assert not (run_dir / records.RESULT).exists()


def test_metrics_rows_are_appended_whole_and_a_resumed_file_is_cut_back(tmp_path):
    """metrics.jsonl is opened for appending: a second writer on the file (the run's lock
    refuses one; were it not, the file would still not tear) adds its rows after the first's,
    never over them; a writer resumed at an offset cuts the file back there and appends."""
    path = tmp_path / records.METRICS
    first = records.MetricsWriter(path)
    first.write({"kind": "probe", "step": 0})
    head = path.read_bytes()
    second = records.MetricsWriter(path, offset=len(head))
    for step in range(1, 7):
        (first if step % 2 else second).write({"kind": "probe", "step": step, "pad": "x" * step})
    first.close()
    second.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(7))
    resumed = records.MetricsWriter(path, offset=len(head))
    resumed.write({"kind": "epoch", "step": 1})
    resumed.close()
    assert path.read_bytes() == head + b'{"kind": "epoch", "step": 1}\n'
    assert resumed.offset == path.stat().st_size


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_unwritable_out_before_training(capsys, tiny_dir, tmp_path, command):
    blocker = tmp_path / "file"
    blocker.write_text("")
    extra = ["--activations", "relu", "--seeds", "0"] if command == "sweep" else []
    code = main([command, "--data-dir", str(tiny_dir), "--out", str(blocker / "x"), *TINY, *extra])
    assert code == 2 and "cannot write to output directory" in capsys.readouterr().err


def test_a_locked_run_is_left_to_its_holder_and_a_stale_lock_is_taken(tiny_dir, tmp_path):
    spec = grid.spec_from_dict(
        dict(
            activations=("relu",),
            depths=(1,),
            widths=(8,),
            seeds=(0, 1, 2),
            epochs=1,
            batch_size=32,
            probe_every=5,
            probe_size=32,
            device="cpu",
        )
    )
    configs = grid.expand(spec)
    held, stale = (tmp_path / naming.run_name(c) for c in configs[:2])
    stale.mkdir(parents=True)
    (stale / records.LOCK).write_text("999999999\n")  # a dead sweep's lock file
    fd = records.lock_run(held)  # another sweep is training this run
    assert fd is not None and records.lock_run(held) is None
    options = {"data_dir": tiny_dir, "verify": False}
    try:
        outcome = swept(spec, tmp_path, workers=1, data_options=options)
        assert outcome.ran == 2 and not records.is_complete(held)
        assert records.is_complete(stale)
    finally:
        os.close(fd)
    assert swept(spec, tmp_path, workers=1, data_options=options).ran == 1


def test_two_sweeps_on_one_directory_split_the_runs(tiny_dir, tmp_path):
    toml = tmp_path / "grid.toml"
    toml.write_text(
        'activations = ["relu", "tanh"]\ndepths = [1]\nwidths = [32]\nseeds = [0, 1, 2]\n'
        'epochs = 15\nbatch_size = 32\nprobe_every = 5\nprobe_size = 32\ndevice = "cpu"\n'
    )
    out = tmp_path / "out"
    command = [sys.executable, "-m", "vanishing", "sweep", "--config", str(toml)]
    command += ["--data-dir", str(tiny_dir), "--no-verify", "--out", str(out), "--workers", "1"]
    processes = [
        subprocess.Popen(
            command, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    trained = [
        line.split("] ")[1].split(":")[0]
        for stdout, _ in outputs
        for line in stdout.splitlines()
        if line.startswith("[") and ": ok" in line
    ]
    runs = sorted(p.parent.name for p in out.glob("*/result.json"))
    assert len(runs) == 6 and sorted(trained) == runs  # each run trained once, by one sweep
    for name in runs:
        epochs = [r["epoch"] for r in records.read_metrics(out / name) if r["kind"] == "epoch"]
        assert epochs == list(range(1, 16))
        assert records.read_json(out / name / records.RESULT)["status"] == "ok"


def test_a_checkpoint_older_than_the_later_settings_resumes(tiny_dir, tmp_path):
    """A checkpoint written before norm, residual, init_gain and clip_grad_norm existed (its
    config and log state without them) resumes to the uninterrupted result."""
    dataset = data.load_dataset(data_dir=tiny_dir, verify=False)
    config = TrainConfig(
        hidden=(16, 16), epochs=2, batch_size=32, probe_every=4, probe_size=64, device="cpu"
    )
    whole = train(config, dataset=dataset, run_dir=tmp_path / "whole")
    run_dir = tmp_path / "old"
    interrupt_after_one_epoch(config, run_dir, dataset)
    path = run_dir / records.CHECKPOINT
    checkpoint = torch.load(path, weights_only=True)
    old_config, log = json.loads(checkpoint["config"]), json.loads(checkpoint["log"])
    for key in older_defaults():
        del old_config[key]
    del log["clipped_steps"]
    torch.save({**checkpoint, "config": json.dumps(old_config), "log": json.dumps(log)}, path)
    resumed = train(config, dataset=dataset, run_dir=run_dir, resume=True)
    assert resumed.test_accuracy == whole.test_accuracy and resumed.steps == whole.steps
    assert without_timings(resumed.history) == without_timings(whole.history)
