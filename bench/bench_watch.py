"""What watching costs: the seed MLP's training loop, unwatched and watched, in one run.

Run: .venv/bin/python bench/bench_watch.py [--chunks 40] [--activation relu]

The loop is a user's: the seed experiment's MLP (784-520-320-240-120-10), Adam at 1e-3, batches of
64 random images (the speed does not depend on the pixels). Four copies train side by side, each
its own model and optimizer: unwatched, and watched three ways. They take turns in chunks of 100
steps (each chunk's order starting with the next copy), so that the machine's noise, which on a
shared machine is as large as the costs measured, falls on all of them alike; a copy's cost is
the median over chunks of its time over the unwatched copy's time in the same chunk, minus 1:
- `every=100`: a probe row every 100 steps, measured on the step's own batch (target: under 5 %);
- `every=100, probe`: the same with a fixed 512-image probe batch, as `vanishing train` measures;
- hooks only: `every` past the last step, so after step 0 only the hooks' checks run
  (target: under 1 %).
Each chunk of 100 steps holds exactly one measured step of the `every=100` copies.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import torch
from torch.nn import functional as F

from vanishing.measure.watch import watch
from vanishing.model.mlp import MLP

CHUNK = 100  # steps per turn: one measured step of an every=100 copy


def loop(model, optimizer, x, y, steps: int, first: int) -> float:
    """Seconds for `steps` training steps (batches of 64 cycled from x, y)."""
    start = time.perf_counter()
    for step in range(first, first + steps):
        begin = (step * 64) % (len(x) - 64)
        optimizer.zero_grad()
        F.cross_entropy(model(x[begin : begin + 64]), y[begin : begin + 64]).backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=40, help="turns of 100 steps per copy")
    parser.add_argument("--activation", default="relu")
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = torch.rand(4096, 784), torch.randint(0, 10, (4096,))
    probe = (torch.rand(512, 784), torch.randint(0, 10, (512,)))
    variants = ["unwatched", "every=100", "every=100, probe", "hooks only"]
    copies = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        for i, variant in enumerate(variants):
            torch.manual_seed(0)
            model = MLP([520, 320, 240, 120], args.activation)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            if variant != "unwatched":
                every = 10**9 if variant == "hooks only" else CHUNK
                given = probe if "probe" in variant else None
                out = Path(tmp) / str(i)
                stack.enter_context(watch(model, optimizer, every=every, probe=given, out=out))
            copies[variant] = (model, optimizer)
        for model, optimizer in copies.values():  # warm up: not timed
            loop(model, optimizer, x, y, CHUNK, 0)
        times: dict[str, list[float]] = {variant: [] for variant in variants}
        for chunk in range(args.chunks):
            turn = variants[chunk % len(variants) :] + variants[: chunk % len(variants)]
            for variant in turn:
                model, optimizer = copies[variant]
                times[variant].append(loop(model, optimizer, x, y, CHUNK, (chunk + 1) * CHUNK))
        # The hooks' own time, where nothing else hides it: a 2-2 model's steps, unwatched and
        # hooks only, in turns; its difference per step, over the seed MLP's step time.
        tiny = {}
        for hooked in (False, True):
            torch.manual_seed(0)
            small = torch.nn.Sequential(
                torch.nn.Linear(784, 2), torch.nn.ReLU(), torch.nn.Linear(2, 10)
            )
            small_optimizer = torch.optim.SGD(small.parameters(), lr=0.0)
            if hooked:
                stack.enter_context(watch(small, small_optimizer, every=10**9, out=Path(tmp) / "t"))
            loop(small, small_optimizer, x, y, CHUNK, 0)
            tiny[hooked] = (small, small_optimizer)
        tiny_times: dict[bool, list[float]] = {False: [], True: []}
        for chunk in range(args.chunks):
            for hooked in (chunk % 2 == 0, chunk % 2 == 1):
                small, small_optimizer = tiny[hooked]
                tiny_times[hooked].append(loop(small, small_optimizer, x, y, CHUNK, chunk * CHUNK))
    base = times["unwatched"]
    hook_seconds = (
        statistics.median(tiny_times[True]) - statistics.median(tiny_times[False])
    ) / CHUNK
    print(
        f"{args.chunks} chunks of {CHUNK} steps of the seed MLP ({args.activation}), "
        f"{torch.get_num_threads()} threads; cost = median over chunks of time / unwatched - 1:"
    )
    for variant in variants:
        ratios = [t / b for t, b in zip(times[variant], base, strict=True)]
        cost = statistics.median(ratios) - 1
        per_step = statistics.median(times[variant]) / CHUNK * 1e3
        print(f"  {variant:18s} {per_step:6.2f} ms/step  cost {cost:+.1%}")
    step = statistics.median(base) / CHUNK
    print(
        f"the hooks alone (a 784-2-10 model's steps, hooks only against unwatched): "
        f"{hook_seconds * 1e6:.1f} us a step, {hook_seconds / step:.2%} of the seed MLP's step"
    )


if __name__ == "__main__":
    main()
