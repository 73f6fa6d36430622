"""Resuming from damaged records: a metrics.jsonl that no longer holds the rows its checkpoint
covers, a checkpoint of the wrong structure, a record that is a directory, a result.json that
holds no result. Each ends in one line (or, for a result that is not one, a run trained
again), never a traceback, never a file padded or rows lost without a word."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import interrupt_after_one_epoch
from vanishing import records
from vanishing.data import datasets as data
from vanishing.errors import UsageError
from vanishing.frontends.cli import main
from vanishing.settings.config import TrainConfig
from vanishing.settings.naming import run_name
from vanishing.training.group import train_group

TINY = ["--no-verify", "--batch-size", "32", "--probe-every", "3", "--probe-size", "32"]
SHAPE = ["--hidden", "8", "--epochs", "3", "--device", "cpu", *TINY]
CONFIG = TrainConfig(
    hidden=(8,), epochs=3, batch_size=32, probe_every=3, probe_size=32, device="cpu"
)


@pytest.fixture
def dataset(tiny_dir) -> data.Dataset:
    return data.load_dataset(data_dir=tiny_dir, verify=False)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, tiny_data) -> Path:
    """CONFIG's run directory, stopped in its second epoch: made once, copied by each test."""
    run_dir = tmp_path_factory.mktemp("stopped") / run_name(CONFIG)
    interrupt_after_one_epoch(CONFIG, run_dir, tiny_data)
    return run_dir


@pytest.fixture
def interrupted(stopped) -> Callable[..., Path]:
    """`interrupted(out)`: the run directory `train` gives CONFIG under `out`, stopped in its
    second epoch: a checkpoint of epoch 1, and rows after it."""

    def copy(out: Path) -> Path:
        run_dir = out / run_name(CONFIG)
        shutil.copytree(stopped, run_dir)
        (run_dir / records.LOCK).unlink(missing_ok=True)
        return run_dir

    return copy


def resume(
    capsys, tiny_dir: Path, out: Path, command: str = "train", *options: str
) -> tuple[int, str]:
    """`vanishing COMMAND --resume` on `out` (CONFIG, or as `options` change it): its exit code
    and last line on stderr."""
    extra = ["--activations", "relu", "--seeds", "0"] if command == "compare" else []
    code = main(
        [command, "--data-dir", str(tiny_dir), "--out", str(out), *SHAPE, *extra, *options]
        + ["--resume"]
    )
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return code, err.splitlines()[-1] if err else ""


def offset_of(run_dir: Path) -> int:
    checkpoint = torch.load(run_dir / records.CHECKPOINT, weights_only=True)
    return json.loads(checkpoint["log"])["offset"]


def mismatch(run_dir: Path, reason: str, command: str = "train") -> str:
    return (
        f"vanishing {command}: error: {run_dir / records.METRICS} does not match the run's "
        f"checkpoint.pt ({reason}); run without --resume to start afresh "
        f"(a sweep: remove {run_dir / records.CHECKPOINT}, then --retry-failed)"
    )


def emptied(path: Path, offset: int) -> str:
    path.write_bytes(b"")
    return f"it holds 0 bytes, the checkpoint covers {offset}"


def shortened(path: Path, offset: int) -> str:
    path.write_bytes(path.read_bytes()[: offset // 2])
    return f"it holds {offset // 2} bytes, the checkpoint covers {offset}"


def cut_inside_a_row(path: Path, offset: int) -> str:
    text = path.read_bytes()
    path.write_bytes(text[: offset - 1] + b" " + text[offset:])  # the row's newline gone
    return f"no row ends at byte {offset}, where the checkpoint's rows end"


def another_byte(path: Path, offset: int) -> str:
    text = path.read_bytes()
    path.write_bytes(text[:10] + b"\xff" + text[11:])  # not even UTF-8
    return f"its first {offset} bytes are not the rows the checkpoint covers"


def removed(path: Path, offset: int) -> str:
    path.unlink()
    return f"it is missing, the checkpoint covers {offset} bytes"


def a_directory(path: Path, offset: int) -> str:
    path.unlink()
    path.mkdir()
    return "it is not a file"


DAMAGES = [emptied, shortened, cut_inside_a_row, another_byte, removed, a_directory]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_metrics_that_do_not_match_the_checkpoint_are_refused(
    capsys, tiny_dir, tmp_path, interrupted, damage
):
    run_dir = interrupted(tmp_path)
    path = run_dir / records.METRICS
    reason = damage(path, offset_of(run_dir))
    before = path.read_bytes() if path.is_file() else None
    code, line = resume(capsys, tiny_dir, tmp_path)
    assert (code, line) == (2, mismatch(run_dir, reason))
    assert (path.read_bytes() if path.is_file() else None) == before  # never padded
    assert (run_dir / records.CHECKPOINT).is_file() and not records.is_complete(run_dir)


def test_compare_and_a_group_refuse_it_too(capsys, tiny_dir, tmp_path, interrupted, dataset):
    run_dir = interrupted(tmp_path / "cmp")
    reason = emptied(run_dir / records.METRICS, offset_of(run_dir))
    assert resume(capsys, tiny_dir, tmp_path / "cmp", "compare") == (
        2,
        mismatch(run_dir, reason, "compare"),
    )
    # The grouped trainer, given the checkpoints directly
    configs = [TrainConfig(**{**CONFIG.to_dict(), "seed": seed}) for seed in (0, 1)]
    dirs = [tmp_path / "group" / f"run{seed}" for seed in (0, 1)]
    for config, run_dir in zip(configs, dirs, strict=True):
        interrupt_after_one_epoch(config, run_dir, dataset)
    reason = shortened(dirs[1] / records.METRICS, offset_of(dirs[1]))
    with pytest.raises(UsageError) as refused:
        train_group(configs, dataset=dataset, run_dirs=dirs, resume=True)
    assert f"vanishing train: error: {refused.value}" == mismatch(dirs[1], reason)


def test_a_checkpoint_without_a_crc_still_has_its_size_checked(
    capsys, tiny_dir, tmp_path, interrupted
):
    """Checkpoints written before the CRC was kept resume as before; a short file is refused."""
    run_dir = interrupted(tmp_path)
    path = run_dir / records.CHECKPOINT
    checkpoint = torch.load(path, weights_only=True)
    log = json.loads(checkpoint["log"])
    del log["crc"]
    torch.save({**checkpoint, "log": json.dumps(log)}, path)
    metrics = (run_dir / records.METRICS).read_bytes()
    (run_dir / records.METRICS).write_bytes(metrics + b"\xff not a row\n")  # past the offset
    assert resume(capsys, tiny_dir, tmp_path)[0] == 0
    rows = records.read_metrics(run_dir)
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2, 3]
    assert (run_dir / records.METRICS).read_bytes()[: log["offset"]] == metrics[: log["offset"]]


def change(**entries: Any) -> Callable[[dict], Any]:
    return lambda checkpoint: {**checkpoint, **entries}


def change_log(**entries: Any) -> Callable[[dict], Any]:
    return lambda c: {**c, "log": json.dumps({**json.loads(c["log"]), **entries})}


def change_model(name: str, value: Any) -> Callable[[dict], Any]:
    def changed(c: dict) -> dict:
        model = dict(c["model"])
        if value is None:
            del model[name]
        else:
            model[name] = value
        return {**c, "model": model}

    return changed


def change_optimizer(state: Any = None, params: Any = None) -> Callable[[dict], Any]:
    def changed(c: dict) -> dict:
        optimizer = dict(c["optimizer"])
        if state is not None:
            optimizer["state"] = state(optimizer["state"])
        if params is not None:
            optimizer["param_groups"] = [{**optimizer["param_groups"][0], "params": params}]
        return {**c, "optimizer": optimizer}

    return changed


def without(key: str) -> Callable[[dict], Any]:
    return lambda c: {k: v for k, v in c.items() if k != key}


def other_moment(state: dict) -> dict:
    return {**state, 0: {**state[0], "exp_avg": torch.zeros(3)}}


WEIGHT = "linears.0.weight"  # the first Linear layer's weight: (8, 784)
STRUCTURES: dict[str, tuple[Callable[[dict], Any], str]] = {
    "a list": (lambda c: [1, 2], "holds a list, not a dict"),
    "no model": (without("model"), "no model"),
    "epoch as text": (change(epoch="1"), "epoch is a str, not a int"),
    "model as text": (change(model="x"), "model is a str, not a dict"),
    "config not JSON": (change(config="{"), "config is not JSON"),
    "config a JSON string": (change(config='"relu"'), "config is not a JSON object"),
    "log not JSON": (change(log="nope"), "log is not JSON"),
    "log a list": (change(log="[]"), "log is not a JSON object"),
    "log without offset": (
        lambda c: {**c, "log": json.dumps({"history": []})},
        "log offset None is not a byte count",
    ),
    "log history as text": (change_log(history="x"), "log history is a str"),
    "log status a number": (change_log(status=3), "log status is a int"),
    "log rows without numbers": (
        change_log(history=[{"epoch": 1}]),
        "log history holds something other than epoch rows",
    ),
    "generator of floats": (
        change(generator=torch.zeros(5056)),
        "generator is not a random generator's state",
    ),
    "random state cut short": (
        change(torch_rng=torch.zeros(10, dtype=torch.uint8)),
        "torch_rng is not a random generator's state",
    ),
    "weight of another shape": (
        change_model(WEIGHT, torch.zeros(3, 3)),
        f"model tensor {WEIGHT} has shape (3, 3), the model (8, 784)",
    ),
    "a weight missing": (
        change_model(WEIGHT, None),
        f"model tensors {WEIGHT} do not fit the model",
    ),
    "optimizer without its state": (
        change(optimizer={"x": 1}),
        "optimizer is not an optimizer's state dict",
    ),
    "optimizer moment of another shape": (
        change_optimizer(state=other_moment),
        "optimizer exp_avg of parameter 0 has shape (3,), the parameter (8, 784)",
    ),
    "optimizer of more parameters": (
        change_optimizer(params=list(range(9))),
        "optimizer state is for another number of parameters",
    ),
}


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_a_checkpoint_of_the_wrong_structure_is_one_line(
    capsys, tiny_dir, tmp_path, interrupted, name
):
    damage, reason = STRUCTURES[name]
    run_dir = interrupted(tmp_path)
    path = run_dir / records.CHECKPOINT
    torch.save(damage(torch.load(path, weights_only=True)), path)
    code, line = resume(capsys, tiny_dir, tmp_path)
    assert (code, line) == (
        2,
        f"vanishing train: error: {path}: not a readable checkpoint ({reason})",
    )
    assert path.is_file() and not records.is_complete(run_dir)


@pytest.mark.parametrize("command", ["train", "compare"])
def test_a_checkpoint_that_is_a_directory_is_one_line(capsys, tiny_dir, tmp_path, command):
    run_dir = tmp_path / run_name(CONFIG)
    (run_dir / records.CHECKPOINT).mkdir(parents=True)
    code, line = resume(capsys, tiny_dir, tmp_path, command)
    assert (code, line) == (
        2,
        f"vanishing {command}: error: {run_dir / records.CHECKPOINT}: not a readable checkpoint "
        "(not a file)",
    )


def test_compare_says_which_checkpoint_does_not_fit(capsys, tiny_dir, tmp_path, interrupted):
    damage, reason = STRUCTURES["weight of another shape"]
    run_dir = interrupted(tmp_path)
    path = run_dir / records.CHECKPOINT
    torch.save(damage(torch.load(path, weights_only=True)), path)
    assert resume(capsys, tiny_dir, tmp_path, "compare") == (
        2,
        f"vanishing compare: error: {path}: not a readable checkpoint ({reason})",
    )


def test_a_records_file_that_is_a_directory_is_one_line(capsys, tiny_dir, tmp_path):
    """Started afresh (no checkpoint): metrics.jsonl or result.json in the way is named."""
    run_dir = tmp_path / run_name(CONFIG)
    for name in (records.METRICS, records.RESULT):
        (run_dir / name).mkdir(parents=True)
        code, line = resume(capsys, tiny_dir, tmp_path)
        assert (code, line) == (
            2,
            f"vanishing train: error: cannot write {run_dir / name}: Is a directory",
        )
        (run_dir / name).rmdir()


NOT_RESULTS = {
    "null": "null",
    "a list": "[1, 2]",
    "a string config": '{"status": "ok", "config": "relu"}',
    "not JSON": "{",
    "fields missing": None,  # this config, status ok, nothing else
}


@pytest.mark.parametrize(
    ("command", "name"),
    [("train", name) for name in NOT_RESULTS]
    + [("compare", name) for name in ("null", "a list", "a string config")],
)
def test_a_result_that_holds_no_result_is_trained_again(capsys, tiny_dir, tmp_path, command, name):
    config = TrainConfig(**{**CONFIG.to_dict(), "epochs": 1})
    run_dir = tmp_path / run_name(config)
    run_dir.mkdir()
    text = NOT_RESULTS[name]
    if text is None:
        text = json.dumps({"status": "ok", "config": config.to_dict()})
    (run_dir / records.RESULT).write_text(text)
    assert records.load_result(config, run_dir) is None
    code, _ = resume(capsys, tiny_dir, tmp_path, command, "--epochs", "1")
    assert code == 0
    result = records.load_result(config, run_dir)
    assert result is not None and result.status == "ok" and len(result.history) == 1


def test_train_resume_on_a_failed_run_says_so(capsys, tiny_dir, tmp_path):
    """A run the live page recorded as failed is kept by `train --resume`: it says so."""
    run_dir = tmp_path / run_name(CONFIG)
    run_dir.mkdir()
    failed = {"status": "failed", "error": "RuntimeError: boom", "config": CONFIG.to_dict()}
    (run_dir / records.RESULT).write_text(json.dumps(failed))
    assert resume(capsys, tiny_dir, tmp_path) == (
        2,
        f"vanishing train: error: {run_dir} holds a run that failed (RuntimeError: boom); "
        "run without --resume to train it again",
    )


def test_a_sweep_records_the_mismatch_and_trains_the_run_once_its_checkpoint_is_gone(
    capsys, tiny_dir, tmp_path, interrupted
):
    """A sweep resumes on its own: the run whose records do not match its checkpoint fails with
    the one line (no exception's name before it), the sweep goes on, and with the checkpoint
    removed as the line says, the next sweep with --retry-failed trains the run afresh."""
    out = tmp_path / "sweep"
    run_dir = interrupted(out)
    reason = emptied(run_dir / records.METRICS, offset_of(run_dir))
    sweep = ["sweep", "--data-dir", str(tiny_dir), "--out", str(out), *SHAPE]
    assert main([*sweep, "--activations", "relu", "--seeds", "0"]) == 0
    line = mismatch(run_dir, reason).removeprefix("vanishing train: error: ")
    assert f"failed {line}" in capsys.readouterr().out
    assert records.read_json(run_dir / records.RESULT)["error"] == line
    (run_dir / records.CHECKPOINT).unlink()
    assert main([*sweep, "--activations", "relu", "--seeds", "0", "--retry-failed"]) == 0
    result = records.read_json(run_dir / records.RESULT)
    assert result["status"] == "ok" and len(result["history"]) == 3
    assert len(records.read_metrics(run_dir)) > 0
