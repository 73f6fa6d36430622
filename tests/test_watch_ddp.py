"""`watch()` under DistributedDataParallel: examples/watch_ddp.py run on 2 gloo ranks (one job,
`ddp_run`) writes one run, named and measured as the same loop in one process on the global
batch, with the same verdict; ranks="all" adds each rank's own; the arguments a job cannot be
watched with are one-line errors; a step is an optimizer step under gradient accumulation."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

import vanishing
from ranks import run_ranks
from vanishing import reporting as report
from vanishing.errors import UsageError
from vanishing.measure.watch import distributed, watched_by
from vanishing.reporting import loading
from vanishing.reporting.verdict import judge

EXAMPLE = Path(__file__).parents[1] / "examples" / "watch_ddp.py"
BENCH = Path(__file__).parents[1] / "bench" / "bench_watch_ddp.py"


def load_example(path: Path = EXAMPLE) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example()


@pytest.fixture(scope="module")
def ddp_run(example: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example on 2 ranks, as `torchrun --nproc-per-node 2` starts it, with --ranks all."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    run_ranks(example.main, ["--out", str(out), "--ranks", "all"])
    return out


@pytest.fixture(scope="module")
def one_run(example: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's loop in one process, on the same global batches."""
    out = tmp_path_factory.mktemp("one") / "run"
    example.train(example.make_model(), *example.make_data(), out)
    return out


def probe_rows(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if row["kind"] == "probe"]


def config_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "config.json").read_text())


def close(found: list[float], expected: list[float], rtol: float = 1e-5) -> bool:
    return len(found) == len(expected) and all(
        math.isclose(a, b, rel_tol=rtol, abs_tol=1e-9) for a, b in zip(found, expected, strict=True)
    )


def verdict_of(run_dir: Path) -> report.Verdict:
    runs, notes = loading.load_runs([run_dir])
    assert not notes
    (point,) = report.make_points(runs)
    return judge(point)


def test_a_ddp_job_writes_one_run_named_as_the_model(ddp_run, one_run):
    assert sorted(p.name for p in ddp_run.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "metrics.jsonl",
        "rank0",
        "rank1",
        "result.json",
    ]
    config = config_of(ddp_run)
    assert config["layers"] == config_of(one_run)["layers"] == [str(i) for i in range(0, 17, 2)]
    assert config["model"] == "Sequential"
    assert (config["world_size"], config["ranks"]) == (2, "all")
    assert "rank" not in config and "world_size" not in config_of(one_run)
    for rank in (0, 1):
        own = config_of(ddp_run / f"rank{rank}")
        assert (own["world_size"], own["rank"], own["ranks"]) == (2, rank, "all")
        assert own["layers"] == config["layers"]
        assert (ddp_run / f"rank{rank}" / "result.json").exists()


def test_the_job_measures_what_one_process_does_on_the_global_batch(ddp_run, one_run):
    rows, expected_rows = probe_rows(ddp_run), probe_rows(one_run)
    assert (
        [row["step"] for row in rows]
        == [row["step"] for row in expected_rows]
        == [
            0,
            4,
            8,
            12,
            16,
            20,
        ]
    )
    for row, expected in zip(rows, expected_rows, strict=True):
        for key in ("grad_norms", "weight_norms", "update_ratio", "signal_norms"):
            assert close(row[key], expected[key]), key
        for key in ("activation_mean", "activation_std", "saturated_fraction"):
            assert close(row[key], expected[key], rtol=1e-4), key
        assert row["dead_fraction"] == expected["dead_fraction"]
        counts = [histogram["counts"] for histogram in row["activation_histogram"]]
        assert counts == [histogram["counts"] for histogram in expected["activation_histogram"]]
        # the spread across samples of the deep layers is a few float32 steps of 0.5: the
        # two forwards' rounding (a 16-sample and a 32-sample matmul) shows at 1e-3
        assert close(row["activation_spread"], expected["activation_spread"], rtol=1e-2)


def test_the_signal_is_the_ranks_signals_combined(ddp_run):
    """The job's loss is the mean of the ranks': its signal over the global batch is
    sqrt(s_0^2 + s_1^2) / 2 of each rank's own signal s_r (in its own directory); the weight
    gradients are the averaged ones in every directory."""
    rows = probe_rows(ddp_run)
    own = [probe_rows(ddp_run / f"rank{rank}") for rank in (0, 1)]
    for row, first, second in zip(rows, *own, strict=True):
        combined = [
            math.hypot(a, b) / 2
            for a, b in zip(first["signal_norms"], second["signal_norms"], strict=True)
        ]
        assert close(row["signal_norms"], combined)
        assert first["signal_norms"] != second["signal_norms"]  # each rank's own batch
        assert first["grad_norms"] == second["grad_norms"] == row["grad_norms"]


def test_the_job_gets_the_one_process_verdict(ddp_run, one_run):
    found, expected = verdict_of(ddp_run), verdict_of(one_run)
    assert found.kinds[0] == "vanishing"
    assert found.headline == expected.headline
    assert found.kinds == expected.kinds


@pytest.fixture
def world_of_one(tmp_path):
    """An initialised gloo process group of one process (a DDP model can be built)."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_a_ddp_model_is_watched_by_its_own_names(world_of_one, tmp_path):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    wrapped = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    with vanishing.watch(
        wrapped, optimizer, every=1, out=tmp_path / "run", layers=["module.0"]
    ) as w:
        F.cross_entropy(wrapped(x), y).backward()
        optimizer.step()
        assert watched_by(wrapped) is w and watched_by(model) is w
    assert watched_by(wrapped) is None and watched_by(model) is None
    config = config_of(tmp_path / "run")
    assert config["layers"] == ["0"] and config["model"] == "Sequential"
    assert "world_size" not in config  # a world of one is one process


@pytest.mark.parametrize(
    "ranks, message",
    [
        ("every", 'watch: ranks must be "one" (one run, written by rank 0) or "all" (that run'),
        (2, 'watch: ranks must be "one" (one run, written by rank 0) or "all"'),
        ("all", 'watch: ranks="all" needs torch.distributed: an initialised process group of'),
    ],
)
def test_bad_ranks_are_one_clear_error(tmp_path, ranks, message):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(UsageError) as error:
        vanishing.watch(model, out=tmp_path / "run", ranks=ranks)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value) and not (tmp_path / "run").exists()


def fsdp1_model() -> nn.Module:
    """An FSDP1 FullyShardedDataParallel as far as isinstance sees it (it cannot be built
    without an accelerator)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = FullyShardedDataParallel.__new__(FullyShardedDataParallel)
    nn.Module.__init__(model)
    return model


@pytest.mark.parametrize(
    "case, message",
    [
        ("fsdp1", "watch: FullyShardedDataParallel (FSDP1) is not supported: its flat parameters"),
        ("no optimizer", "watch: under torch.distributed the watch needs the optimizer: a step"),
        ("probe", "watch: probe= is not supported under torch.distributed; leave it out"),
    ],
)
def test_what_a_job_cannot_be_watched_with_is_one_clear_error(case, message):
    model = fsdp1_model() if case == "fsdp1" else nn.Linear(3, 2)
    optimizer = None if case == "no optimizer" else torch.optim.SGD(nn.Linear(3, 2).parameters())
    probe = (torch.randn(4, 3), torch.zeros(4)) if case == "probe" else None
    with pytest.raises(UsageError) as error:
        distributed.check(model, "one", optimizer, probe, size=2)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_step_is_an_optimizer_step_under_gradient_accumulation(tmp_path):
    """3 backward passes, then one optimizer.step(): one step, whose gradient is the
    accumulated one and whose activations are the last forward's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(2, 3, 8, 5), torch.randint(0, 3, (2, 3, 8))
    expected = []
    with vanishing.watch(model, optimizer, every=1, out=tmp_path / "run") as w:
        for step in range(2):
            optimizer.zero_grad()
            for k in range(3):
                (F.cross_entropy(model(x[step, k]), y[step, k]) / 3).backward()
            with torch.no_grad():
                last = model[1](model[0](x[step, 2]))
            grads = [float(model[i].weight.grad.norm()) for i in (0, 2)]
            expected.append((grads, float(last.mean())))
            optimizer.step()
    assert w.result is not None and w.result.steps == 2
    rows = probe_rows(tmp_path / "run")
    assert [row["step"] for row in rows] == [0, 1]
    for row, (grads, mean) in zip(rows, expected, strict=True):
        assert close(row["grad_norms"], grads)
        assert close(row["activation_mean"], [mean])


def test_the_bench_prints_the_measured_steps_cost(capsys):
    """bench/bench_watch_ddp.py in one process (under torchrun the same loop with DDP)."""
    load_example(BENCH).main(["--chunks", "1", "--chunk", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1 process(es), torch ") and "a step unwatched" in lines[0]
    assert lines[1].startswith("  every=1 (each step measured): +")
    assert lines[2].startswith("  hooks only: ")
