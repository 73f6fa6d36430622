"""What a job shows on a terminal (the command line's and the Python API's): progress bars,
one line per epoch or per finished run, provenance on stderr; and Ctrl-C turned into a stop."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vanishing import records
from vanishing.executor import Run
from vanishing.jobs.common import Progress
from vanishing.settings import naming
from vanishing.settings.config import TrainConfig


def stderr(message: str) -> None:
    """Progress and provenance go to stderr, so stdout stays clean for tables."""
    print(message, file=sys.stderr, flush=True)


def epoch_line(config: TrainConfig, row: dict[str, Any], seeds: int) -> str:
    """`[ReLU] epoch 3 | train loss .. | test loss .. | acc ..% | 1.9 s`, like the reference."""
    label = naming.title(config.to_dict()) + (f" s{config.seed}" if seeds > 1 else "")
    if row.get("test_accuracy") is None:  # a regression: its loss beside always answering 1's
        score = f"test MSE {row['test_loss']:.4f} (baseline {row.get('baseline_loss', 0):.3f})"
    else:
        score = f"test loss {row['test_loss']:.4f} | acc {100 * row['test_accuracy']:.2f}%"
    return (
        f"[{label}] epoch {row['epoch']} | train loss {row['train_loss']:.4f} | {score} | "
        f"{row['train_seconds']:.1f} s"
    )


class StepBar(Progress):
    """train and compare: a bar of optimisation steps, and a line per epoch of each run."""

    def __init__(self, configs: list[TrainConfig]) -> None:
        self.seeds = len({c.seed for c in configs})
        self.runs = len(configs)
        self.bar: Any = None

    def note(self, message: str) -> None:
        stderr(message)

    def planned(self, total: int, skipped: int, steps: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=steps, unit="step", disable=None, dynamic_ncols=True, desc=f"{total} run(s)"
        )

    def epoch(self, config: TrainConfig, row: dict[str, Any]) -> None:
        line = epoch_line(config, row, self.seeds)
        self.bar.write(line) if self.bar is not None else stderr(line)

    def steps(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RunBar(Progress):
    """sweep: a bar of runs, and a line per finished run with its accuracy or its error."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.bar: Any = None
        self.done = self.total = 0

    def note(self, message: str) -> None:
        stderr(message)

    def planned(self, total: int, skipped: int, steps: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="run", disable=None, dynamic_ncols=True, desc="sweep")
        self.bar.update(skipped)
        self.done, self.total = skipped, total
        stderr(f"{total} runs in the grid, {skipped} already finished in {self.out}")

    def finished(self, run: Run, status: str) -> None:
        result = records.read_result(run.run_dir) or {}  # a damaged one: no detail
        accuracy, loss = result.get("test_accuracy"), result.get("test_loss")
        if isinstance(accuracy, (int, float)):
            detail = f"acc {100 * accuracy:.2f}%"
        elif result.get("task") == "regression" and isinstance(loss, (int, float)):
            detail = f"test MSE {loss:.4f}"
        else:
            detail = result.get("error") or ""
        self.done += 1
        line = f"[{self.done}/{self.total}] {run.run_dir.name}: {status} {detail}"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.write(line)
        else:
            stderr(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """A stop event that Ctrl-C and SIGTERM set while the block runs (a second Ctrl-C
    interrupts at once); the previous handlers come back after it. From a thread other than
    the main one (a notebook's worker, a web app) no handler is installed: signals reach the
    main thread only."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the user insists
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def shown(progress: StepBar | RunBar) -> Iterator[threading.Event]:
    """A job on a terminal: its stop event (`stop_on_signals`), and its bar closed however the
    job ends."""
    try:
        with stop_on_signals() as stop:
            yield stop
    finally:
        progress.close()
