"""The executor's checks, made before anything is written or trains: each one here, once.

`check` is the one entry: callers may call it before they load the data (the memory on the
training set's registered size), and `execute` calls it again with the data it trains on (the
memory on its real size, and the batch sizes). What it refuses is a UsageError, one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch

from vanishing.data import sequences
from vanishing.data.datasets import Dataset
from vanishing.devices import cores, resolve_device
from vanishing.errors import UsageError, choices_error
from vanishing.executor.planning import BACKENDS, FAILURES, Policy, Run, plan
from vanishing.executor.pool import pooled
from vanishing.settings.config import TrainConfig
from vanishing.training.loop import check_batch_norm
from vanishing.training.memory import check_fits, estimate


def check(
    runs: Sequence[Run],
    policy: Policy,
    dataset: Dataset | None = None,
    reserved: Mapping[torch.device, int] | None = None,
) -> list[list[Run]]:
    """Refuse what cannot run, before anything is written or trains; the units `execute` would
    train (`plan`). The policy's values; every unit in its device's memory, the units that train
    at once together (`check_memory`), on `dataset`'s training set when it is loaded, else on the
    size its spec registers, besides the bytes `reserved` on each device for runs already
    training (the live server's other jobs: `memory_needed`); with `dataset`, first the
    examples each run asks for (`--train-size`, `--test-size`) against what it has, and last
    each batch against its training set."""
    check_policy(policy)
    units = plan(runs, policy)
    samples = dataset.size("train") if dataset is not None else None
    if dataset is not None:
        check_sizes([run.config for unit in units for run in unit], dataset)
    check_memory(units, policy, samples, reserved)
    if dataset is not None:
        check_batch_sizes([run.config for unit in units for run in unit], dataset)
    return units


def check_policy(policy: Policy) -> None:
    """Refuse a policy the executor has no meaning for (an unknown choice, a count below 1)."""
    if policy.failures not in FAILURES:
        raise choices_error("failure policy", policy.failures, FAILURES)
    check_backend(policy.backend)
    check_workers(policy.workers)
    if policy.group < 1:
        raise UsageError(f"group size must be >= 1, got {policy.group!r}")


def check_workers(workers: int) -> None:
    """Refuse fewer than one worker (`--workers`)."""
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise choices_error("backend", backend, BACKENDS)


def workers_for(device: str, workers: int | None, backend: str = "local") -> int:
    """How many units train at once on `device` (`auto` resolved): `workers`, by default one per
    core on the CPU. A GPU's runs train in this one process (several as a group): a forked child
    cannot use CUDA once the parent has asked whether there is any. Ray places its tasks itself
    (the count is not used)."""
    if workers is not None:
        check_workers(workers)
    check_backend(backend)
    if backend == "ray":
        return workers or 1
    if resolve_device(device).type == "cpu":
        return workers or cores()
    if workers is not None and workers > 1:
        raise UsageError(
            f"--workers {workers}: on a GPU the runs train in one process (runs of one shape "
            "together, as a group); more workers need --device cpu"
        )
    return 1


def check_memory(
    units: Sequence[Sequence[Run]],
    policy: Policy,
    train_samples: int | None = None,
    reserved: Mapping[torch.device, int] | None = None,
) -> None:
    """Refuse (UsageError, one line), before anything trains, units that would not fit in the
    memory of their device (`memory.check_fits`), counting the units that train at once, on a
    training set of `train_samples` images (None: the size its spec registers).

    Local children share the machine's memory: `workers` units at once, each counted as the
    largest (an upper bound, simpler than following the pool's schedule, and loose only for a
    grid of very unequal shapes). Ray's tasks run on the cluster's nodes, whose memory is not
    this machine's: not checked here.
    """
    if policy.backend == "ray":
        return
    reserved = reserved or {}
    at_once = at_once_of(units, policy)
    for (device, models), configs in shapes_of(units).items():
        check_fits(
            configs,
            device,
            models,
            at_once,
            train_samples=train_samples,
            reserved=reserved.get(device, 0),
        )


def at_once_of(units: Sequence[Sequence[Run]], policy: Policy) -> int:
    """How many units train at once: local children share the machine, `workers` at a time."""
    return min(policy.workers, len(units)) if pooled(units, policy) else 1


def shapes_of(units: Sequence[Sequence[Run]]) -> dict[tuple[torch.device, int], list[TrainConfig]]:
    """The units' configs by device and group size, one per shape (seeds need equal memory)."""
    devices: dict[str, torch.device] = {}
    shapes: dict[tuple[torch.device, int], set[TrainConfig]] = {}
    for unit in units:
        for run in unit:
            name = run.config.device
            device = devices.setdefault(name, resolve_device(name))
            config = dataclasses.replace(run.config, seed=0)
            shapes.setdefault((device, len(unit)), set()).add(config)
    return {key: sorted(configs, key=repr) for key, configs in shapes.items()}


def memory_needed(
    units: Sequence[Sequence[Run]], policy: Policy, train_samples: int | None = None
) -> dict[torch.device, int]:
    """The bytes `check_memory` counts for the units on each device (the largest unit, times the
    units at once): what a job already training holds back from the next one's check."""
    if policy.backend == "ray":
        return {}
    at_once = at_once_of(units, policy)
    needed: dict[torch.device, int] = {}
    for (device, models), configs in shapes_of(units).items():
        largest = max(estimate(config, models, train_samples).total for config in configs)
        needed[device] = max(needed.get(device, 0), largest * at_once)
    return needed


def check_sizes(configs: Sequence[TrainConfig], dataset: Dataset) -> None:
    """A `--train-size` or `--test-size` larger than its split: refused (`sequences.examples`)."""
    for config in configs:
        for split in ("train", "test"):
            sequences.examples(dataset, split, config)


def check_batch_sizes(configs: Sequence[TrainConfig], dataset: Dataset) -> None:
    """A batch larger than the training set (the run's first `--train-size` examples) would
    train one short step per epoch, and batch norm cannot normalise a batch of one
    (`train.check_batch_norm`): refused."""
    for config in configs:
        n = sequences.examples(dataset, "train", config)
        check_batch_norm(config, n)
        if config.batch_size > n:
            what = "sequences" if dataset.generated is not None else "images"
            raise UsageError(
                f"--batch-size {config.batch_size} is larger than the training set ({n} "
                f"{what} of {dataset.name}); at most {n}"
            )
