"""The live page's job: runs the page started, named and kept as a sweep's are (so `report` and
the page's list read them), trained in a thread of the server that a stop event ends."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vanishing.data.datasets import Dataset
from vanishing.devices import cores, resolve_device
from vanishing.executor import Policy, Run, check, group_size, memory_needed
from vanishing.jobs.common import check_shared, train_runs
from vanishing.settings.config import TrainConfig
from vanishing.settings.naming import run_name


@dataclass(frozen=True)
class LiveRuns:
    """Runs checked and ready to train: their directories and the executor's policy for them."""

    runs: list[Run]
    policy: Policy
    out: Path
    # What the memory check counted on each device: held back from the next job's check.
    memory: dict[torch.device, int] = field(default_factory=dict)

    def train(self, data: Callable[[str], Dataset], stop: threading.Event) -> dict[Path, str]:
        """Train them (in the caller's thread); `data` returns a data set by name."""
        return train_runs(self.runs, self.policy, out=self.out, data=data, stop=stop)


def live_runs(
    configs: Sequence[TrainConfig],
    out: Path,
    resume: bool,
    workers: int | None = None,
    reserved: Mapping[torch.device, int] | None = None,
) -> LiveRuns:
    """The page's runs of `configs` under `out` (the same setting twice is one run), checked
    before anything is written: on the CPU one single-threaded worker per run, up to `workers`
    (default: the cores); on a GPU in this process, as a group. Finished runs are kept, failures
    recorded, each run locked while it trains. `reserved`: the bytes on each device that the
    server's jobs already training need (their `LiveRuns.memory`), set aside in the memory
    check."""
    check_shared(configs)
    device = configs[0].device
    on_cpu = resolve_device(device).type == "cpu"
    unique = {run_name(c): c for c in configs}
    policy = Policy(
        workers=min(len(unique), workers or cores()) if on_cpu else 1,
        threads=1 if on_cpu else None,
        group=group_size(device, True, "local"),
        resume=resume,
        keep_finished=True,
        failures="record",
        claim=True,
    )
    runs = [Run(config, out / name) for name, config in unique.items()]
    units = check(runs, policy, reserved=reserved)
    return LiveRuns(runs, policy, out, memory_needed(units, policy))
