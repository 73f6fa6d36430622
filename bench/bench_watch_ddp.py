"""What a measured step costs under DistributedDataParallel, against the same in one process.

Run: torchrun --standalone --nproc-per-node 2 bench/bench_watch_ddp.py [--chunks 15]
and: .venv/bin/python bench/bench_watch_ddp.py  (one process: the same loop, no DDP)

The seed MLP (784-520-320-240-120-10), SGD, batches of 64 random images per rank, gloo on CPU.
Three copies train side by side, each its own model and optimizer (and DDP wrapper): unwatched,
watched with every=1 (every step measured: its hooks, the ranks' collectives and its row) and
watched with `every` past the last step (the hooks of the steps in between). They take turns in
chunks of 20 steps, each chunk's order starting with the next copy; a copy's cost is the
median over chunks of its time per step minus the unwatched copy's in the same chunk (rank 0's
clock, the ranks in step: DDP's all-reduce makes each step wait for the slower rank).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from vanishing.measure.watch import watch
from vanishing.model.mlp import MLP

CHUNK = 20  # steps per turn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=15)
    parser.add_argument("--chunk", type=int, default=CHUNK, help="steps per turn")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    generator = torch.Generator().manual_seed(rank)
    steps = args.chunk
    x = torch.randn(steps, 64, 784, generator=generator)
    y = torch.randint(0, 10, (steps, 64), generator=generator)
    names = ["unwatched", "every=1 (each step measured)", "hooks only"]
    copies = []
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        for index, every in enumerate([None, 1, 10**9]):
            torch.manual_seed(0)
            model: nn.Module = MLP([520, 320, 240, 120], "relu")
            if distributed:
                model = nn.parallel.DistributedDataParallel(model)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
            if every is not None:
                out = Path(folder) / str(index)
                stack.enter_context(watch(model, optimizer, every=every, out=out))
            copies.append((model, optimizer))
        times: list[list[float]] = [[] for _ in copies]
        for chunk in range(args.chunks + 1):  # the first chunk warms up
            order = [(chunk + k) % len(copies) for k in range(len(copies))]
            for k in order:
                model, optimizer = copies[k]
                if distributed:
                    dist.barrier()
                start = time.perf_counter()
                for step in range(steps):
                    loss = F.cross_entropy(model(x[step]), y[step])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                if chunk:
                    times[k].append((time.perf_counter() - start) / steps)
    if rank == 0:
        base = statistics.median(times[0])
        print(
            f"{world} process(es), torch {torch.__version__}, a step unwatched {base * 1e3:.2f} ms"
        )
        for name, copy in zip(names[1:], times[1:], strict=True):
            extra = statistics.median(t - b for t, b in zip(copy, times[0], strict=True))
            print(f"  {name}: +{extra * 1e3:.2f} ms a step ({extra / base:+.1%})")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
