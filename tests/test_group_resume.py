"""Grouped runs survive interruptions: per-model checkpoints in `train`'s format, group resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from conftest import compared
from test_group import (
    SMALL,
    assert_rows_close,
    assert_weights_close,
    capture,
    configs_of,
    group_models,
)
from test_resume import without_timings
from vanishing import records
from vanishing.data import datasets as data
from vanishing.errors import UsageError
from vanishing.executor import local
from vanishing.settings import naming
from vanishing.training import group
from vanishing.training import loop as train_module
from vanishing.training.group import plan_groups, train_group
from vanishing.training.loop import train

# PReLU twice and apart from each other in the callers' order (a group sorts them together).
RUNS = [("prelu", "default", 0), ("sigmoid", "xavier", 1), ("prelu", "lecun", 2), ("relu", "he", 3)]
OPTIMIZERS = {  # optimizer settings, and PReLU's mode: one slope per layer or per unit
    "adam-unit": {"optimizer": "adam", "prelu_mode": "unit"},
    "sgd-momentum-layer": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "prelu_mode": "layer"},
}
EPOCHS = 3  # 10 steps an epoch on the tiny data set; stopped after 15, in epoch 2


@pytest.fixture
def tiny(tiny_dir) -> data.Dataset:
    return data.load_dataset(data_dir=tiny_dir, verify=False)


def stop_after(steps: int):
    """An on_steps callback that stops training (as Ctrl-C does) after `steps` calls."""
    calls = {"count": 0}

    def stop(count: int) -> None:
        calls["count"] += 1
        if calls["count"] >= steps:
            raise KeyboardInterrupt

    return stop


def interrupted_group(configs, dataset, run_dirs, steps: int = 15) -> None:
    with pytest.raises(KeyboardInterrupt):
        train_group(configs, dataset=dataset, run_dirs=run_dirs, on_steps=stop_after(steps))


def run_dirs(folder: Path, count: int) -> list[Path]:
    return [folder / f"run{i}" for i in range(count)]


@pytest.mark.parametrize("settings", list(OPTIMIZERS))
def test_interrupted_group_resumes_bitwise(tiny, tmp_path, monkeypatch, settings):
    configs = configs_of(RUNS, epochs=EPOCHS, **OPTIMIZERS[settings])
    groups = capture(monkeypatch, group, "fit_group")
    expected = run_dirs(tmp_path / "uninterrupted", len(configs))
    train_group(configs, dataset=tiny, run_dirs=expected)
    dirs = run_dirs(tmp_path / "resumed", len(configs))
    interrupted_group(configs, tiny, dirs)
    for run_dir in dirs:
        checkpoint = torch.load(run_dir / records.CHECKPOINT, weights_only=True)
        assert (checkpoint["epoch"], checkpoint["step"]) == (1, 10)
        assert records.read_metrics(run_dir)[-1]["step"] == 12  # a probe after it: to be cut
    seen = []
    results = train_group(
        configs,
        dataset=tiny,
        run_dirs=dirs,
        resume=True,
        on_epoch=lambda config, row: seen.append((config.seed, row["epoch"])),
    )
    assert sorted(seen) == sorted((c.seed, e) for c in configs for e in (2, 3))  # it continued
    assert [r.status for r in results] == ["ok"] * len(configs)
    uninterrupted, resumed = groups  # the interrupted one returned none
    slopes = [m.weight for layer in resumed.activations for m in layer if hasattr(m, "weight")]
    assert slopes and all((w != 0.25).all() for w in slopes)  # PReLU's slopes learned
    # Bitwise: the resumed group continues from exact copies of every number it had.
    for p, q in zip(resumed.parameters(), uninterrupted.parameters(), strict=True):
        assert torch.equal(p, q)
    for got, want in zip(dirs, expected, strict=True):
        assert without_timings(records.read_metrics(got)) == without_timings(
            records.read_metrics(want)
        )
        result, reference = (records.read_json(d / records.RESULT) for d in (got, want))
        assert without_timings(result) == without_timings(reference)
        assert not (got / records.CHECKPOINT).exists()


@pytest.mark.parametrize("settings", list(OPTIMIZERS))
def test_group_checkpoint_continues_on_the_single_path(tiny, tmp_path, monkeypatch, settings):
    configs = configs_of(RUNS, epochs=EPOCHS, **OPTIMIZERS[settings])
    groups = capture(monkeypatch, group, "fit_group")
    expected = run_dirs(tmp_path / "group", len(configs))
    grouped = train_group(configs, dataset=tiny, run_dirs=expected)
    dirs = run_dirs(tmp_path / "single", len(configs))
    interrupted_group(configs, tiny, dirs)
    singles = capture(monkeypatch, train_module, "fit")
    for config, run_dir, want in zip(configs, dirs, grouped, strict=True):
        seen = []
        got = train(config, dataset=tiny, run_dir=run_dir, resume=True, on_epoch=seen.append)
        assert [row["epoch"] for row in seen] == [2, 3]
        # The group and the single path agree to float tolerance (bmm and mm add in other orders).
        for key in ("test_accuracy", "test_loss", "grad_norms_init", "grad_norms_final"):
            assert getattr(got, key) == pytest.approx(getattr(want, key), rel=1e-4, abs=1e-6)
        assert got.steps == want.steps == 30
        assert got.dead_fraction == pytest.approx(want.dead_fraction)
    for single, model in zip(singles, group_models(groups[0], configs), strict=True):
        for p, q in zip(single.parameters(), model.parameters(), strict=True):
            assert_weights_close(p, q, configs[0].lr)
    for got, want in zip(dirs, expected, strict=True):
        assert_rows_close(records.read_metrics(got), records.read_metrics(want))


def structure(value):
    """Keys, shapes and dtypes of a checkpoint's nested containers; other values as they are."""
    if isinstance(value, dict):
        return {key: structure(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [structure(item) for item in value]
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), value.dtype, value.device)
    return value


def tensors(value, prefix: str = ""):
    """(path, tensor) for every tensor in a checkpoint's nested containers."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from tensors(item, f"{prefix}/{key}")
    elif isinstance(value, torch.Tensor):
        yield prefix, value


def covering(lines: list[bytes], offset: int) -> int:
    """How many whole lines the first `offset` bytes hold (none cut in two)."""
    ends = [sum(map(len, lines[: i + 1])) for i in range(len(lines))]
    assert offset in ends
    return ends.index(offset) + 1


@pytest.mark.parametrize("settings", list(OPTIMIZERS))
def test_group_checkpoint_has_the_single_path_format(tiny, tmp_path, settings):
    configs = configs_of(RUNS, epochs=EPOCHS, **OPTIMIZERS[settings])
    singles = run_dirs(tmp_path / "single", len(configs))
    for config, run_dir in zip(configs, singles, strict=True):
        with pytest.raises(KeyboardInterrupt):
            train(config, dataset=tiny, run_dir=run_dir, on_steps=stop_after(15))
    dirs = run_dirs(tmp_path / "group", len(configs))
    interrupted_group(configs, tiny, dirs)
    for run_dir, single_dir in zip(dirs, singles, strict=True):
        got = torch.load(run_dir / records.CHECKPOINT, weights_only=True)
        want = torch.load(single_dir / records.CHECKPOINT, weights_only=True)
        log, expected_log = json.loads(got.pop("log")), json.loads(want.pop("log"))
        assert set(log) == set(expected_log)
        assert [set(row) for row in log["history"]] == [set(row) for row in expected_log["history"]]
        lines = (run_dir / records.METRICS).read_bytes().splitlines(keepends=True)
        covered = [json.loads(line)["kind"] for line in lines[: covering(lines, log["offset"])]]
        assert covered == ["probe"] * 3 + ["epoch"]  # the rows of epoch 1, to the byte
        # Same keys, shapes, dtypes (weights (out, in) again) and hyper-parameters; per model step
        # counts, config, epoch and step equal.
        assert structure(got) == structure(want)
        assert got["optimizer"]["param_groups"] == want["optimizer"]["param_groups"]
        # The same data order and RNG state, to the bit; the model's numbers to float tolerance
        # (a slice of another model, or a weight not transposed back, would be far off).
        assert torch.equal(got["generator"], want["generator"])
        assert torch.equal(got["torch_rng"], want["torch_rng"])
        for (path, a), (_, b) in zip(tensors(got), tensors(want), strict=True):
            scale = float(b.abs().max())  # Adam's second moments are ~1e-8: tolerance to scale
            torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3 * scale, msg=path)


def test_compare_resumes_in_groups_and_keeps_finished_runs(tiny, tmp_path, monkeypatch):
    base = dataclasses.replace(SMALL, epochs=EPOCHS)
    activations, seeds = ["relu", "prelu", "tanh"], [0, 1]
    reference = compared(base, activations, seeds, tmp_path / "reference", tiny, group=3)
    out = tmp_path / "out"
    save = records.save_checkpoint

    def dir_of(name: str) -> Path:  # 'tanh-seed1': that run's directory, named by its settings
        activation, seed = name.split("-seed")
        return out / naming.run_name(
            dataclasses.replace(base, activation=activation, seed=int(seed))
        )

    def killed(run_dir, config, epoch, *rest):  # while the 2nd group saves epoch 2: a kill
        if Path(run_dir) == dir_of("tanh-seed1") and epoch == 2:
            raise KeyboardInterrupt
        save(run_dir, config, epoch, *rest)

    monkeypatch.setattr(records, "save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):  # groups: relu 0, 1 and prelu 0; prelu 1, tanh 0, 1
        compared(base, activations, seeds, out, tiny, group=3)
    monkeypatch.setattr(records, "save_checkpoint", save)
    epochs = {
        name: torch.load(dir_of(name) / records.CHECKPOINT, weights_only=True)["epoch"]
        for name in ("prelu-seed1", "tanh-seed0", "tanh-seed1")
    }
    assert epochs == {"prelu-seed1": 2, "tanh-seed0": 2, "tanh-seed1": 1}
    with pytest.raises(UsageError, match=r"checkpoints of one epoch, these differ \(.*epoch 2"):
        train_group(
            [dataclasses.replace(base, activation="tanh", seed=s) for s in (0, 1)],
            dataset=tiny,
            run_dirs=[dir_of("tanh-seed0"), dir_of("tanh-seed1")],
            resume=True,
        )
    (dir_of("relu-seed0") / records.RESULT).unlink()  # to train again: the first of its group
    kept = {
        name: (dir_of(name) / records.RESULT).stat()
        for name in ("relu-seed1", "prelu-seed0")  # finished, after an unfinished one
    }
    calls = []
    real_group, real_train = local.train_group, local.train

    def spy_group(configs, **options):
        calls.append(sorted(naming.compare_run_name(c) for c in configs))
        return real_group(configs, **options)

    def spy_train(config, **options):
        calls.append([naming.compare_run_name(config)])
        return real_train(config, **options)

    monkeypatch.setattr(local, "train_group", spy_group)
    monkeypatch.setattr(local, "train", spy_train)
    seen = []
    results = compared(
        base,
        activations,
        seeds,
        out,
        tiny,
        group=3,
        resume=True,
        on_epoch=lambda config, row: seen.append((naming.compare_run_name(config), row["epoch"])),
    )
    # Runs of one checkpoint epoch stay grouped; each of another epoch (or none) goes its way.
    assert sorted(calls) == [["prelu-seed1", "tanh-seed0"], ["relu-seed0"], ["tanh-seed1"]]
    assert sorted(seen) == [
        ("prelu-seed1", 3),
        ("relu-seed0", 1),
        ("relu-seed0", 2),
        ("relu-seed0", 3),
        ("tanh-seed0", 3),
        ("tanh-seed1", 2),
        ("tanh-seed1", 3),
    ]
    for name, stat in kept.items():  # read back, not written again
        now = (dir_of(name) / records.RESULT).stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert not list(out.glob("*/" + records.CHECKPOINT))
    # Groups of other sizes, and the single path: equal to float tolerance.
    for got, want in zip(results, reference, strict=True):
        assert json.dumps(got.config) == json.dumps(want.config)  # read back: lists, not tuples
        assert got.steps == want.steps == 30
        assert_rows_close(records.read_metrics(got.run_dir), records.read_metrics(want.run_dir))
        for key in ("test_accuracy", "test_loss", "grad_norms_final", "dead_fraction"):
            assert getattr(got, key) == pytest.approx(getattr(want, key), rel=1e-4, abs=1e-6)


def test_plan_groups_keeps_checkpoint_epochs_apart():
    configs = [dataclasses.replace(SMALL, seed=s) for s in range(6)]
    assert plan_groups(configs, 3, [2, None, 2, 1, 2, 2]) == [[0, 2, 4], [1], [3], [5]]
    assert plan_groups(configs, 6, [None] * 6) == plan_groups(configs, 6) == [list(range(6))]
