"""Where training runs: the device names, resolving `auto`, waiting for queued work, the cores."""

from __future__ import annotations

import os

import torch

from vanishing.errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str) -> torch.device:
    """`auto` is the accelerator when one is present, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available here (try --device auto)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: no Apple GPU is available here (try --device auto)")
    return torch.device(name)


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that timers measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
