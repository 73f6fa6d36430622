"""Data sets read as a run's network reads them: MNIST and Fashion-MNIST whole (an MLP), by rows,
by pixels or by permuted pixels (a recurrent network), and the adding problem (`data.adding`,
generated); the first `--train-size`/`--test-size` examples of each split.

Every view is float pixels in [0, 1] of the same images: row r of the rows view is image row r,
the pixels view is the flattened image (row by row), and the permuted view is the pixels view in
one fixed order, the same for every run and seed (`permutation`), as Le, Jaitly and Hinton (2015)
permuted MNIST.
"""

from __future__ import annotations

from typing import Protocol

import torch

from vanishing.data.adding import ADDING, CHANNELS, DEFAULT_LENGTH
from vanishing.data.datasets import DATASETS, Dataset, get_spec
from vanishing.errors import UsageError

__all__ = [
    "ADDING",
    "DEFAULT_LENGTH",
    "SEQUENCES",
    "Reading",
    "baseline_loss",
    "examples",
    "input_size",
    "inputs",
    "outputs",
    "permutation",
    "steps",
    "targets",
    "task",
    "to_inputs",
]

SEQUENCES = ("rows", "pixels", "permuted")  # how a recurrent network reads an image
SIDE = 28  # an image's rows, and pixels per row
PIXELS = SIDE * SIDE
PERMUTATION_SEED = 2015  # the permuted view's one order (Le, Jaitly and Hinton 2015)
SPLITS = ("train", "test")


class Reading(Protocol):
    """What reading a data set needs of a run's settings (a `TrainConfig` has it all)."""

    @property
    def dataset(self) -> str: ...
    @property
    def sequence(self) -> str | None: ...  # None: the whole image at once (an MLP)
    @property
    def length(self) -> int | None: ...  # the adding problem's T (None: DEFAULT_LENGTH)
    @property
    def train_size(self) -> int | None: ...  # the first N training examples (None: all)
    @property
    def test_size(self) -> int | None: ...


def task(name: str) -> str:
    """What a data set asks of a network: "regression" (the adding problem's sum) or
    "classification" (an image's class; also for a name the registry lacks, as records of
    another version may hold)."""
    spec = DATASETS.get(name)
    return "regression" if spec is not None and spec.generated else "classification"


def outputs(name: str) -> int:
    """The network's outputs for a data set: one per class, or 1 for a regression."""
    return 1 if task(name) == "regression" else len(get_spec(name).classes)


def length(config: Reading) -> int:
    """The adding problem's T."""
    return config.length if config.length is not None else DEFAULT_LENGTH


def steps(config: Reading) -> int:
    """Time steps per example: the adding problem's T, 28 rows, 784 pixels; 1 for an MLP (the
    whole image at once)."""
    if config.dataset == ADDING:
        return length(config)
    return {None: 1, "rows": SIDE}.get(config.sequence, PIXELS)


def input_size(config: Reading) -> int:
    """Features per step: the adding problem's 2 channels, a row's 28 pixels, 1 pixel; 784 for
    an MLP."""
    if config.dataset == ADDING:
        return CHANNELS
    return {None: PIXELS, "rows": SIDE}.get(config.sequence, 1)


def examples(dataset: Dataset, split: str, config: Reading) -> int:
    """How many examples of `split` a run of `config` uses: the first `--train-size` or
    `--test-size`, else all; more than the split has is refused (UsageError, one line)."""
    if split not in SPLITS:
        raise ValueError(f"split must be train or test, got {split!r}")
    wanted = config.train_size if split == "train" else config.test_size
    have = dataset.size(split)
    if wanted is None:
        return have
    if wanted > have:
        noun = "training" if split == "train" else "test"
        raise UsageError(
            f"{split} size {wanted} is more than the {have} {noun} examples of {dataset.name}"
        )
    return wanted


def permutation(device: torch.device | str = "cpu") -> torch.Tensor:
    """The permuted view's order of the 784 pixels (int64): one fixed draw, the same for every
    run, seed and call."""
    order = torch.randperm(PIXELS, generator=torch.Generator().manual_seed(PERMUTATION_SEED))
    return order.to(device)


def to_inputs(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images (N, 28, 28) -> float pixels in [0, 1], (N, 784), on the device."""
    return images.to(device).reshape(len(images), -1).float().div_(255)


def inputs(dataset: Dataset, split: str, config: Reading, device: torch.device) -> torch.Tensor:
    """A split's inputs as the config's network reads them, on `device`, float32: (N, 784) for
    an MLP; (N, 28, 28) rows; (N, 784, 1) pixels, permuted or not; the adding problem's
    (N, T, 2). N is `examples`. The adding problem's on the CPU are views of its kept draw."""
    count = examples(dataset, split, config)
    if dataset.generated is not None:
        return dataset.generated.examples(split, length(config), count)[0].to(device)
    images = (dataset.train_images if split == "train" else dataset.test_images)[:count]
    if config.sequence == "permuted":  # the bytes reordered, before they become floats
        images = images.reshape(count, PIXELS)[:, permutation()]
    x = to_inputs(images, device)  # (N, 784), row by row
    if config.sequence is None:
        return x
    if config.sequence == "rows":
        return x.view(count, SIDE, SIDE)  # step r: image row r
    return x.view(count, PIXELS, 1)  # step t: pixel t


def targets(dataset: Dataset, split: str, config: Reading, device: torch.device) -> torch.Tensor:
    """A split's targets for `inputs`' examples, on `device`: int64 labels (N,), or the adding
    problem's float32 sums (N,)."""
    count = examples(dataset, split, config)
    if dataset.generated is not None:
        return dataset.generated.examples(split, length(config), count)[1].to(device)
    labels = dataset.train_labels if split == "train" else dataset.test_labels
    return labels[:count].to(device)


def baseline_loss(targets: torch.Tensor) -> float:
    """A regression's baseline: the mean squared error of always answering 1 (the adding
    problem's mean sum; about 1/6)."""
    return float(((targets.double() - 1) ** 2).mean())
