"""The benchmark scripts, checked for what they print, write and measure, never for speed.

Tiny slices, in this process: every row of a script's table is there, each printed figure agrees
with the figures it is computed from (within the digits printed), what a script says it timed is
what ran, and it refuses what it cannot time. The machine is shared and noisy, so no assertion is
about how long anything took. The GPU benchmark is the same script with --device cuda: what can
run on the CPU runs here, so the one short run a GPU machine gets does not fail on a path the CPU
could have caught.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from vanishing import records
from vanishing.data import datasets as data
from vanishing.settings.config import TrainConfig

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import bench_speed  # noqa: E402
import bench_watch  # noqa: E402
import bench_watch_gpt2  # noqa: E402

SEED_HIDDEN = (520, 320, 240, 120)


@dataclasses.dataclass(frozen=True)
class Printed:
    """The values a printed number may stand for: [low, high], from the digits printed."""

    low: float
    high: float

    @classmethod
    def of(cls, text: str) -> Printed:
        half = 0.5 * 10.0 ** -len(text.partition(".")[2])
        return cls(float(text) - half, float(text) + half)

    @classmethod
    def exact(cls, value: float) -> Printed:
        return cls(value, value)

    def __add__(self, other: Printed) -> Printed:
        return Printed(self.low + other.low, self.high + other.high)

    def __sub__(self, other: Printed) -> Printed:
        return Printed(self.low - other.high, self.high - other.low)

    def __mul__(self, other: Printed) -> Printed:
        corners = [a * b for a in (self.low, self.high) for b in (other.low, other.high)]
        return Printed(min(corners), max(corners))

    def __truediv__(self, other: Printed) -> Printed:
        if other.low <= 0 <= other.high:
            return Printed(-math.inf, math.inf)
        return self * Printed(1 / other.high, 1 / other.low)

    def agrees(self, other: Printed) -> bool:
        """Whether one value can print as both: the intervals overlap."""
        return self.low <= other.high and other.low <= self.high


def number(pattern: str, text: str) -> Printed:
    """The number the one group of `pattern` catches in `text`."""
    found = re.search(pattern, text, re.M)
    assert found, (pattern, text)
    return Printed.of(found.group(1))


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: on a shared machine, threads waiting on each other would take most of the time
    (the figures are checked for agreement, not speed)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture
def epoch_sized(tiny_data) -> data.Dataset:
    """The tiny set repeated to MNIST's 60,000 training images: the script times a slice of an
    epoch and extrapolates, so the figures it prints are an epoch's (whole seconds), as with
    MNIST itself (the speed does not depend on the pixels)."""
    repeats = -(-bench_speed.SAMPLES // len(tiny_data.train_labels))
    return dataclasses.replace(
        tiny_data,
        train_images=tiny_data.train_images.repeat(repeats, 1, 1)[: bench_speed.SAMPLES],
        train_labels=tiny_data.train_labels.repeat(repeats)[: bench_speed.SAMPLES],
    )


@pytest.fixture
def optimizer_steps():
    """The parameter shapes of every optimizer step taken (PyTorch's global step hook)."""
    steps: list[list[tuple[int, ...]]] = []
    handle = register_optimizer_step_post_hook(
        lambda optimizer, args, kwargs: steps.append(
            [tuple(p.shape) for group in optimizer.param_groups for p in group["params"]]
        )
    )
    yield steps
    handle.remove()


def layer_shapes(hidden: tuple[int, ...]) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of each Linear layer, written out here to check the script's figures."""
    sizes = [784, *hidden, 10]
    return [(sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1)]


def test_epoch_flops_of_the_seed_mlp():
    three, exact = bench_speed.epoch_flops(SEED_HIDDEN)
    assert math.isclose(three, 245.1e9, rel_tol=1e-3)  # the "about 245 GFLOP"
    assert exact == three - 2 * 784 * 520 * 60000  # layer 1 needs no input gradient


@pytest.mark.parametrize("k", [1, 3])
def test_the_bare_loop_trains_k_models_on_full_batches(tiny_data, optimizer_steps, k):
    config = TrainConfig(activation="relu", hidden=(16, 8), epochs=1, device="cpu")
    start = time.perf_counter()
    seconds = bench_speed.loop_seconds(config, tiny_data, k, torch.device("cpu"), "eager")
    elapsed = time.perf_counter() - start
    # 3 warm-up steps, then the timed ones: every full batch of the slice, none partial.
    assert len(optimizer_steps) == 3 + len(tiny_data.train_labels) // config.batch_size
    # K models in one optimizer: one model's weights, or K stacked.
    first = (16, 784) if k == 1 else (3, 784, 16)
    assert {steps[0] for steps in optimizer_steps} == {first}
    assert 0 < seconds <= elapsed  # the timed part of the call, in seconds (not a speed)


def test_adam_alone_is_one_fused_step_over_k_models_parameters(optimizer_steps):
    hidden = (16, 8)
    start = time.perf_counter()
    seconds = bench_speed.adam_seconds(hidden, 3, torch.device("cpu"))
    elapsed = time.perf_counter() - start
    count = sum(i * o + o for i, o in layer_shapes(hidden))  # weights and biases
    assert optimizer_steps == [[(3, count)]] * 21  # a warm-up step, then 20 timed
    assert 0 < 20 * seconds <= elapsed  # seconds per step


def test_the_workers_figure_is_the_pools_own_runs(tiny_data, monkeypatch):
    """W runs of the slice, one thread each, through the executor; their own training seconds."""
    calls = []

    def execute(runs, policy, **kwargs):
        execute_for_real(runs, policy, **kwargs)
        results = [records.load_result(run.config, run.run_dir) for run in runs]
        calls.append((policy, [run.config.seed for run in runs], results))

    execute_for_real = bench_speed.execute
    monkeypatch.setattr(bench_speed, "execute", execute)
    config = TrainConfig(activation="relu", hidden=(16, 8), epochs=1, device="cpu")
    start = time.perf_counter()
    seconds = bench_speed.workers_seconds(
        dataclasses.replace(config, probe_every=10**9), tiny_data, 2
    )
    elapsed = time.perf_counter() - start
    [(policy, seeds, results)] = calls
    assert (policy.workers, policy.threads, seeds) == (2, 1, [0, 1])
    assert all(result.status == "ok" and result.config["epochs"] == 1 for result in results)
    assert seconds == [result.train_seconds for result in results]
    assert all(0 < s <= elapsed for s in seconds)


TABLE_ROW = re.compile(
    r"^(?P<label>\S.*?) +(?P<seconds>[\d.]+) s/epoch +(?P<rate>[\d.]+) model-epochs/s"
    r" +(?P<ratio>[\d.]+)x single +(?P<mib>\d+) MiB$",
    re.M,
)


def test_bench_speed_prints_every_figure_and_they_agree(epoch_sized, monkeypatch, capsys):
    fraction, ks, workers = 0.004, (2, 3), 2
    groups = []  # (models, probe interval) of each group the script trained

    def train_group(configs, **kwargs):
        groups.append(([c.seed for c in configs], {c.probe_every for c in configs}))
        return train_group_for_real(configs, **kwargs)

    train_group_for_real = bench_speed.train_group
    monkeypatch.setattr(bench_speed, "train_group", train_group)
    monkeypatch.setattr(bench_speed, "load_dataset", lambda name: epoch_sized)
    monkeypatch.setattr(sys, "argv", [
        "bench_speed.py", "--epochs-fraction", str(fraction), "--repeats", "1",
        "--ks", ",".join(map(str, ks)), "--workers", str(workers), "--square", "256",
    ])  # fmt: skip
    bench_speed.main()
    out = capsys.readouterr().out
    assert "failed:" not in out, out
    assert f"784-{'-'.join(map(str, SEED_HIDDEN))}-10, adam, batch 64; timing 0.004 of an " in out

    # The table: one row per variant, in this order, each with its models per epoch.
    rows = {m["label"]: m for m in TABLE_ROW.finditer(out)}
    models = {
        "reference DataLoader loop (cpu)": 1,
        "single model, probes off": 1,
        "single model, probes every 300": 1,
        "group K=2, probes off": 2,
        "group K=2, probes every 300": 2,
        "torch.func vmap K=2 (no probes)": 2,
        "group K=3, probes off": 3,
        "group K=3, probes every 300": 3,
        "torch.func vmap K=3 (no probes)": 3,
        "2 processes x 1 thread (single)": 2,
    }
    assert list(rows) == list(models), out
    seconds = {label: Printed.of(row["seconds"]) for label, row in rows.items()}
    single = seconds["single model, probes off"]
    for label, k in models.items():
        per_epoch = seconds[label]
        assert per_epoch.low > 0, label  # whole seconds: the checks below are not vacuous
        assert Printed.of(rows[label]["rate"]).agrees(Printed.exact(k) / per_epoch), label
        ratio = Printed.exact(k) * single / per_epoch
        assert Printed.of(rows[label]["ratio"]).agrees(ratio), label
    memory = [int(row["mib"]) for row in rows.values()]
    assert memory == sorted(memory) and memory[0] > 0  # the process's peak so far
    # Each group it says it timed: K models (seeds 0..K-1), probes off or every 300 (scaled).
    probed = max(1, round(300 * fraction))
    assert groups == [(list(range(k)), {interval}) for k in ks for interval in (10**9, probed)]

    # Probe overhead between the runs: the difference of the two rows it names.
    between = re.search(r"; between the runs: (.*)$", out, re.M)
    assert between, out
    pairs = {"single": "single model", "group2": "group K=2", "group3": "group K=3"}
    shares = dict(re.findall(r"(\w+) ([+-][\d.]+) %", between.group(1)))
    assert list(shares) == list(pairs)
    for name, label in pairs.items():
        plain, with_probes = seconds[f"{label}, probes off"], seconds[f"{label}, probes every 300"]
        change = Printed.exact(100) * (with_probes - plain) / plain
        assert Printed.of(shares[name]).agrees(change), name
    timed_in_run = re.search(r"timed in the run: (.*?);", out)
    assert timed_in_run, out
    in_run = dict(re.findall(r"(\w+) ([\d.]+) %", timed_in_run.group(1)))
    assert list(in_run) == list(pairs) and all(0 <= float(v) < 100 for v in in_run.values())

    # The matmul rates, the FLOPs and the limits they give.
    three, exact = bench_speed.epoch_flops(SEED_HIDDEN)
    assert number(r"epoch FLOPs: 3 x forward ([\d.]+) GFLOP", out).agrees(Printed.exact(245.1))
    assert number(r"exact ([\d.]+) GFLOP", out).agrees(Printed.exact(exact / 1e9))
    shapes = layer_shapes(SEED_HIDDEN)
    # One step's products at batch 64: forward, weight gradient, and input gradient but layer 1's.
    products = 3 * len(shapes) - 1
    step_flops = sum(2 * 64 * i * o * (2 if n == 0 else 3) for n, (i, o) in enumerate(shapes))
    assert f"({products} products, " in out
    step = number(r"products, (\d+) us per step", out) * Printed.exact(1e-6)
    step_rate = number(r"batch-64 products +([\d.]+) GFLOP/s", out)
    assert step_rate.agrees(Printed.exact(step_flops / 1e9) / step)
    square_rate = number(r"matmul 256x256 float32 +([\d.]+) GFLOP/s", out)
    steps = math.ceil(60000 / 64)
    assert f"at the batch-64 rate ({steps} steps, matmuls only)" in out
    square_limit = number(r"limit per epoch: +([\d.]+) s at the square rate", out)
    batch_limit = number(r"([\d.]+) s at the batch-64 rate", out)
    assert square_limit.agrees(Printed.exact(exact / 1e9) / square_rate)
    assert batch_limit.agrees(step * Printed.exact(steps))

    # The floors: the limits plus the fused Adam step, against the reference and the single row.
    adam_1 = number(r"fused Adam alone, per model-epoch: K=1 ([\d.]+) s", out)
    adam_k = number(r"fused Adam alone, per model-epoch: .*, K=3 ([\d.]+) s$", out)
    reference = seconds["reference DataLoader loop (cpu)"]
    for name, limit in (("square", square_limit), ("batch-64", batch_limit)):
        line = re.search(rf"^floor \(matmuls at the {name} rate \+ Adam\): (.*)$", out, re.M)
        assert line, (name, out)
        floor_1 = number(r"single ([\d.]+) s/epoch", line.group(1))
        floor_k = number(r"K=3 ([\d.]+) s per model-epoch", line.group(1))
        assert floor_1.agrees(limit + adam_1) and floor_k.agrees(limit + adam_k), name
        assert number(r"at best ([\d.]+)x the reference", line.group(1)).agrees(reference / floor_1)
        assert number(r"at best ([\d.]+)x single", line.group(1)).agrees(single / floor_k)


@pytest.mark.parametrize("fraction", ["0", "1.5"])
def test_bench_speed_refuses_a_fraction_outside_one_epoch(monkeypatch, capsys, fraction):
    monkeypatch.setattr(sys, "argv", ["bench_speed.py", "--epochs-fraction", fraction])
    with pytest.raises(SystemExit) as exit_:
        bench_speed.main()
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == ""  # refused before anything is timed
    assert err.splitlines()[-1] == "bench_speed.py: error: --epochs-fraction must be in (0, 1]"


WATCH_ROW = re.compile(
    r"^  (?P<variant>\S.*?) +(?P<ms>[\d.]+) ms/step  cost (?P<cost>[+-][\d.]+)%$"
)


def test_bench_watch_prints_each_copys_cost_and_writes_what_it_measured(
    monkeypatch, capsys, tmp_path
):
    # Its temporary directory kept here, to read the records the watched copies wrote.
    kept = types.SimpleNamespace(TemporaryDirectory=lambda: contextlib.nullcontext(str(tmp_path)))
    monkeypatch.setattr(bench_watch, "tempfile", kept)
    monkeypatch.setattr(sys, "argv", ["bench_watch.py", "--chunks", "1"])
    bench_watch.main()
    out = capsys.readouterr().out
    assert out.startswith("1 chunks of 100 steps of the seed MLP (relu), ")
    rows = [WATCH_ROW.match(line) for line in out.splitlines()[1:5]]
    assert all(rows), out
    variants = [row["variant"] for row in rows]
    assert variants == ["unwatched", "every=100", "every=100, probe", "hooks only"]
    # One chunk: each copy's cost is its time over the unwatched copy's, less 1.
    unwatched = Printed.of(rows[0]["ms"])
    for row in rows:
        cost = Printed.exact(100) * (Printed.of(row["ms"]) / unwatched - Printed.exact(1))
        assert Printed.of(row["cost"]).agrees(cost), (row["variant"], out)
    assert rows[0]["cost"] == "+0.0"
    hooks = re.search(
        r"^the hooks alone .*: ([\d.-]+) us a step, ([\d.-]+)% of the seed", out, re.M
    )
    assert hooks, out
    share = Printed.of(hooks.group(1)) / (unwatched * Printed.exact(1000)) * Printed.exact(100)
    assert Printed.of(hooks.group(2)).agrees(share)

    # What each watched copy measured: 100 warm-up steps and one chunk of 100, so every=100
    # measured steps 0 and 100 (one per chunk), hooks only step 0 alone; the probe copy on its
    # fixed 512-image batch. Directories: the copies by their index, then the tiny model's.
    expected = {"1": (100, None, [0, 100]), "2": (100, 512, [0, 100]), "3": (10**9, None, [0])}
    for name, (every, probe_size, steps) in {**expected, "t": (10**9, None, [0])}.items():
        config = records.read_json(tmp_path / name / records.CONFIG)
        assert (config["every"], config.get("probe_size")) == (every, probe_size), name
        rows_written = records.read_metrics(tmp_path / name)
        assert [r["step"] for r in rows_written if r["kind"] == "probe"] == steps, name
        assert (tmp_path / name / records.RESULT).is_file(), name  # each watch was closed
    assert records.read_json(tmp_path / "t" / records.CONFIG)["hidden"] == [2]


def test_bench_watch_gpt2_times_both_copies_and_holds_one_copy_of_the_weights(
    monkeypatch, capsys, tmp_path
):
    from transformers import GPT2Config, GPT2LMHeadModel

    kept = types.SimpleNamespace(TemporaryDirectory=lambda: contextlib.nullcontext(str(tmp_path)))
    monkeypatch.setattr(bench_watch_gpt2, "tempfile", kept)
    argv = ["bench_watch_gpt2.py", "--steps", "100", "--chunk", "50", "--layers", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--width", "32", "--vocab", "50", "--length", "8"])
    bench_watch_gpt2.main()
    out = capsys.readouterr().out
    assert out.startswith("GPT2LMHeadModel, ")
    assert "100 steps per copy in turns of 50:" in out.splitlines()[0]
    assert re.search(r"^  watched at every=100, total time +[+-][\d.]+%  \(target", out, re.M)
    # 101 warm-up steps (0 and 100 measured), then 100 timed: step 200 is the one measured.
    measured = re.findall(r"^  a measured step  +[\d.]+ ms = [\d.]+ unwatched steps$", out, re.M)
    assert len(measured) == 1, out
    rows = records.read_metrics(tmp_path / "gpt2")
    assert [row["step"] for row in rows if row["kind"] == "probe"] == [0, 100, 200]
    # What a measured step holds: every watched weight once (the tied output layer is wte's).
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=1, vocab_size=50))
    weights = sum(p.numel() * 4 for name, p in model.named_parameters() if "weight" in name)
    held = re.search(r"the copy of the watched weights it holds: \d+ MiB, ([\d,]+) bytes", out)
    assert held and int(held.group(1).replace(",", "")) == weights
