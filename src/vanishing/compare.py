"""The main job: train the same MLP with several activations and seeds, then summarise."""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from vanishing import pool
from vanishing.activations import get_activation
from vanishing.config import TrainConfig
from vanishing.data import Dataset
from vanishing.devices import resolve_device
from vanishing.errors import UsageError
from vanishing.group import plan_groups, train_group
from vanishing.records import RunResult, load_checkpoint, load_result
from vanishing.train import train

DEFAULT_ACTIVATIONS = ("sigmoid", "relu", "leaky_relu", "prelu")  # the reference's pair + fixes
DEFAULT_SEEDS = (0, 1, 2)  # three seeds: enough to see whether a gap exceeds the seed spread

SUMMARY_FIELDS = (
    "activation",
    "runs",
    "diverged",
    "test_accuracy_mean",
    "test_accuracy_std",
    "test_loss_mean",
    "seconds_per_epoch",
    "vanishing_ratio_init",
    "dead_percent",
    "saturated_percent",
)


# Most models one group trains at once, per device type. A group amortises the per-step overhead
# (Python, dispatch, kernel launches, the optimizer call) over K models: on a GPU that overhead is
# nearly all of a small MLP's step, so large groups should pay (not measured here: no GPU). On the
# CPU the step is mostly arithmetic already: in a real compare on 2 cores (4 activations, 1 epoch)
# a group of 4 took 13.4 s, one at a time 12.5 s, and two one-thread worker processes 9.8 s
# (`workers`), as Adam's update grows with K and a group evaluates every model. So the CPU trains
# one model per process instead.
MAX_GROUP = {"cpu": 1, "cuda": 64, "mps": 16}


def group_size(device: str) -> int:
    """The largest group `compare` trains at once on this device (`auto` resolved)."""
    return MAX_GROUP.get(resolve_device(device).type, 1)


def run_name(config: TrainConfig) -> str:
    """The run directory's name within a comparison."""
    return f"{config.activation}-seed{config.seed}"


def ensure_writable(out: Path) -> Path:
    """Create the output directory, or fail with a clear message before any training starts."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"cannot write to output directory {out}: {e.strerror or e}") from None
    return out


def compare(
    base: TrainConfig,
    activations: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    dataset: Dataset,
    on_epoch: Callable[[TrainConfig, dict[str, Any]], None] | None = None,
    on_steps: Callable[[int], None] | None = None,
    group: bool | int = True,
    resume: bool = False,
    workers: int = 1,
) -> list[RunResult]:
    """Train `base` once per activation and seed; each run gets its own directory under `out`.

    Runs of one shape train together in groups (`group.train_group`: the same records) of up to
    `group_size` models for the device (1 on the CPU), or of up to `group` when it is a number;
    False trains them one at a time. With `resume`, finished runs are read back and unfinished
    ones continue from their checkpoints, still in groups: of runs whose checkpoints are of one
    epoch (or that have none). Without, every run starts afresh.

    With `workers` > 1 the runs (or groups) train that many at once, each in a forked process
    (`pool`: the cores shared out); the callbacks still run here, in this process. An unknown
    activation is refused by `TrainConfig` before anything trains.
    """
    configs = [dataclasses.replace(base, activation=a, seed=s) for a in activations for s in seeds]
    size = group_size(base.device) if group is True else max(1, int(group))
    run_dirs = [Path(out) / run_name(c) for c in configs]
    results: list[RunResult | None] = [
        load_result(c, d) if resume else None for c, d in zip(configs, run_dirs, strict=True)
    ]
    todo = [i for i, result in enumerate(results) if result is None]
    epochs = [checkpoint_epoch(configs[i], run_dirs[i]) if resume else None for i in todo]
    units = [
        [todo[j] for j in planned]
        for planned in plan_groups([configs[i] for i in todo], size, epochs)
    ]

    def job(members: list[int]) -> pool.Job:
        chosen, dirs = [configs[i] for i in members], [run_dirs[i] for i in members]

        def run(send: pool.Send | None) -> list[RunResult]:
            if send is None:  # in this process: the callbacks themselves
                return train_unit(chosen, dirs, dataset, on_epoch, on_steps, resume)
            progress = Progress(send)  # in a child: through the pipe to `on_message`
            done = train_unit(chosen, dirs, dataset, progress.epoch, progress.steps, resume)
            progress.flush()
            return done

        return run

    def on_message(message: Any) -> None:
        """A child's news, or (None) a heartbeat."""
        if message is None:
            if on_steps is not None:
                on_steps(0)  # lets the caller stop us while children train
        elif message[0] == "steps" and on_steps is not None:
            on_steps(message[1])
        elif message[0] == "epoch" and on_epoch is not None:
            on_epoch(message[1], message[2])

    done = pool.run_jobs([job(members) for members in units], workers, on_message)
    for members, unit_results in zip(units, done, strict=True):
        for i, result in zip(members, unit_results, strict=True):
            results[i] = result
    return results  # type: ignore[return-value]


class Progress:
    """A child's callbacks: epoch rows at once, step counts gathered for a tenth of a second."""

    def __init__(self, send: pool.Send) -> None:
        self.send, self.pending, self.last = send, 0, time.monotonic()

    def epoch(self, config: TrainConfig, row: dict[str, Any]) -> None:
        self.flush()
        self.send(("epoch", config, row))

    def steps(self, count: int) -> None:
        self.pending += count
        if time.monotonic() - self.last > 0.1:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.send(("steps", self.pending))
        self.pending, self.last = 0, time.monotonic()


def train_unit(
    configs: Sequence[TrainConfig],
    run_dirs: Sequence[Path],
    dataset: Dataset,
    on_epoch: Callable[[TrainConfig, dict[str, Any]], None] | None,
    on_steps: Callable[[int], None] | None,
    resume: bool,
) -> list[RunResult]:
    """One run on the single path, or several as a group."""
    if len(configs) > 1:
        return train_group(
            configs,
            dataset=dataset,
            run_dirs=run_dirs,
            on_epoch=on_epoch,
            on_steps=on_steps,
            resume=resume,
        )
    config = configs[0]
    callback = (lambda row: on_epoch(config, row)) if on_epoch else None
    return [
        train(
            config,
            dataset=dataset,
            run_dir=run_dirs[0],
            on_epoch=callback,
            on_steps=on_steps,
            resume=resume,
        )
    ]


def checkpoint_epoch(config: TrainConfig, run_dir: Path) -> int | None:
    """The epoch of the run's checkpoint (one of another config is a UsageError), None if none."""
    checkpoint = load_checkpoint(config, run_dir, torch.device("cpu"))
    return None if checkpoint is None else checkpoint["epoch"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value; nan for none)."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def weighted_percent(fractions: Sequence[float], widths: Sequence[int]) -> float:
    """Per-layer fractions of units -> percent of all hidden units."""
    if not fractions:
        return math.nan
    return 100 * sum(f * w for f, w in zip(fractions, widths, strict=True)) / sum(widths)


def summarize(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """One row per activation, over its seeds, in the order the activations ran."""
    groups: dict[str, list[RunResult]] = {}
    for result in results:
        groups.setdefault(result.config["activation"], []).append(result)
    rows = []
    for activation, runs in groups.items():
        ok = [r for r in runs if r.status == "ok"]
        accuracy, accuracy_std = mean_std([r.test_accuracy for r in ok])
        widths = runs[0].config["hidden"]
        ratios = [r.vanishing_ratio_init for r in runs if r.vanishing_ratio_init > 0]
        rows.append(
            {
                "activation": activation,
                "runs": len(runs),
                "diverged": len(runs) - len(ok),
                "test_accuracy_mean": accuracy,
                "test_accuracy_std": accuracy_std,
                "test_loss_mean": mean_std([r.test_loss for r in ok])[0],
                "seconds_per_epoch": mean_std(
                    [r.train_seconds / len(r.history) for r in ok if r.history]
                )[0],
                # Ratios span orders of magnitude: their geometric mean.
                "vanishing_ratio_init": (
                    math.exp(sum(math.log(v) for v in ratios) / len(ratios)) if ratios else math.nan
                ),
                "dead_percent": mean_std([weighted_percent(r.dead_fraction, widths) for r in ok])[
                    0
                ],
                "saturated_percent": mean_std(
                    [weighted_percent(r.saturated_fraction, widths) for r in ok]
                )[0],
            }
        )
    return rows


TABLE_HEADER = (
    "activation",
    "test acc (%)",
    "test loss",
    "s/epoch",
    "grad ratio L1/Lout at init",
    "dead %",
    "saturated %",
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as an aligned text table."""
    header = TABLE_HEADER
    lines = []
    for row in rows:
        rectifier = get_activation(row["activation"]).family == "rectifier"
        accuracy = f"{100 * row['test_accuracy_mean']:.2f}"
        if row["runs"] - row["diverged"] > 1:
            accuracy += f" ± {100 * row['test_accuracy_std']:.2f}"
        if row["diverged"]:
            accuracy += f" ({row['diverged']} diverged)"
        lines.append(
            (
                get_activation(row["activation"]).label,
                accuracy,
                f"{row['test_loss_mean']:.4f}",
                f"{row['seconds_per_epoch']:.1f}",
                f"{row['vanishing_ratio_init']:.2e}",
                # Dead units are the rectifiers' failure, saturation the others'.
                f"{row['dead_percent']:.1f}" if rectifier else "-",
                "-" if rectifier else f"{row['saturated_percent']:.1f}",
            )
        )
    widths = [max(map(len, column)) for column in zip(header, *lines, strict=True)]
    out = []
    for i, line in enumerate([header, *lines]):
        cells = [cell.rjust(w) for cell, w in zip(line, widths, strict=True)]
        cells[0] = line[0].ljust(widths[0])  # names left, numbers right
        out.append("  ".join(cells))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_summary_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """`summary.csv`: one row per activation, the table's numbers unrounded."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
