"""A DistributedDataParallel job watched by `vanishing.watch`: the single-process loop unchanged.

    torchrun --standalone --nproc-per-node 2 examples/watch_ddp.py --out runs/watch/ddp
    vanishing report runs/watch/ddp

`train` is the loop anyone writes for one process (and `python examples/watch_ddp.py` runs it
so); the lines marked DDP are the whole difference: the process group (gloo, on CPU), the model
wrapped in DistributedDataParallel and each rank's share of the batch. `watch` is given the
wrapped model and writes ONE run, from rank 0: the layers named as the model's own ("0", "2",
not "module.0"), the weight gradients DDP averages (the same on every rank), and the signals
and unit statistics over the global batch (`vanishing.measure.watch.distributed`). Add
`--ranks all` for each rank's own measurements in OUT/rank0, OUT/rank1 as well.

The model: 8 sigmoid layers at PyTorch's default init, on a synthetic task (20 Gaussian
features, the class the largest of the first 4). Its back-propagated signal shrinks by about
0.2 per layer (sigmoid's slope is at most 1/4): the report's verdict is a vanishing gradient.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import vanishing
from vanishing.measure.watch import Watch

DEPTH, WIDTH, FEATURES, CLASSES = 8, 32, 20, 4
BATCH, STEPS, EVERY, LR = 32, 24, 4, 0.5  # the global batch: split between the ranks


def make_model(seed: int = 0) -> nn.Sequential:
    """DEPTH Linear + Sigmoid layers, then a Linear classifier; the same weights for a seed."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(DEPTH):
        layers += [nn.Linear(FEATURES if i == 0 else WIDTH, WIDTH), nn.Sigmoid()]
    layers.append(nn.Linear(WIDTH, CLASSES))
    return nn.Sequential(*layers)


def make_data(steps: int = STEPS, batch: int = BATCH, seed: int = 1) -> tuple[Tensor, Tensor]:
    """Every step's global batch: x (steps, batch, FEATURES), y (steps, batch)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, batch, FEATURES, generator=generator)
    return x, x[..., :CLASSES].argmax(dim=-1)


def train(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    out: Path | str | None,
    rank: int = 0,
    world: int = 1,
    ranks: str = "one",
) -> Watch:
    """The ordinary loop, watched; rank `rank` of `world` takes its share of each batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    share = x.shape[1] // world
    mine = slice(rank * share, (rank + 1) * share)  # DDP: a DistributedSampler's job
    with vanishing.watch(model, optimizer, every=EVERY, out=out, ranks=ranks) as w:
        for step in range(len(x)):
            loss = F.cross_entropy(model(x[step, mine]), y[step, mine])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        test_x, test_y = make_data(1, 256, seed=2)
        with torch.no_grad():  # the same on every rank: the model is
            accuracy = (model(test_x[0]).argmax(dim=-1) == test_y[0]).float().mean()
        w.log(epoch=1, test_accuracy=float(accuracy))
    return w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--ranks", choices=("one", "all"), default="one")
    args = parser.parse_args(argv)
    distributed = "RANK" in os.environ  # started by torchrun
    if not distributed:
        w = train(make_model(), *make_data(), args.out)
        print(f"wrote {w.run_dir}")
        return 0
    import torch.distributed as dist  # DDP

    dist.init_process_group("gloo")  # DDP
    try:
        rank, world = dist.get_rank(), dist.get_world_size()  # DDP
        model = nn.parallel.DistributedDataParallel(make_model())  # DDP
        w = train(model, *make_data(), args.out, rank, world, args.ranks)
        if rank == 0:
            print(f"wrote {w.run_dir}")
    finally:
        dist.destroy_process_group()  # DDP
    return 0


if __name__ == "__main__":
    sys.exit(main())
