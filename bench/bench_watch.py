"""What watching costs: the seed MLP's training loop, unwatched and watched, in one run.

Run: .venv/bin/python bench/bench_watch.py [--steps 600] [--rounds 5] [--activation relu]

The loop is a user's: the seed experiment's MLP (784-520-320-240-120-10), Adam at 1e-3, batches of
64 random images (the speed does not depend on the pixels). Each round times every variant on the
same steps, in turn, so the machine's noise falls on all of them alike; the best round of each is
compared with the unwatched loop's:
- `every=100`: a probe row every 100 steps, measured on the step's own batch (target: under 5 %);
- `every=100, probe`: the same with a fixed 512-image probe batch, as `vanishing train` measures;
- hooks only: `every` past the last step, so after step 0 (not timed) only the hooks' checks run
  (target: under 1 %).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from vanishing.model import MLP
from vanishing.watching import watch


def loop(model, optimizer, x, y, steps: int) -> float:
    """Seconds for `steps` training steps (batches of 64 cycled from x, y)."""
    start = time.perf_counter()
    for step in range(steps):
        begin = (step * 64) % (len(x) - 64)
        optimizer.zero_grad()
        F.cross_entropy(model(x[begin : begin + 64]), y[begin : begin + 64]).backward()
        optimizer.step()
    return time.perf_counter() - start


def timed(variant: str, args, x, y, probe, out: Path) -> float:
    """One variant's time for args.steps steps after one untimed step (step 0, measured)."""
    torch.manual_seed(0)
    model = MLP([520, 320, 240, 120], args.activation)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    if variant == "unwatched":
        loop(model, optimizer, x, y, 1)
        return loop(model, optimizer, x, y, args.steps)
    every = 10**9 if variant == "hooks only" else 100
    with watch(model, optimizer, every=every, probe=probe if "probe" in variant else None, out=out):
        loop(model, optimizer, x, y, 1)
        # step 1 onwards: with every=100, steps 100, 200, ... are measured
        return loop(model, optimizer, x, y, args.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best of each counts")
    parser.add_argument("--activation", default="relu")
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = torch.rand(4096, 784), torch.randint(0, 10, (4096,))
    probe = (torch.rand(512, 784), torch.randint(0, 10, (512,)))
    variants = ["unwatched", "every=100", "every=100, probe", "hooks only"]
    best = dict.fromkeys(variants, float("inf"))
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for i, variant in enumerate(variants):
                seconds = timed(variant, args, x, y, probe, Path(tmp) / f"{round_}-{i}")
                best[variant] = min(best[variant], seconds)
            print(f"round {round_ + 1}: " + ", ".join(f"{v} {best[v]:.3f} s" for v in variants))
    base = best["unwatched"]
    print(
        f"\n{args.steps} steps of the seed MLP ({args.activation}), best of {args.rounds} rounds, "
        f"{torch.get_num_threads()} threads:"
    )
    for variant in variants:
        cost = best[variant] / base - 1
        print(
            f"  {variant:18s} {best[variant]:7.3f} s  {best[variant] / args.steps * 1e3:6.2f} "
            f"ms/step  cost {cost:+.1%}"
        )


if __name__ == "__main__":
    main()
