"""The adding problem (Hochreiter and Schmidhuber 1997; as Le, Jaitly and Hinton 2015 and Arjovsky,
Shah and Bengio 2016 set it): a sequence of T steps of two channels, uniform numbers in [0, 1) and
a marker channel of zeros with a 1 at one step of the first half and one of the second; the target
is the sum of the two marked numbers. Always answering 1 (the mean sum) scores a mean squared
error of 1/6 (the variance of a sum of two uniform numbers): a network must carry both numbers
across up to T steps to do better.

The examples are drawn, not read: from fixed seeds, one stream per split and length, in blocks of
BLOCK examples each with its own generator, so that the first N examples of any draw are the N of
a draw of N (`--train-size N` takes the first N), on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

ADDING = "adding"  # the generated data set's name
DEFAULT_LENGTH = 100  # the adding problem's T when none is given
SIZES = {"train": 60000, "test": 10000}  # MNIST's split sizes: the same runs' budgets
SEED = 19970  # the draw's root seed (Hochreiter and Schmidhuber, 1997); a split is one stream
BLOCK = 1000  # examples per generator: a prefix of the data set is drawn by whole blocks
# At most this many steps a block (fewer examples for a long T): a few examples of a very long
# sequence draw as much as they hold, not a thousand of them.
BLOCK_VALUES = 2**20


def block_size(length: int) -> int:
    """Examples per block at T = `length`: BLOCK, fewer where BLOCK_VALUES steps run out."""
    return max(1, min(BLOCK, BLOCK_VALUES // length))


CHANNELS = 2  # the numbers, the markers


def block(split: str, length: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Examples index * size up to (index + 1) * size of a split (size: `block_size`): (size,
    length, 2) float32 inputs and their (size,) float32 targets."""
    size = block_size(length)
    rng = np.random.default_rng([SEED, list(SIZES).index(split), length, index])
    numbers = rng.random((size, length), dtype=np.float32)
    half = length // 2
    first = rng.integers(0, half, size)  # a step of the first half...
    second = rng.integers(half, length, size)  # ...and one of the second
    rows = np.arange(size)
    markers = np.zeros((size, length), dtype=np.float32)
    markers[rows, first] = markers[rows, second] = 1
    sums = numbers[rows, first] + numbers[rows, second]  # float32, as the network computes
    return np.stack([numbers, markers], axis=-1), sums


def generate(split: str, length: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` examples of a split of the adding problem of T = `length` steps:
    inputs (count, length, 2) and targets (count,), float32 on the CPU."""
    if split not in SIZES:
        raise ValueError(f"split must be one of {', '.join(SIZES)}, got {split!r}")
    if not 0 <= count <= SIZES[split]:
        raise ValueError(f"the {split} split has {SIZES[split]} examples, asked for {count}")
    if length < 2:
        raise ValueError(f"the adding problem needs T >= 2 (a marker per half), got {length}")
    parts = [block(split, length, i) for i in range(-(-count // block_size(length)))]
    x = np.concatenate([p[0] for p in parts])[:count] if parts else np.zeros((0, length, 2))
    y = np.concatenate([p[1] for p in parts])[:count] if parts else np.zeros(0)
    return torch.from_numpy(x).float(), torch.from_numpy(y).float()


@dataclass
class AddingProblem:
    """The adding problem's examples, drawn on first use per split and length and kept (a sweep
    over lengths draws each once; a larger count than was drawn draws again, with the same
    prefix). Drawing is deterministic: two threads drawing at once keep equal tensors."""

    drawn: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def examples(self, split: str, length: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `count` inputs (count, length, 2) and targets (count,) of `split`: views of
        the kept draw, not to be written to."""
        kept = self.drawn.get((split, length))
        if kept is None or len(kept[1]) < count:
            kept = generate(split, length, count)
            self.drawn[(split, length)] = kept
        return kept[0][:count], kept[1][:count]
