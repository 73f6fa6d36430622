"""The benchmark scripts run and print every figure (tiny slices: this checks them, not speed).

The GPU benchmark is the same script with --device cuda: what can run on the CPU runs here, so
the one short run a GPU machine gets does not fail on a path the CPU could have caught.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vanishing.data import datasets as data
from vanishing.settings.config import TrainConfig

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import bench_speed  # noqa: E402


@pytest.fixture
def tiny_data(tiny_arrays) -> data.Dataset:
    return data.Dataset(
        "mnist",
        *(torch.from_numpy(tiny_arrays[role]).long() if "labels" in role else
          torch.from_numpy(tiny_arrays[role])
          for role in ("train_images", "train_labels", "test_images", "test_labels")),
        source="tests",
        verified=False,
    )  # fmt: skip


def test_bare_loops_and_adam_floor_run_on_the_cpu(tiny_data):
    config = TrainConfig(activation="relu", hidden=(16, 8), epochs=1, device="cpu")
    cpu = torch.device("cpu")
    for k in (1, 3):
        seconds = bench_speed.loop_seconds(config, tiny_data, k, cpu, "eager")
        assert 0 < seconds < 60
    assert 0 < bench_speed.adam_seconds((16, 8), 3, cpu) < 1
    seconds = bench_speed.workers_seconds(dataclasses.replace(config, probe_every=10**9),
                                          tiny_data, 2)  # fmt: skip
    assert len(seconds) == 2 and all(0 < s < 60 for s in seconds)


def test_epoch_flops_of_the_seed_mlp():
    three, exact = bench_speed.epoch_flops((520, 320, 240, 120))
    assert math.isclose(three, 245.1e9, rel_tol=1e-3)  # the "about 245 GFLOP"
    assert exact == three - 2 * 784 * 520 * 60000  # layer 1 needs no input gradient


@pytest.mark.realdata
def test_bench_speed_prints_every_figure(real_mnist, tmp_path):
    cache = tmp_path / "cache"
    spec = data.get_spec("mnist")
    arrays = {
        "train_images": real_mnist.train_images.numpy(),
        "train_labels": real_mnist.train_labels.numpy().astype("uint8"),
        "test_images": real_mnist.test_images.numpy(),
        "test_labels": real_mnist.test_labels.numpy().astype("uint8"),
    }
    data.write_cache(spec, cache, arrays)
    env = {**os.environ, "VANISHING_CACHE": str(cache), "VANISHING_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, str(BENCH / "bench_speed.py"), "--epochs-fraction", "0.004",
         "--repeats", "1", "--ks", "2,3", "--workers", "2", "--square", "256"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    for label in (
        "matmul 256x256 float32",
        "limit per epoch",
        "reference DataLoader loop (cpu)",
        "single model, probes off",
        "single model, probes every 300",
        "group K=2, probes off",
        "group K=3, probes every 300",
        "torch.func vmap K=3",
        "2 processes x 1 thread (single)",
        "probe overhead, timed in the run: single",
        "fused Adam alone, per model-epoch: K=1",
        "floor (matmuls at the square rate + Adam)",
        "floor (matmuls at the batch-64 rate + Adam)",
    ):
        assert label in out, f"{label!r} missing from:\n{out}"
    assert "failed:" not in out, out
    speeds = re.findall(r"([\d.]+) model-epochs/s", out)
    # reference, single x2, per K: group x2 and vmap, the worker pool
    assert len(speeds) == 3 + 2 * 3 + 1 and all(float(s) > 0 for s in speeds)


def test_bench_watch_prints_each_copys_cost_and_the_hooks_time():
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_watch.py"), "--chunks", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for variant in ("unwatched", "every=100", "every=100, probe", "hooks only"):
        assert re.search(
            rf"^  {re.escape(variant)} +[\d.]+ ms/step  cost [+-][\d.]+%$", done.stdout, re.M
        ), (variant, done.stdout)
    assert re.search(
        r"^the hooks alone .*: [\d.-]+ us a step, [\d.-]+% of the seed", done.stdout, re.M
    ), done.stdout
