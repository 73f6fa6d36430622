"""`watch()` inside training loops that are not the plain one: DDP with clip_grad_norm_, with
gradient accumulation under no_sync() (a step is an optimizer step), with buckets as gradient
views, and FSDP2's `fully_shard`: one 2-rank gloo job runs them all (`job`), each checked
against the same loop in one process on the global batch."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

import vanishing
from ranks import run_ranks
from vanishing.errors import UsageError

FEATURES, WIDTH, CLASSES, BATCH, STEPS, EVERY = 6, 16, 3, 8, 4, 2
CLIP = 1e-3  # far below the gradient's norm: clipping changes every step


def make_model(conv: bool = False) -> nn.Sequential:
    """An MLP, or (`conv`) one whose first layer is a Conv1d and a ReLU (its units channels)."""
    torch.manual_seed(0)
    first: list[nn.Module] = [nn.Linear(FEATURES, WIDTH)]
    if conv:
        first = [
            nn.Unflatten(1, (1, FEATURES)),
            nn.Conv1d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * FEATURES, WIDTH),
        ]
    return nn.Sequential(
        *first,
        nn.Tanh(),
        nn.Linear(WIDTH, WIDTH),
        nn.ReLU(),
        nn.Linear(WIDTH, CLASSES),
    )


def make_data(micro: int) -> tuple[Tensor, Tensor]:
    """x (STEPS, micro, BATCH, FEATURES): each step's `micro` global micro-batches."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(STEPS, micro, BATCH, FEATURES, generator=generator)
    return x, x[..., :CLASSES].argmax(dim=-1)


def loop(
    model: nn.Module,
    out: Path,
    micro: int = 1,
    clip: float | None = None,
    rank: int = 0,
    world: int = 1,
    ranks: str = "one",
) -> list[list[float]]:
    """The training loop: per step `micro` backward passes (the first ones under DDP's
    no_sync(), as DDP users accumulate), then clip_grad_norm_ if `clip`, then the step. Returns
    the norms of each measured step's gradients as the optimizer gets them before the clip."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    x, y = make_data(micro)
    share = BATCH // world
    mine = slice(rank * share, (rank + 1) * share)
    given = []
    with vanishing.watch(
        model, optimizer, every=EVERY, out=out, ranks=ranks if world > 1 else "one"
    ):
        for step in range(STEPS):
            optimizer.zero_grad()
            for k in range(micro):
                sync = getattr(model, "no_sync", None)
                last = k == micro - 1
                context = sync() if sync is not None and not last else torch.enable_grad()
                with context:
                    loss = F.cross_entropy(model(x[step, k, mine]), y[step, k, mine]) / micro
                    loss.backward()
            if step % EVERY == 0:
                weighted = (nn.Linear, nn.Conv1d)
                weights = [m.weight for m in model.modules() if isinstance(m, weighted)]
                given.append([float(full(w.grad).norm()) for w in weights])
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
    return given


def full(tensor: Tensor) -> Tensor:
    """A DTensor's whole value (every rank takes part), else the tensor."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


CASES: dict[str, dict[str, Any]] = {
    "clip": {"clip": CLIP},
    "accumulate": {"micro": 3, "ranks": "all"},
    "buckets": {"clip": CLIP},  # gradient_as_bucket_view=True: DDP's grads are bucket views
    "fsdp": {"clip": CLIP, "ranks": "all"},
    "conv": {},  # a Conv1d's ReLU: its units are channels, its values (channel, position)
}


def wrap(case: str, model: nn.Module) -> nn.Module:
    if case == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in model:
            if isinstance(module, nn.Linear):
                fully_shard(module)
        return fully_shard(model)
    views = case == "buckets"
    return nn.parallel.DistributedDataParallel(model, gradient_as_bucket_view=views)


def ranks_main(folder: Path) -> None:
    """Every case on this rank (after torch.distributed's env:// setup)."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        for case, options in CASES.items():
            model = wrap(case, make_model(conv=case == "conv"))
            given = loop(model, folder / case, rank=rank, world=world, **options)
            if rank == 0:
                (folder / f"{case}.json").write_text(json.dumps(given))
        os.chdir(folder / "default")  # without out=: rank 0 chooses, every rank agrees
        model = wrap("default", make_model())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with vanishing.watch(model, optimizer) as w:
            F.cross_entropy(model(torch.randn(4, FEATURES)), torch.zeros(4).long()).backward()
            optimizer.step()
        chosen = str(w.run_dir.resolve())
        (folder / f"default{rank}.json").write_text(json.dumps([chosen, w.config, w.last_row]))
        join(folder, rank)
    finally:
        dist.destroy_process_group()


def join(folder: Path, rank: int) -> None:
    """DDP's Join with uneven inputs (rank 1 has a batch more): every rank's measured step is
    refused before any collective of the watch's, so no rank waits for one."""
    from torch.distributed.algorithms.join import Join

    model = wrap("join", make_model())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    refused = None
    try:
        with vanishing.watch(model, optimizer, every=1, out=folder / "join"), Join([model]):
            for _ in range(1 + rank):
                F.cross_entropy(model(torch.randn(4, FEATURES)), torch.zeros(4).long()).backward()
                optimizer.step()
    except UsageError as error:
        refused = str(error)
    (folder / f"join{rank}.json").write_text(json.dumps(refused))


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ranks")
    (folder / "default").mkdir()
    run_ranks(ranks_main, folder)
    return folder


def probe_rows(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if row["kind"] == "probe"]


def one_process(tmp_path: Path, case: str) -> tuple[list[dict[str, Any]], list[list[float]]]:
    given = loop(make_model(conv=case == "conv"), tmp_path / "one", **CASES[case])
    return probe_rows(tmp_path / "one"), given


def close(found: list[Any], expected: list[Any], rtol: float = 1e-5) -> bool:
    return len(found) == len(expected) and all(
        math.isclose(a, b, rel_tol=rtol, abs_tol=1e-7) for a, b in zip(found, expected, strict=True)
    )


@pytest.mark.parametrize("case", list(CASES))
def test_the_weight_gradient_is_the_averaged_one_before_clipping(job, tmp_path, case):
    rows = probe_rows(job / case)
    given = json.loads((job / f"{case}.json").read_text())  # the job's own, before the clip
    reference, reference_given = one_process(tmp_path, case)
    assert [row["step"] for row in rows] == [0, 2]
    for row, before_clip, expected, expected_given in zip(
        rows, given, reference, reference_given, strict=True
    ):
        assert close(row["grad_norms"], before_clip)  # DDP's own average, to float rounding
        assert close(row["grad_norms"], expected["grad_norms"])  # the one-process gradient
        assert close(before_clip, expected_given)
        assert close(row["weight_norms"], expected["weight_norms"])
        assert close(row["signal_norms"], expected["signal_norms"])
        for key in ("update_ratio", "activation_mean", "activation_std", "saturated_fraction"):
            assert close(row[key], expected[key], rtol=1e-4), key
        assert row["dead_fraction"] == expected["dead_fraction"]
        for found, histogram in zip(
            row["activation_histogram"], expected["activation_histogram"], strict=True
        ):
            assert found["counts"] == histogram["counts"]
            assert close(found["edges"], histogram["edges"])
    config = json.loads((job / case / "config.json").read_text())
    ranks = CASES[case].get("ranks", "one")
    assert (config["world_size"], config["ranks"]) == (2, ranks)
    folders = sorted(p.name for p in (job / case).iterdir() if p.is_dir())
    assert folders == (["rank0", "rank1"] if ranks == "all" else [])
    for folder in folders:  # each rank's own directory: the same averaged gradient
        own = probe_rows(job / case / folder)
        assert [r["grad_norms"] for r in own] == [r["grad_norms"] for r in rows]


def test_without_out_rank_0_chooses_one_directory_for_every_rank(job):
    """Every rank's watch names the directory rank 0 made, the only one; the other rank keeps
    the run's config and rows without writing them."""
    (first, config, row), (second, other_config, other_row) = (
        json.loads((job / f"default{rank}.json").read_text()) for rank in (0, 1)
    )
    made = list((job / "default" / "runs" / "watch").iterdir())
    assert [first] == [str(p.resolve()) for p in made] and second == first
    assert config == other_config and config["ranks"] == "one"
    assert row["grad_norms"] == other_row["grad_norms"] and row["step"] == 0
    written = json.loads((made[0] / "config.json").read_text())
    assert written == config


def test_clipping_changes_the_steps_not_the_measured_gradient(job, tmp_path):
    """Under DDP with clip_grad_norm_ the update is the clipped gradient's (lr x CLIP at
    most: the update ratio is the one process's clipped one), the measured gradient far
    larger than CLIP: the one before the clip."""
    rows = probe_rows(job / "clip")
    reference, _ = one_process(tmp_path, "clip")
    for row, expected in zip(rows, reference, strict=True):
        assert close(row["update_ratio"], expected["update_ratio"], rtol=1e-4)
        assert min(row["grad_norms"]) > 10 * CLIP


def test_a_step_is_an_optimizer_step_under_accumulation(job):
    """3 backward passes per optimizer step, two of them under no_sync(): 4 steps, measured
    at steps 0 and 2, the activations those of each step's last forward."""
    result = json.loads((job / "accumulate" / "result.json").read_text())
    assert result["steps"] == STEPS
    assert [row["step"] for row in probe_rows(job / "accumulate")] == [0, 2]


def test_fsdp_norms_of_sharded_weights_are_the_whole_weights(job, tmp_path):
    rows = probe_rows(job / "fsdp")
    reference, _ = one_process(tmp_path, "fsdp")
    config = json.loads((job / "fsdp" / "config.json").read_text())
    assert config["layers"] == ["0", "2", "4"]
    assert config["world_size"] == 2 and config["ranks"] == "all"
    # fully_shard's own class (FSDPSequential) is not the model's name; the job says FSDP2
    assert config["model"] == "Sequential" and config["parallel"] == "fsdp2"
    clipped = json.loads((job / "clip" / "config.json").read_text())
    assert clipped["model"] == "Sequential" and clipped["parallel"] == "ddp"
    for row, expected in zip(rows, reference, strict=True):
        assert close(row["weight_norms"], expected["weight_norms"])


def test_ddp_join_with_uneven_inputs_is_refused_on_every_rank(job):
    for rank in (0, 1):
        refused = json.loads((job / f"join{rank}.json").read_text())
        assert refused is not None and refused.startswith(
            "watch: DistributedDataParallel's Join (uneven inputs) is not supported"
        )
        print(refused)  # the rank's message, for docs/errors.md's check
