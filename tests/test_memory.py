"""The memory estimate against what PyTorch allocates, the refusal and where it happens."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vanishing.data import datasets as data
from vanishing.data import sequences
from vanishing.errors import UsageError
from vanishing.executor import MAX_GROUP, Policy, Run, check_memory, execute, preflight
from vanishing.frontends.cli import main
from vanishing.measure import probes
from vanishing.model.activations import ACTIVATIONS
from vanishing.model.mlp import NORMS, OPTIMIZERS, GroupedMLP, build_model, make_optimizer
from vanishing.settings.config import TrainConfig
from vanishing.training import group, memory
from vanishing.training import loop as train

HUGE = (10**7,) * 3  # 200 trillion parameters, petabytes: beyond any machine's memory
HUGE_SHAPE = "784-10000000-10000000-10000000-10"
DEEP = (256,) * 30


def measured(model: torch.nn.Module) -> tuple[int, int]:
    """(parameter bytes, buffer bytes) of a built model."""
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return parameters, buffers


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_parameters_and_buffers_are_the_built_models(norm, activation):
    for prelu_mode in ("layer", "unit"):
        config = TrainConfig(
            hidden=(24, 24, 24), activation=activation, norm=norm, prelu_mode=prelu_mode
        )
        model = build_model(
            config.hidden, activation, options=config.options, norm=norm, residual=True
        )
        estimate = memory.estimate(config)
        assert (estimate.parameters, estimate.buffers) == measured(model)
        assert estimate.gradients == estimate.parameters  # every parameter gets a .grad
        weights = sum(linear.weight.numel() for linear in model.linear_layers())
        assert estimate.probe_copies == 4 * weights


@pytest.mark.parametrize("activation", ["relu", "prelu", "sigmoid"])
def test_a_groups_parameters_are_the_stacked_models(activation):
    config = TrainConfig(hidden=(20, 12), activation=activation, prelu_mode="unit")
    models = [build_model(config.hidden, activation, options=config.options) for _ in range(3)]
    stacked = GroupedMLP.from_models(models)
    estimate, one = memory.estimate(config, models=3), memory.estimate(config)
    assert estimate.parameters == measured(stacked)[0] == 3 * one.parameters
    assert estimate.optimizer_state == 3 * one.optimizer_state
    # The data set is the group's, once; each model has its own probe batch and data order.
    assert one.data < estimate.data < 3 * one.data


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_optimizer_state_is_what_the_optimizer_keeps(optimizer, momentum):
    config = TrainConfig(hidden=(16, 8), optimizer=optimizer, momentum=momentum)
    model = build_model(config.hidden, "relu")
    step = make_optimizer(optimizer, model.parameters(), 1e-3, momentum)
    for parameter in model.parameters():
        parameter.grad = torch.ones_like(parameter)
    step.step()
    kept = sum(
        value.numel() * value.element_size()
        for state in step.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor) and value.dim() > 0  # not Adam's step count
    )
    estimate = memory.estimate(config)
    assert estimate.optimizer_state == kept
    if optimizer == "adam":
        assert estimate.optimizer_state == 2 * estimate.parameters


def test_the_chunks_are_the_passes_own():
    def chunk(function) -> int:
        return inspect.signature(function).parameters["chunk"].default

    assert chunk(group.evaluate_group) == memory.EVAL_CHUNK
    # `train.evaluate` sizes its passes by the model (`train.eval_chunk`): an MLP's are
    # EVAL_CHUNK rows, a recurrent network's hold EVAL_VALUES values of one layer's output.
    assert train.eval_chunk(build_model((8,), "relu"), torch.zeros(2, 784)) == memory.EVAL_CHUNK
    for settings in RECURRENT_READINGS:
        config = TrainConfig(hidden=(300, 40), **settings)
        model = train.make_model(config)
        x = torch.zeros(2, sequences.steps(config), sequences.input_size(config))
        assert train.eval_chunk(model, x) == memory.eval_rows(config) < memory.EVAL_CHUNK
    assert chunk(probes.dead_units) == chunk(probes.dead_units_group) == memory.DEAD_CHUNK


def test_the_data_counts_every_image_once():
    config = TrainConfig(probe_size=1)
    images = (60000 + 10000) * (784 * 4 + 8)  # float32 features and int64 labels
    assert images < memory.estimate(config).data < images + 60000 * 8 + 4000
    # Only rectifiers measure dead units: a sigmoid run needs no dead-unit chunk.
    deep = memory.estimate(TrainConfig(hidden=DEEP))
    assert memory.estimate(TrainConfig(hidden=DEEP, activation="sigmoid")).activations < (
        deep.activations
    )
    assert deep.activations == memory.DEAD_CHUNK * sum(DEEP) * 3 * 4


def test_the_projects_workloads_fit_in_a_few_gigabytes():
    reference, deep = TrainConfig(), TrainConfig(hidden=DEEP)
    assert memory.estimate(reference).total < 0.5e9
    assert memory.estimate(deep).total < 1.5e9
    largest = max(MAX_GROUP.values())
    assert memory.estimate(reference, largest).total < 2e9
    assert memory.estimate(deep, largest).total < 8e9
    memory.check_fits([reference, deep], "cpu")  # accepted here


def test_a_huge_net_is_refused_in_one_line():
    with pytest.raises(UsageError) as refused:
        memory.check_fits([TrainConfig(hidden=HUGE)], "cpu")
    message = str(refused.value)
    assert "\n" not in message
    assert re.fullmatch(
        rf"a run of {HUGE_SHAPE} needs about 4\.0 PB \(parameters 800\.0 TB, gradients "
        r"800\.0 TB, optimizer state 1\.6 PB, probe copies 800\.0 TB, activations 2\.9 TB, "
        r"data 222\.2 MB\), more than the \d+\.\d [kMGTP]?B of memory available on cpu; use "
        r"fewer or narrower layers",
        message,
    ), message


def test_batches_and_probes_are_capped_at_the_training_set():
    # Training slices its batches from the set and the probe takes randperm(n)[:probe_size]:
    # neither exceeds the set, the registered one (MNIST: 60000) or the loaded one.
    for field in ("batch_size", "probe_size"):
        for dataset, n in (("mnist", 60000), ("fashion-mnist", 60000)):
            huge = TrainConfig(hidden=(8,), dataset=dataset, **{field: 10**8})
            capped = TrainConfig(hidden=(8,), dataset=dataset, **{field: n})
            assert memory.estimate(huge) == memory.estimate(capped)
            assert memory.estimate(huge, 3) == memory.estimate(capped, 3)
        huge = TrainConfig(hidden=(8,), **{field: 10**8})
        loaded = memory.estimate(huge, train_samples=320)
        assert loaded == memory.estimate(
            TrainConfig(hidden=(8,), **{field: 320}), train_samples=320
        )
        assert loaded.total < 50e6  # 320 images and a few hidden units
    # As the reviewer ran them: a whole (tiny) training set per batch, or per probe, fits.
    memory.check_fits([TrainConfig(hidden=(8,), batch_size=10**8)], "cpu", train_samples=320)
    memory.check_fits([TrainConfig(hidden=(8,), probe_size=10**8)], "cpu", train_samples=320)
    assert memory.estimate(TrainConfig(hidden=(8,), probe_size=10**8)).data < 0.5e9


@pytest.mark.parametrize(
    ("config", "free", "advice"),
    [
        (TrainConfig(hidden=(20000, 20000)), 10**9, "use fewer or narrower layers"),
        (TrainConfig(hidden=(100000,), batch_size=60000), 10**9, "use a smaller --batch-size"),
        (TrainConfig(hidden=(100000,), probe_size=60000), 10**9, "use a smaller --probe-size"),
        (TrainConfig(hidden=(4096,) * 40), 10**9, "use fewer or narrower layers"),  # dead units
        (
            TrainConfig(hidden=(8,)),
            10**8,
            "the data set itself does not fit; use a device with more memory",
        ),
    ],
)
def test_the_refusal_advises_what_dominates(config, free, advice, monkeypatch):
    monkeypatch.setattr(memory, "available", lambda device: free)
    with pytest.raises(UsageError) as refused:
        memory.check_fits([config], "cpu")
    message = str(refused.value)
    assert "\n" not in message and message.endswith(f"available on cpu; {advice}"), message


def test_the_refusal_names_what_does_not_fit():
    reference = TrainConfig()
    with pytest.raises(UsageError, match=r"^a group of 100000 runs of 784-520-320-240-120-10 "):
        memory.check_fits([reference], "cpu", models=100000)
    with pytest.raises(UsageError, match=r"train fewer at once \(--no-group\)$"):
        memory.check_fits([reference], "cpu", models=100000)
    with pytest.raises(UsageError) as refused:
        memory.check_fits([reference], "cpu", workers=10**6)
    assert re.match(
        r"1000000 runs of 784-520-320-240-120-10 training at once need about \d+\.\d TB "
        r"\(353\.8 MB each: parameters 2\.7 MB, ",
        str(refused.value),
    )
    assert re.search(r"train fewer at once \(at most --workers \d+\)$", str(refused.value))


def test_available_memory_is_known_here():
    free = memory.available("cpu")
    assert free is not None and free > 0
    assert memory.available(torch.device("meta")) is None  # unknown: nothing is refused
    if torch.cuda.is_available():
        assert 0 < memory.available(torch.device("cuda")) <= torch.cuda.mem_get_info()[1]
    else:
        assert memory.available(torch.device("cuda")) is None


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_room_is_the_tightest_limit_less_usage(tmp_path):
    write(tmp_path / "proc/self/cgroup", "0::/user/job\n")
    job, user = tmp_path / "sys/fs/cgroup/user/job", tmp_path / "sys/fs/cgroup/user"
    write(job / "memory.max", "max\n")  # no limit of its own
    write(job / "memory.current", "100\n")
    write(user / "memory.max", "5000\n")
    write(user / "memory.current", "3000\n")
    write(user / "memory.stat", "anon 1000\ninactive_file 1000\n")  # page cache, reclaimable
    assert memory.cgroup_available(tmp_path) == 5000 - (3000 - 1000)
    write(tmp_path / "proc/meminfo", "MemTotal: 8 kB\nMemAvailable:       3 kB\n")
    assert memory.meminfo_available(tmp_path) == 3 * 1024


def test_cgroup_v1_room_and_no_limit(tmp_path):
    write(tmp_path / "proc/self/cgroup", "4:memory:/box\n0::/\n")
    box = tmp_path / "sys/fs/cgroup/memory/box"
    write(box / "memory.limit_in_bytes", "4000\n")
    write(box / "memory.usage_in_bytes", "1500\n")
    write(box / "memory.stat", "total_inactive_file 500\n")
    assert memory.cgroup_available(tmp_path) == 3000
    write(tmp_path / "proc/self/cgroup", "0::/\n")
    write(tmp_path / "sys/fs/cgroup/memory.max", "max\n")
    assert memory.cgroup_available(tmp_path) is None
    assert memory.cgroup_available(tmp_path / "nowhere") is None


def test_sizes_and_shapes_as_the_message_writes_them():
    assert [memory.size(n) for n in (512, 1500, 80.3e9, 4.8e12, 4.0e15, 2e18)] == [
        "512 B",
        "1.5 kB",
        "80.3 GB",
        "4.8 TB",
        "4.0 PB",
        "2000.0 PB",
    ]
    assert memory.architecture(TrainConfig(hidden=DEEP)) == "784-256x30-10"
    assert memory.architecture(TrainConfig(hidden=(8, 4, 4, 4, 4))) == "784-8-4x4-10"


def test_the_executor_refuses_before_the_data_loads(tmp_path):
    # No data set anywhere (the tests run offline): the memory check must come first.
    run = Run(TrainConfig(hidden=HUGE, device="cpu"), tmp_path / "run")
    with pytest.raises(UsageError, match=rf"^a run of {HUGE_SHAPE} needs"):
        execute([run], Policy())
    assert not (tmp_path / "run").exists()


def test_the_executor_checks_on_the_loaded_training_set(monkeypatch, tmp_path, tiny_dir):
    # 320 images: a batch of 60000 is the whole set, which fits where 60000 rows would not.
    config = TrainConfig(hidden=(100000,), batch_size=60000, device="cpu")
    monkeypatch.setattr(memory, "available", lambda device: 20 * 10**9)  # 72 GB of batch
    units = [[Run(config, tmp_path / "run")]]
    check_memory(units, Policy(), train_samples=320)
    with pytest.raises(UsageError, match=r"use a smaller --batch-size$"):
        check_memory(units, Policy())  # the registered 60000 images
    seen = []

    def check(units, policy, train_samples=None, reserved=None):
        seen.append(train_samples)
        raise UsageError("checked")

    monkeypatch.setattr(preflight, "check_memory", check)
    with pytest.raises(UsageError, match="checked"):
        execute(units[0], Policy(), dataset=data.load_dataset(data_dir=tiny_dir, verify=False))
    with pytest.raises(UsageError, match="checked"):
        execute(units[0], Policy())
    assert seen == [320, None]


def test_units_training_at_once_share_the_memory(monkeypatch, tmp_path):
    config = TrainConfig(device="cpu")
    each = memory.estimate(config).total
    monkeypatch.setattr(memory, "available", lambda device: each * 3 // 2)
    units = [
        [Run(config, tmp_path / "a")],
        [Run(TrainConfig(device="cpu", seed=1), tmp_path / "b")],
    ]
    check_memory(units, Policy(workers=1))  # one at a time: fits
    check_memory(units[:1], Policy(workers=2))  # one unit: nothing to share with
    with pytest.raises(UsageError, match=r"^2 runs of .* \(at most --workers 1\)$"):
        check_memory(units, Policy(workers=2))
    check_memory(units, Policy(workers=2, backend="ray"))  # the cluster's nodes: not checked


def test_preflight_check_plans_and_refuses_before_the_data_and_on_it(
    monkeypatch, tmp_path, tiny_dir
):
    """`preflight.check`, which callers may call before they load data and `execute` calls too:
    the policy, the units at once in memory, and with the data the batch sizes."""
    config = TrainConfig(device="cpu")
    each = memory.estimate(config).total
    monkeypatch.setattr(memory, "available", lambda device: each * 3 // 2)
    todo = [Run(config, tmp_path / "a"), Run(TrainConfig(device="cpu", seed=1), tmp_path / "b")]
    assert preflight.check(todo, Policy(workers=1)) == [[todo[0]], [todo[1]]]
    with pytest.raises(UsageError, match=r"^2 runs of .* \(at most --workers 1\)$"):
        preflight.check(todo, Policy(workers=2))
    with pytest.raises(UsageError, match=r"^--workers must be >= 1, got 0$"):
        preflight.check(todo, Policy(workers=0))
    with pytest.raises(UsageError, match=r"^group size must be >= 1, got 0$"):
        preflight.check(todo, Policy(group=0))
    with pytest.raises(UsageError, match=r"^unknown backend 'nope'"):
        preflight.check(todo, Policy(backend="nope"))
    tiny = data.load_dataset(data_dir=tiny_dir, verify=False)
    big = [Run(TrainConfig(device="cpu", batch_size=321), tmp_path / "c")]
    preflight.check(big, Policy())  # the registered 60000 images: a batch of 321 fits
    with pytest.raises(UsageError, match=r"^--batch-size 321 is larger than the training set"):
        preflight.check(big, Policy(), tiny)
    assert not any(tmp_path.glob("[abc]"))  # checks write nothing


CLI_TINY = ["--no-verify", "--epochs", "1", "--device", "cpu"]


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--hidden", "10000000,10000000,10000000"],
        ["compare", "--hidden", "10000000,10000000,10000000", "--activations", "relu,tanh"],
        ["sweep", "--depths", "3", "--widths", "10000000", "--activations", "relu", "--seeds", "0"],
    ],
)
def test_the_cli_refuses_in_one_line_before_training(command, capsys, tiny_dir, tmp_path):
    out = tmp_path / "out"
    code = main([*command, "--data-dir", str(tiny_dir), "--out", str(out), *CLI_TINY])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and not out.exists(), err  # before the data loads (and is verified)
    assert re.fullmatch(
        rf"vanishing {command[0]}: error: a run of {HUGE_SHAPE} needs about 4\.0 PB \(.*\), "
        r"more than the \d+\.\d [kMGTP]?B of memory available on cpu; use fewer or narrower "
        r"layers",
        lines[-1],
    ), lines[-1]
    assert not list(out.glob("**/result.json")) and not list(out.glob("**/metrics.jsonl"))


def test_a_batch_or_probe_beyond_the_training_set_is_not_a_memory_refusal(
    capsys, tiny_dir, tmp_path
):
    args = ["--hidden", "8", "--data-dir", str(tiny_dir), *CLI_TINY]
    code = main(["train", "--batch-size", "100000000", *args, "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2 and "memory" not in err  # the batch's own refusal, once the set is known
    assert err.strip().splitlines()[-1].endswith("(320 images of mnist); at most 320"), err
    code = main(["train", "--probe-size", "100000000", *args, "--out", str(tmp_path / "b")])
    assert code == 0 and "memory" not in capsys.readouterr().err


RECURRENT_READINGS = [
    {"arch": "rnn", "activation": "tanh"},
    {"arch": "rnn", "activation": "relu", "sequence": "pixels"},
    {"arch": "rnn", "activation": "prelu", "prelu_mode": "unit"},  # LoopRNN: a slope per unit
    {"arch": "rnn", "activation": "sigmoid", "dataset": "adding", "length": 9},
    {"arch": "lstm", "activation": "tanh", "sequence": "permuted"},
    {"arch": "lstm", "activation": "tanh", "dataset": "adding"},
    {"arch": "gru", "activation": "tanh"},
]


@pytest.mark.parametrize(
    "settings", RECURRENT_READINGS, ids=lambda s: "-".join(map(str, s.values()))
)
def test_a_recurrent_networks_parameters_are_the_built_models(settings):
    """Counted from the config (nn.RNN/LSTM/GRU's gates x hidden x (inputs + hidden + 2) and
    the head), never built: the same as the built network's, the weights as the probe copies."""
    config = TrainConfig(hidden=(12, 7), **settings)
    model = train.make_model(config)
    estimate = memory.estimate(config)
    assert (estimate.parameters, estimate.buffers) == measured(model)
    assert estimate.gradients == estimate.parameters
    assert estimate.optimizer_state == 2 * estimate.parameters  # Adam
    assert estimate.probe_copies == 4 * sum(w.numel() for w in probes.layer_weights(model))
    assert estimate.peak in ("batch", "probe", "evaluation")  # no dead-unit pass


PEAK_SCRIPT = """
import ctypes, re, sys, torch
from vanishing.data import sequences
from vanishing.measure import probes
from vanishing.model.activations import get_activation
from vanishing.settings.config import TrainConfig
from vanishing.training import memory
from vanishing.training.loop import make_model
torch.set_num_threads(1)
config, which = TrainConfig(**eval(sys.argv[1])), sys.argv[2]
model = make_model(config)
rows = config.batch_size if which == "batch" else config.probe_size
x = torch.rand(rows, sequences.steps(config), sequences.input_size(config))
y = torch.zeros(rows, dtype=torch.long)
loss = torch.nn.functional.cross_entropy
def run():
    if which == "batch":
        loss(model(x), y).backward()
    else:
        probes.measure_recurrent(model, get_activation(config.activation), x, y, loss)
def status(key):
    with open("/proc/self/status") as status:
        return int(re.search(key + r":\\s+(\\d+) kB", status.read()).group(1)) * 1024
run()  # the kernels and their code pages warmed up, then the freed pages given back
model.zero_grad(set_to_none=True)
ctypes.CDLL("libc.so.6").malloc_trim(0)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM (the peak RSS) from here
before = status("VmRSS")
run()
grown = status("VmHWM") - before
passes = memory.recurrent_passes(config, 1, config.batch_size, config.probe_size)
print(grown / (passes[which] * memory.FLOAT))
"""


def peak_ratio(settings: dict, which: str) -> float:
    """The peak RSS a training step (`batch`) or the probe (`probe`) of a recurrent network of
    `settings` adds to a process of its own, over the estimate's pass."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, repr(settings), which],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    return float(done.stdout)


LINUX = Path("/proc/self/clear_refs").is_file() and sys.platform == "linux"


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
@pytest.mark.skipif(not LINUX, reason="reads and resets Linux's VmHWM")
def test_a_recurrent_batch_is_estimated_within_the_margin(arch):
    """A training batch keeps T x batch x hidden values per layer, `FUSED` of them per step and
    unit: the peak a forward and backward add, against the estimate's batch pass."""
    settings = {"arch": arch, "activation": "tanh", "hidden": (128,), "batch_size": 64}
    ratio = peak_ratio({**settings, "sequence": "pixels"}, "batch")  # 25.7 MB a value per unit
    assert 0.67 < ratio <= 1.1, ratio  # an estimate, rounded up


@pytest.mark.skipif(not LINUX, reason="reads and resets Linux's VmHWM")
def test_a_recurrent_probe_is_estimated_within_the_margin():
    """The probe unrolls every step of every layer and keeps h_t and its gradient: an LSTM's
    probe batch of row sequences, against the estimate's probe pass."""
    settings = {"arch": "lstm", "activation": "tanh", "hidden": (128,), "probe_size": 256}
    ratio = peak_ratio(settings, "probe")
    assert 0.67 < ratio < 1.5, ratio


def test_a_recurrent_shape_as_the_message_writes_it():
    lstm = TrainConfig(arch="lstm", activation="tanh", hidden=(4096,), sequence="pixels")
    assert memory.architecture(lstm) == "lstm 784x1-4096-10"
    rnn = TrainConfig(arch="rnn", activation="tanh", hidden=(64,) * 5, dataset="adding")
    assert memory.architecture(rnn) == "rnn 100x2-64x5-1"
    assert memory.architecture(TrainConfig(arch="gru", activation="tanh", hidden=(128,))) == (
        "gru 28x28-128-10"
    )


def test_a_pixel_sequence_at_a_large_batch_is_refused_by_the_estimate():
    """T x batch x hidden: 784 steps of 60000 rows (the batch capped at the training set) of
    4096 LSTM units, about 13 TB, where a row sequence of the same batch is 28 times less."""
    pixels = TrainConfig(
        arch="lstm", activation="tanh", hidden=(4096,), sequence="pixels", batch_size=100000
    )
    estimate = memory.estimate(pixels)
    assert estimate.peak == "batch" and 12e12 < estimate.total < 15e12
    rows = dataclasses.replace(pixels, sequence="rows")
    assert memory.estimate(rows).activations * 27 < estimate.activations
    with pytest.raises(UsageError, match=r"^a run of lstm 784x1-4096-10 needs about 13\.\d TB "):
        memory.check_fits([pixels], "cpu")
    # --train-size: the batch is capped at the first N examples, the data set holds N.
    few = dataclasses.replace(pixels, train_size=100, test_size=100)
    assert memory.estimate(few).data < 2 * 200 * 784 * 4 + 512 * 784 * 4 + 200 * 8
    capped = dataclasses.replace(pixels, batch_size=100, probe_size=100)
    assert memory.estimate(few).activations == memory.estimate(capped).activations


def test_the_sizes_a_run_reads_are_its_first_examples():
    assert memory.samples(TrainConfig()) == (60000, 10000)
    assert memory.samples(TrainConfig(train_size=500, test_size=70)) == (500, 70)
    assert memory.samples(TrainConfig(train_size=500), train_samples=320) == (320, 10000)
    adding = TrainConfig(arch="gru", activation="tanh", dataset="adding", length=50)
    assert memory.samples(adding) == (60000, 10000)
    # The adding problem: 50 steps of 2 float32 values and a float32 target per example.
    assert memory.estimate(dataclasses.replace(adding, probe_size=1)).data == (
        70000 * (50 * 2 * 4 + 4) + (50 * 2 * 4 + 4) + 60000 * 8
    )
