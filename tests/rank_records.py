"""A data-parallel watched run's records, written in one process as SPEC23 lays them out: the
combined run in D (config.json: "world_size": W, "ranks": "all") and each rank's own run in
D/rank{r} ("world_size", "rank", "ranks"). The ddp helper's torchrun example writes the same
layout for real, with DistributedDataParallel over gloo; here every rank is a real
`vanishing.watch` on its own copy of the model, fed its own slice of the global batch.

What DDP would give, and how one process gives the same:
- the combined run trains the model on the global batch (every rank's slices): its loss is the
  mean of the ranks' losses, its weight gradient the all-reduced one, its signal
  ||dLoss/da|| = sqrt(sum_r s_r^2) / W and its unit statistics over the global batch, as
  SPEC23's combined row;
- rank r's model takes the same optimizer steps (its gradients replaced by the global ones
  before each step, as the all-reduce leaves them), so its weights stay the replicas' weights,
  while its signals and unit statistics are measured on its own slice;
- the weight gradients a rank's watch saw before the all-reduce are its own, so its rows and
  result get the combined run's (`grad_norms`, `vanishing_ratio`), as every rank's are under DDP.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import vanishing
from vanishing import records

RANK_BATCH = 16  # each rank's slice of a step's global batch
STEPS = 30
EVERY = 10
# A rank's run gets the combined run's weight-gradient numbers: identical on every rank.
SHARED_ROW_KEYS = ("grad_norms", "vanishing_ratio")
SHARED_RESULT_KEYS = ("grad_norms_init", "grad_norms_final", "vanishing_ratio_init")


def relu_net(seed: int = 0) -> nn.Module:
    """A small ReLU MLP; its third layer's bias makes some of its units dead on some inputs."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10)
    )
    nn.init.constant_(net[2].bias, -0.4)
    return net


def ddp_run(
    out: Path, world_size: int = 2, make: Any = relu_net, ranks: bool = True, steps: int = STEPS
) -> Path:
    """Train `make()` for `steps` SGD steps as a data-parallel job of `world_size` ranks would,
    writing the combined run into `out` and (with `ranks`) each rank's into out/rank{r}."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(512, 20, generator=generator)  # (512, 20)
    # Rank r's data is shifted by r: its units see inputs of their own, so the ranks differ.
    x = x + 0.5 * torch.arange(512).remainder(world_size).unsqueeze(1)
    y = x[:, :10].argmax(1)  # a learnable labelling
    model = make()
    replicas = [copy.deepcopy(model) for _ in range(world_size)] if ranks else []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    optimizers = [torch.optim.SGD(r.parameters(), lr=0.05) for r in replicas]
    combined = vanishing.watch(model, optimizer, every=EVERY, out=out)
    watches = [
        vanishing.watch(replica, opt, every=EVERY, out=out / f"rank{r}")
        for r, (replica, opt) in enumerate(zip(replicas, optimizers, strict=True))
    ]
    for _ in range(steps):
        # Rank r's slice: the samples of its own parity (its shifted inputs), RANK_BATCH of them.
        picks = [
            torch.randint(0, 512 // world_size, (RANK_BATCH,), generator=generator) * world_size + r
            for r in range(world_size)
        ]
        everyone = torch.cat(picks)  # (world_size * RANK_BATCH,): the global batch
        optimizer.zero_grad()
        F.cross_entropy(model(x[everyone]), y[everyone]).backward()
        for replica, opt, pick in zip(replicas, optimizers, picks, strict=True):
            opt.zero_grad()
            F.cross_entropy(replica(x[pick]), y[pick]).backward()  # this rank's own signals
            for mine, shared in zip(replica.parameters(), model.parameters(), strict=True):
                assert mine.grad is not None and shared.grad is not None
                mine.grad.copy_(shared.grad)  # the all-reduced gradient
            opt.step()
        optimizer.step()
    for watch in [combined, *watches]:
        watch.log(epoch=1, test_accuracy=0.5)
        watch.close()
    distributed(out, world_size, "all" if ranks else "one")
    for r in range(len(replicas)):
        distributed(out / f"rank{r}", world_size, "all", rank=r)
        share_gradients(out, out / f"rank{r}")
    return out


def distributed(run_dir: Path, world_size: int, ranks: str, rank: int | None = None) -> None:
    """config.json (and result.json's copy) with SPEC23's keys of a data-parallel run."""
    keys: dict[str, Any] = {"world_size": world_size, "ranks": ranks}
    if rank is not None:
        keys["rank"] = rank
    config = records.read_json(run_dir / records.CONFIG)
    records.write_json(run_dir / records.CONFIG, {**config, **keys})
    result = records.read_json(run_dir / records.RESULT)
    result["config"] = {**result["config"], **keys}
    records.write_json(run_dir / records.RESULT, result)


def share_gradients(combined: Path, rank_dir: Path) -> None:
    """The rank's rows and result with the combined run's weight-gradient numbers."""
    shared = {row["step"]: row for row in records.read_metrics(combined) if row["kind"] == "probe"}
    rows = records.read_metrics(rank_dir)
    for row in rows:
        if row["kind"] == "probe":
            row.update({key: shared[row["step"]][key] for key in SHARED_ROW_KEYS})
    (rank_dir / records.METRICS).unlink()
    writer = records.MetricsWriter(rank_dir / records.METRICS)
    for row in rows:
        writer.write(row)
    writer.close()
    result = records.read_json(rank_dir / records.RESULT)
    combined_result = records.read_json(combined / records.RESULT)
    result.update({key: combined_result[key] for key in SHARED_RESULT_KEYS})
    records.write_json(rank_dir / records.RESULT, result)


def last_probe(run_dir: Path) -> dict[str, Any]:
    """The run's last probe row, as metrics.jsonl holds it."""
    return [row for row in records.read_metrics(run_dir) if row["kind"] == "probe"][-1]
