"""The Ray backend: one task per unit on a Ray cluster, which trains into temporary directories on
its node and returns each run's files (no shared file system needed; no resume there)."""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vanishing import records
from vanishing.data.datasets import load_dataset
from vanishing.errors import UsageError
from vanishing.executor.local import (
    Callbacks,
    DoneCallback,
    Locks,
    WorkerError,
    error_line,
    failed_result,
    train_unit,
)
from vanishing.executor.planning import Policy, Run, finished_status
from vanishing.settings.config import TrainConfig


def run_ray(
    units: Sequence[Sequence[Run]],
    policy: Policy,
    data_options: dict[str, Any],
    done: DoneCallback,
    stop: threading.Event,
) -> None:
    """Each unit a Ray task with one CPU (and one GPU for cuda); records come back here.

    The task trains into temporary directories on its node and returns each run's three files,
    which are written here (result.json last). Runs are locked here as for local runs (`Locks`),
    once the cluster is reached; a task that fails is each of its runs' failure (or, with
    failures "raise", a WorkerError).
    """
    try:
        import ray
    except ImportError:
        raise UsageError("--backend ray needs Ray: pip install 'vanishing[ray]'") from None
    try:
        ray.init(address=policy.address, ignore_reinit_error=True, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(
            f"--backend ray: cannot connect to a Ray cluster at {policy.address!r} ({e})"
        ) from None
    remote = ray.remote(ray_task)
    futures: dict[Any, list[Run]] = {}
    with Locks() as locks:
        locks.begin(units, policy)
        try:
            for unit in units:
                members = locks.claim(unit, policy)
                if not members:
                    continue
                configs = [run.config for run in members]
                gpus = 1 if configs[0].device == "cuda" else 0
                try:
                    future = remote.options(num_cpus=1, num_gpus=gpus).remote(configs, data_options)
                except BaseException:
                    locks.release(members)
                    raise
                futures[future] = members
            while futures:
                if stop.is_set():
                    raise KeyboardInterrupt
                ready, _ = ray.wait(list(futures), num_returns=1, timeout=0.5)
                if not ready:
                    continue
                members = futures.pop(ready[0])
                try:
                    try:
                        files = ray.get(ready[0])
                    except Exception as e:  # a task whose worker died
                        if policy.failures == "raise":
                            raise WorkerError(f"ray task failed: {error_line(e)}") from None
                        error = f"ray task failed: {type(e).__name__}"
                        files = [
                            {
                                records.RESULT: records.dumps(
                                    failed_result(r.config, error, r.run_dir)
                                )
                            }
                            for r in members
                        ]
                    for run, run_files in zip(members, files, strict=True):
                        write_files(run.run_dir, run_files)
                finally:
                    locks.release(members)
                for run in members:
                    done(run, finished_status(run) or "failed")
        finally:
            for future in futures:
                ray.cancel(future, force=True)


def ray_task(configs: Sequence[TrainConfig], data_options: dict[str, Any]) -> list[dict[str, str]]:
    """Runs on a Ray worker: train a unit into temporary directories; each run's files' text."""
    torch.set_num_threads(1)
    dataset = load_dataset(configs[0].dataset, **data_options)  # the worker's own cache or source
    with tempfile.TemporaryDirectory(prefix="vanishing-run-") as tmp:
        unit = [Run(config, Path(tmp) / f"run{i}") for i, config in enumerate(configs)]
        policy = Policy(failures="record")
        train_unit(unit, dataset, policy, Callbacks(None, None, threading.Event()))
        names = (records.CONFIG, records.METRICS, records.RESULT)
        return [
            {
                name: (run.run_dir / name).read_text()
                for name in names
                if (run.run_dir / name).is_file()
            }
            for run in unit
        ]


def write_files(run_dir: Path, files: dict[str, str]) -> None:
    """Write a run's returned files, each atomically, result.json last."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        if name != records.RESULT:
            records.write_bytes(run_dir / name, text.encode())
    if records.RESULT in files:
        result = json.loads(files[records.RESULT])
        result["run_dir"] = str(run_dir)
        records.write_json(run_dir / records.RESULT, result)
