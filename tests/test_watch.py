"""`vanishing.measure.watch`: the probes' numbers on any model, its hooks, its records."""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from vanishing import records
from vanishing.errors import UsageError
from vanishing.measure import probes
from vanishing.measure.watch import watch, watched_by
from vanishing.model.activations import ACTIVATIONS, get_activation
from vanishing.model.mlp import MLP

# Every activation the registry knows and watch can see (the identity is not one: models use it
# as a placeholder).
WATCHED = [name for name, a in ACTIVATIONS.items() if a.family != "linear"]
LAYER_KEYS = (
    "signal_norms",
    "activation_mean",
    "activation_std",
    "saturated_fraction",
    "dead_fraction",
)


def batch(n: int = 48, features: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=generator) * 2
    return x, torch.randint(0, 10, (n,), generator=generator)


def mlp(activation: str, norm: str = "none", seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP([16, 12, 12], activation, in_features=20, norm=norm)


def rows(run_dir, kind: str = "probe") -> list[dict]:
    return [row for row in records.read_metrics(run_dir) if row["kind"] == kind]


def assert_same(row: dict, expected: dict, keys=LAYER_KEYS + ("grad_norms", "weight_norms")):
    for key in keys:
        got, want = row[key], expected[key]
        assert len(got) == len(want), key
        for g, w in zip(got, want, strict=True):
            assert g == pytest.approx(w, rel=1e-5, abs=1e-7), (key, got, want)
    for got, want in zip(
        row["activation_histogram"], expected["activation_histogram"], strict=True
    ):
        assert got["counts"] == want["counts"]
        assert got["edges"] == pytest.approx(want["edges"], rel=1e-6, abs=1e-7)


def linear_names(model: MLP) -> list[str]:
    return [f"linears.{i}" for i in range(len(model.linears))]


@pytest.mark.parametrize("activation", WATCHED)
@pytest.mark.parametrize("norm", ["none", "batch"])
def test_probe_batch_gives_the_trainers_probe_numbers(tmp_path, activation, norm):
    """With probe=(x, y), a watched step measures the MLP as `probes.measure` does, the step's
    update ratio is `probes.update_ratios`, and no state of the model changes."""
    model = mlp(activation, norm)
    x, y = batch()
    expected = probes.measure(model, get_activation(activation), x, y)
    buffers = [b.clone() for b in model.buffers()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_x, train_y = batch(seed=1)
    with watch(model, optimizer, every=1, probe=(x, y), out=tmp_path, layers=linear_names(model)):
        optimizer.zero_grad()
        F.cross_entropy(model(train_x), train_y).backward()
        before = probes.snapshot(model)
        # the probe runs in the step's pre-hook: the buffers it saw are the training forward's
        after_forward = [b.clone() for b in model.buffers()]
        optimizer.step()
    (row,) = rows(tmp_path)
    assert_same(row, expected)
    assert row["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert row["update_ratio"] == pytest.approx(probes.update_ratios(model, before), rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), after_forward, strict=True))
    if norm == "batch":  # the training forward moved the running statistics, the probe did not
        assert not torch.equal(buffers[0], after_forward[0])


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "prelu", "gelu", "tanh"])
def test_a_training_step_is_measured_as_measure_measures_its_batch(tmp_path, activation):
    """Without a probe, the step's own forward and backward give `probes.measure`'s numbers on
    that batch (the hooks see the same tensors); the loss is not seen by hooks."""
    model = mlp(activation)
    x, y = batch()
    expected = probes.measure(copy.deepcopy(model), get_activation(activation), x, y)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with watch(model, optimizer, every=3, out=tmp_path) as w:
        for _ in range(7):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    measured = rows(tmp_path)
    assert [row["step"] for row in measured] == [0, 3, 6]
    assert_same(measured[0], expected)
    assert measured[0]["loss"] is None
    assert w.result is not None and w.result.steps == 7
    config = records.read_json(tmp_path / "config.json")
    assert config["layers"] == linear_names(model)
    assert config["activation_layers"] == [f"activations.{i}" for i in range(3)]
    assert config["layer_labels"] == linear_names(model)[:3]
    assert config["hidden"] == [16, 12, 12] and config["activation"] == activation


class ConvNet(nn.Module):
    """A user's model: convs, an in-place ReLU, a functional flatten, a classifier."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.act1 = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(6)
        self.act2 = nn.ReLU(inplace=inplace)
        self.fc = nn.Linear(6 * 8 * 8, 10)

    def forward(self, x):
        x = self.act1(self.conv1(x))
        x = self.act2(self.norm2(self.conv2(x)))
        return self.fc(x.flatten(1))


def images(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return torch.randn(n, 1, 8, 8, generator=generator), torch.randint(0, 10, (n,))


def one_step(model, optimizer, x, y) -> None:
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def test_a_conv_net_is_watched_by_its_own_names(tmp_path):
    """Layers are named_modules() names in the order they run, norm layers included; a
    sentence's label is the conv before an activation, not its norm; a unit is a channel."""
    torch.manual_seed(0)
    model = ConvNet()
    with torch.no_grad():
        model.conv1.bias[0] = -100.0  # channel 0 is negative everywhere: a dead channel
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = images()
    with watch(model, optimizer, every=1, out=tmp_path):
        one_step(model, optimizer, x, y)
    config = records.read_json(tmp_path / "config.json")
    assert config["layers"] == ["conv1", "conv2", "norm2", "fc"]
    assert config["activation_layers"] == ["act1", "act2"]
    assert config["layer_labels"] == ["conv1", "conv2"]
    assert config["hidden"] == [4, 6]
    assert config["model"] == "ConvNet" and config["source"] == "watch"
    (row,) = rows(tmp_path)
    assert row["dead_fraction"][0] == pytest.approx(1 / 4)
    assert len(row["grad_norms"]) == 4 and len(row["update_ratio"]) == 4
    histogram = row["activation_histogram"][1]
    assert sum(histogram["counts"]) == 32 * 6 * 8 * 8


def test_an_in_place_relu_is_measured_on_its_input(tmp_path):
    """nn.ReLU(inplace=True) overwrites its input: saturation is still judged on it."""
    x, y = images()
    results = []
    for inplace in (False, True):
        torch.manual_seed(0)
        model = ConvNet(inplace)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        out = tmp_path / str(inplace)
        with watch(model, optimizer, every=1, out=out):
            one_step(model, optimizer, x, y)
        results.append(rows(out)[0])
    plain, inplace_row = results
    assert 0.2 < plain["saturated_fraction"][0] < 0.8
    assert_same(inplace_row, plain)


def test_without_an_optimizer_each_backward_is_a_step(tmp_path):
    """Post-accumulate hooks read the gradients backward leaves; forwards under no_grad (an
    evaluation) are not measured."""
    torch.manual_seed(0)
    model = ConvNet()
    x, y = images()
    norms = []
    with watch(model, every=2, out=tmp_path) as w:
        for _ in range(5):
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
            norms.append([p.grad.norm().item() for p in (model.conv1.weight, model.fc.weight)])
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.01 * p.grad
            model.eval()
            with torch.no_grad():
                model(x)  # an evaluation: not a step
            model.train()
    measured = rows(tmp_path)
    assert [row["step"] for row in measured] == [0, 2, 4]
    for row in measured:
        first, last = norms[row["step"]]
        assert row["grad_norms"][0] == pytest.approx(first, rel=1e-6)
        assert row["grad_norms"][-1] == pytest.approx(last, rel=1e-6)
        assert "update_ratio" not in row
    assert w.result.steps == 5


def test_a_grad_scaler_is_seen_unscaled_and_its_skipped_steps_are_not_steps(tmp_path):
    """The step pre-hook runs after GradScaler's unscale: the norms are the true gradients'."""
    x, y = images()
    torch.manual_seed(0)
    model = ConvNet()
    reference = copy.deepcopy(model)
    one = torch.optim.SGD(reference.parameters(), lr=0.01)
    with watch(reference, one, every=1, out=tmp_path / "plain"):
        one_step(reference, one, x, y)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    with watch(model, optimizer, every=1, out=tmp_path / "scaled") as w:
        optimizer.zero_grad()
        scaler.scale(F.cross_entropy(model(x), y)).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()  # an overflowing step: the scaler skips it
        scaler.scale(F.cross_entropy(model(x), y) * math.inf).backward()
        scaler.step(optimizer)
        scaler.update()
    (plain,) = rows(tmp_path / "plain")
    (scaled,) = rows(tmp_path / "scaled")
    assert scaled["grad_norms"] == pytest.approx(plain["grad_norms"], rel=1e-5)
    assert w.result.steps == 1


class Ops(TorchDispatchMode):
    """Every aten operation run while it is on."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_steps_between_watched_ones_run_no_extra_operation(tmp_path):
    """Between measured steps the hooks return at once: the same operations as unwatched, so
    nothing is computed or read back from the device."""
    x, y = images()
    torch.manual_seed(0)
    model = ConvNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    one_step(model, optimizer, x, y)
    with Ops() as unwatched:
        one_step(model, optimizer, x, y)
    with watch(model, optimizer, every=100, out=tmp_path):
        one_step(model, optimizer, x, y)  # step 0: measured
        with Ops() as watched:
            one_step(model, optimizer, x, y)
    assert watched.ops == unwatched.ops
    assert len(rows(tmp_path)) == 1


def test_close_removes_every_hook_and_writes_the_result(tmp_path):
    torch.manual_seed(0)
    model = ConvNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = images()
    w = watch(model, optimizer, every=1, out=tmp_path / "a")
    one_step(model, optimizer, x, y)
    w.log(epoch=1, train_loss=2.0, test_loss=2.1, test_accuracy=torch.tensor(0.25))
    result = w.close()
    assert w.close() is result  # once
    assert result.status == "ok" and result.test_accuracy == 0.25 and result.test_loss == 2.1
    saved = records.read_json(tmp_path / "a" / "result.json")
    assert saved["grad_norms_init"] == rows(tmp_path / "a")[0]["grad_norms"]
    assert saved["history"] == rows(tmp_path / "a", "epoch")
    size = (tmp_path / "a" / "metrics.jsonl").stat().st_size
    with Ops() as after:
        one_step(model, optimizer, x, y)
    fresh = ConvNet()
    fresh.load_state_dict(model.state_dict())
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.01)
    fresh_optimizer.load_state_dict(optimizer.state_dict())
    with Ops() as never_watched:
        one_step(fresh, fresh_optimizer, x, y)
    assert after.ops == never_watched.ops
    assert (tmp_path / "a" / "metrics.jsonl").stat().st_size == size
    with watch(model, optimizer, every=1, out=tmp_path / "b"):  # free to watch again
        one_step(model, optimizer, x, y)
    assert len(rows(tmp_path / "b")) == 1


def test_an_error_in_the_loop_leaves_an_unfinished_run(tmp_path):
    torch.manual_seed(0)
    model = ConvNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = images()
    with pytest.raises(RuntimeError, match="boom"), watch(model, optimizer, every=1, out=tmp_path):
        one_step(model, optimizer, x, y)
        raise RuntimeError("boom")
    assert len(rows(tmp_path)) == 1
    assert not (tmp_path / "result.json").exists()
    with watch(model, optimizer, out=tmp_path / "again"):  # the hooks went with the error
        pass


def test_a_diverging_loop_is_recorded_as_diverged(tmp_path):
    torch.manual_seed(0)
    model = ConvNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e30)
    x, y = images()
    with watch(model, optimizer, every=1, out=tmp_path) as w:
        for _ in range(4):
            one_step(model, optimizer, x, y)
    assert w.result.status == "diverged" and w.result.diverged_step is not None
    saved = json.loads((tmp_path / "result.json").read_text())  # strict JSON: nan is null
    assert saved["status"] == "diverged"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, o: watch("model", o), "watch: model must be a torch.nn.Module, got str"),
        (lambda m, o: watch(m, "sgd"), "watch: optimizer must be a torch.optim.Optimizer, got"),
        (lambda m, o: watch(m, o, every=0), "watch: every must be a whole number of steps >= 1"),
        (lambda m, o: watch(m, o, layers=["conv9"]), "watch: no layer 'conv9' with a trainable"),
        (lambda m, o: watch(m, probe=images()), "watch: probe= needs the optimizer"),
        (lambda m, o: watch(m, o, probe=(1, 2)), "watch: probe must be a pair of tensors"),
        (lambda m, o: watch(nn.ReLU(), None), "watch: ReLU has no module with a trainable weight"),
    ],
)
def test_wrong_arguments_are_one_clear_error(tmp_path, monkeypatch, call, message):
    monkeypatch.chdir(tmp_path)
    model = ConvNet()
    with pytest.raises(UsageError) as error:
        call(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert str(error.value).startswith(message)


def test_watching_a_watched_model_is_an_error(tmp_path):
    model = ConvNet()
    busy = r"already watched \(writing to .*a\); close that watch first"
    with watch(model, out=tmp_path / "a"), pytest.raises(UsageError, match=busy):
        watch(model, out=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_a_second_watch_into_a_held_directory_is_refused(tmp_path):
    """A run directory has one writer: a second model watched into it in this process is
    refused (another process is: tests/test_watch_writers.py), the first's rows untouched; the
    directory is free once the first watch ends, by close or by an error."""
    x, y = images()
    model = ConvNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, optimizer, every=1, out=tmp_path):
        one_step(model, optimizer, x, y)
        with pytest.raises(UsageError) as error:
            watch(ConvNet(), out=tmp_path)
        one_step(model, optimizer, x, y)
    assert str(error.value) == (
        f"watch: {tmp_path} is being written by another watch in this process; "
        "close that watch first, or give each model its own out="
    )
    assert [row["step"] for row in rows(tmp_path)] == [0, 1]
    assert records.read_json(tmp_path / "result.json")["steps"] == 2
    with pytest.raises(RuntimeError, match="boom"), watch(model, out=tmp_path):
        raise RuntimeError("boom")
    with watch(ConvNet(), out=tmp_path):  # free again
        assert records.lock_run(tmp_path) is None  # held while it watches
    fd = records.lock_run(tmp_path)
    assert fd is not None  # and let go when it ends
    os.close(fd)


@pytest.mark.parametrize("record", ["config.json", "metrics.jsonl", "result.json"])
def test_an_out_the_records_cannot_be_written_into_is_refused_when_the_watch_starts(
    tmp_path, record
):
    """A record in the way (here a directory) is a UsageError from watch(), naming it, and
    not an OSError from the user's optimizer.step(); the directory is free again after."""
    (tmp_path / record).mkdir()
    model = ConvNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(UsageError) as error:
        watch(model, optimizer, every=1, out=tmp_path)
    assert str(error.value) == f"watch: cannot write to {tmp_path / record}: Is a directory"
    assert watched_by(model) is None and (tmp_path / record).is_dir()
    fd = records.lock_run(tmp_path)
    assert fd is not None  # the lock taken before the check is let go
    os.close(fd)


def test_an_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("mine")
    with pytest.raises(UsageError) as error:
        watch(ConvNet(), out=tmp_path / "taken")
    assert str(error.value) == f"watch: cannot write to {tmp_path / 'taken'}: File exists"
    assert (tmp_path / "taken").read_text() == "mine"


def test_a_model_on_the_meta_device_is_refused_when_the_watch_starts(tmp_path):
    """A meta model has shapes without values: refused at watch(), not a NotImplementedError
    (or Tensor.item()'s RuntimeError) inside the first step; nothing is written."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UsageError) as error:
        watch(model, optimizer, out=tmp_path / "run")
    assert str(error.value).startswith(
        "watch: the model's 0.weight is on the meta device (a shape without values); watch it "
        "once its weights are real"
    )
    assert not (tmp_path / "run").exists()


def test_log_refuses_what_is_not_a_number(tmp_path):
    model = ConvNet()
    with watch(model, out=tmp_path) as w:
        with pytest.raises(UsageError, match="log: test_accuracy is a fraction in"):
            w.log(test_accuracy=97.5)
        with pytest.raises(UsageError, match="log: train_loss must be a number, got 'low'"):
            w.log(train_loss="low")


def test_the_default_directory_is_under_runs_watch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = watch(ConvNet()), watch(ConvNet())
    assert first.run_dir.parent == second.run_dir.parent == Path("runs", "watch")
    assert (tmp_path / first.run_dir).is_dir() and (tmp_path / second.run_dir).is_dir()
    assert first.run_dir.name.startswith("convnet-") and first.run_dir != second.run_dir
    first.close()
    second.close()


class FunctionalNet(nn.Module):
    """ConvNet's twin written as pytorch/examples writes it: activations as functions."""

    def __init__(self, relu=F.relu, slope: float | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 8 * 8, 10)
        self.relu, self.slope = relu, slope

    def act(self, x):
        return self.relu(x) if self.slope is None else F.leaky_relu(x, self.slope)

    def forward(self, x):
        x = self.act(self.conv1(x))
        x = self.act(self.norm2(self.conv2(x)))
        return self.fc(x.flatten(1))


@pytest.mark.parametrize(
    "relu",
    [F.relu, torch.relu, torch.Tensor.relu, lambda x: F.relu(x, inplace=True)],
    ids=["F.relu", "torch.relu", "Tensor.relu", "F.relu-inplace"],
)
def test_functional_activations_are_measured_as_their_modules(tmp_path, relu):
    """F.relu in a forward is an activation layer, named by its order and labelled by the conv
    before it, with the numbers the module form gives (a module's own F.relu is not counted
    twice: ConvNet's layers are its modules alone)."""
    x, y = images()
    torch.manual_seed(0)
    modules = ConvNet()
    functional = FunctionalNet(relu)
    functional.load_state_dict(modules.state_dict(), strict=False)
    for model, out in ((modules, "modules"), (functional, "functional")):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        with watch(model, optimizer, every=1, out=tmp_path / out):
            one_step(model, optimizer, x, y)
    config = records.read_json(tmp_path / "functional" / "config.json")
    assert config["activation_layers"] == ["relu#1", "relu#2"]
    assert config["layer_labels"] == ["conv1", "conv2"] and config["activation"] == "relu"
    assert records.read_json(tmp_path / "modules" / "config.json")["activation_layers"] == [
        "act1",
        "act2",
    ]
    assert_same(rows(tmp_path / "functional")[0], rows(tmp_path / "modules")[0])


def test_a_functional_leaky_relu_is_judged_with_its_own_slope(tmp_path):
    """F.leaky_relu(x, 0.2)'s negative side keeps 20 % of the slope: not saturated (< 10 %);
    at 0.01 it is."""
    x, y = images()
    shares = {}
    for slope in (0.2, 0.01):
        torch.manual_seed(0)
        model = FunctionalNet(slope=slope)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        with watch(model, optimizer, every=1, out=tmp_path / str(slope)):
            one_step(model, optimizer, x, y)
        shares[slope] = rows(tmp_path / str(slope))[0]["saturated_fraction"]
    assert shares[0.2] == [0.0, 0.0]
    assert all(0.2 < share < 0.8 for share in shares[0.01])


def test_a_layer_no_gradient_reaches_is_null_not_a_divergence(tmp_path):
    """An auxiliary head the loss does not use has no gradient: null in the row, left out of
    the first/last ratio, and the run is not 'diverged'."""
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "body": nn.Linear(20, 16),
            "act": nn.Sigmoid(),
            "head": nn.Linear(16, 10),
            "aux": nn.Linear(16, 3),
        }
    )
    model.forward = lambda x: model["head"](model["act"](model["body"](x)))  # aux unused
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batch()
    with watch(model, optimizer, every=1, out=tmp_path) as w:
        for _ in range(2):
            one_step(model, optimizer, x, y)
    row = rows(tmp_path)[0]
    assert records.read_json(tmp_path / "config.json")["layers"] == ["body", "head", "aux"]
    assert row["grad_norms"][2] is None and row["grad_norms"][0] > 0
    assert row["vanishing_ratio"] == pytest.approx(row["grad_norms"][0] / row["grad_norms"][1])
    assert w.result.status == "ok" and w.result.diverged_step is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_autocast_is_measured_in_float32(tmp_path, dtype):
    """Under autocast the activations are bf16/fp16: counts are still exact whole numbers."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 4096), nn.ReLU(), nn.Linear(4096, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = batch(n=40)
    with watch(model, optimizer, every=1, out=tmp_path):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    (row,) = rows(tmp_path)
    assert sum(row["activation_histogram"][0]["counts"]) == 40 * 4096
    assert all(math.isfinite(v) for v in row["signal_norms"] + row["activation_std"])


def test_units_of_a_sequence_are_its_features(tmp_path):
    """A Linear along a sequence (batch, time, features): a unit is a feature, not a time step;
    three quarters of the features pushed below zero are dead."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        model[0].bias[:48] = -100.0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(16, 12, 8)
    y = torch.randint(0, 10, (16, 12))
    with watch(model, optimizer, every=1, out=tmp_path):
        optimizer.zero_grad()
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        optimizer.step()
    assert records.read_json(tmp_path / "config.json")["hidden"] == [64]
    assert rows(tmp_path)[0]["dead_fraction"] == [pytest.approx(0.75)]


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(8, 16, num_layers=2, batch_first=True)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        h, _ = self.gru(x)
        h, _ = self.attn(h, h, h)
        return self.fc(h[:, -1])


def test_recurrent_and_attention_weights_are_watched(tmp_path):
    """A GRU's layers are each a layer (weight_ih_lk and weight_hh_lk: "gru.lk"), attention's
    in_proj_weight a weight too; out_proj, used by its parent's code, follows its parent."""
    torch.manual_seed(0)
    model = Recurrent()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(6, 5, 8), torch.randint(0, 10, (6,))
    with watch(model, optimizer, every=1, out=tmp_path / "all"):
        one_step(model, optimizer, x, y)
    config = records.read_json(tmp_path / "all" / "config.json")
    assert config["layers"] == ["gru.l0", "gru.l1", "attn", "attn.out_proj", "fc"]
    assert config["recurrent_layers"] == ["gru.l0", "gru.l1"]
    assert config["activation"] == "tanh"  # a GRU's output passes its tanh: never "linear"
    row = rows(tmp_path / "all")[0]
    for index, layer in enumerate(("l0", "l1")):
        grads = [p.grad for n, p in model.gru.named_parameters() if f"weight_ih_{layer}" in n]
        grads += [p.grad for n, p in model.gru.named_parameters() if f"weight_hh_{layer}" in n]
        expected = torch.stack([g.norm() for g in grads]).norm().item()
        assert row["grad_norms"][index] == pytest.approx(expected, rel=1e-5)
    with watch(model, optimizer, every=1, out=tmp_path / "gru", layers=["gru", "fc"]):
        one_step(model, optimizer, x, y)
    chosen = records.read_json(tmp_path / "gru" / "config.json")["layers"]
    assert chosen == ["gru.l0", "gru.l1", "fc"]


def test_without_an_optimizer_a_step_is_a_backward(tmp_path):
    """Two forwards per step (two views of a batch): still one step per backward."""
    torch.manual_seed(0)
    model = ConvNet()
    x, y = images()
    with watch(model, every=2, out=tmp_path) as w:
        for _ in range(5):
            model.zero_grad()
            loss = F.cross_entropy(model(x), y) + F.cross_entropy(model(x.flip(-1)), y)
            loss.backward()
    assert [row["step"] for row in rows(tmp_path)] == [0, 2, 4]
    assert w.result.steps == 5


def test_a_module_called_twice_is_two_activation_layers(tmp_path):
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.fc = nn.Linear(20, 32), nn.Linear(32, 16), nn.Linear(16, 10)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.fc(self.act(self.b(self.act(self.a(x)))))

    torch.manual_seed(0)
    model = Twice()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = batch()
    with watch(model, optimizer, every=1, out=tmp_path):
        one_step(model, optimizer, x, y)
    config = records.read_json(tmp_path / "config.json")
    assert config["activation_layers"] == ["act", "act#2"]
    assert config["layer_labels"] == ["a", "b"] and config["hidden"] == [32, 16]
    assert [sum(h["counts"]) for h in rows(tmp_path)[0]["activation_histogram"]] == [
        48 * 32,
        48 * 16,
    ]


def test_two_activations_after_one_layer_get_labels_of_their_own(tmp_path):
    class Stacked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.sig, self.fc2 = nn.Linear(20, 16), nn.Sigmoid(), nn.Linear(16, 10)

        def forward(self, x):
            return self.fc2(F.relu(self.sig(self.fc1(x))))

    model = Stacked()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, optimizer, every=1, out=tmp_path):
        one_step(model, optimizer, *batch())
    config = records.read_json(tmp_path / "config.json")
    assert config["layer_labels"] == ["fc1 (sig)", "fc1 (relu#1)"]


def test_the_signal_under_a_grad_scaler_is_divided_by_its_scale(tmp_path):
    x, y = images()
    torch.manual_seed(0)
    model = ConvNet()
    reference = copy.deepcopy(model)
    one = torch.optim.SGD(reference.parameters(), lr=0.01)
    with watch(reference, one, every=1, out=tmp_path / "plain"):
        one_step(reference, one, x, y)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    with watch(model, optimizer, every=1, out=tmp_path / "scaled", scaler=scaler):
        optimizer.zero_grad()
        scaler.scale(F.cross_entropy(model(x), y)).backward()
        scaler.step(optimizer)
        scaler.update()
    (plain,) = rows(tmp_path / "plain")
    (scaled,) = rows(tmp_path / "scaled")
    assert scaled["signal_norms"] == pytest.approx(plain["signal_norms"], rel=1e-5)


def test_dead_units_are_zero_on_every_sample_of_the_last_measured_batches(tmp_path):
    """A unit that fires on one batch and not the next is not dead: dead means zero on the
    last few measured batches, not on one batch of 64."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 10))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.zero_()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    negative = torch.tensor([[-1.0, 1.0]] * 8)  # unit 0 silent
    positive = torch.tensor([[1.0, 1.0]] * 8)  # unit 0 fires
    y = torch.zeros(8, dtype=torch.long)
    with watch(model, optimizer, every=1, out=tmp_path):
        one_step(model, optimizer, negative, y)
        one_step(model, optimizer, positive, y)
        one_step(model, optimizer, negative, y)
    assert [row["dead_fraction"] for row in rows(tmp_path)] == [[0.5], [0.0], [0.0]]


def test_a_unit_silent_for_a_whole_window_of_measured_batches_is_dead(tmp_path):
    from vanishing.measure.watch.capture import DEAD_WINDOW

    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 10))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.zero_()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    negative = torch.tensor([[-1.0, 1.0]] * 8)  # unit 0 silent
    positive = torch.tensor([[1.0, 1.0]] * 8)  # unit 0 fires
    y = torch.zeros(8, dtype=torch.long)
    with watch(model, optimizer, every=1, out=tmp_path):
        one_step(model, optimizer, positive, y)
        for _ in range(DEAD_WINDOW):
            one_step(model, optimizer, negative, y)
    dead = [row["dead_fraction"][0] for row in rows(tmp_path)]
    assert dead == [0.0] * DEAD_WINDOW + [0.5]  # it fired in the window until the last row


def test_activation_checkpointing_trains_and_measures_as_without_it(tmp_path):
    """The saturation slope's own autograd graph stays out of checkpoint's saved tensors."""
    from torch.utils.checkpoint import checkpoint

    class Checkpointed(nn.Module):
        def __init__(self, use: bool) -> None:
            super().__init__()
            self.block = nn.Sequential(
                nn.Linear(20, 16), nn.Sigmoid(), nn.Linear(16, 16), nn.Tanh()
            )
            self.fc = nn.Linear(16, 10)
            self.use = use

        def forward(self, x):
            h = checkpoint(self.block, x, use_reentrant=False) if self.use else self.block(x)
            return self.fc(h)

    x, y = batch()
    found = []
    for use in (False, True):
        torch.manual_seed(0)
        model = Checkpointed(use)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with watch(model, optimizer, every=1, out=tmp_path / str(use)):
            for _ in range(2):
                one_step(model, optimizer, x, y)
        found.append(rows(tmp_path / str(use)))
    for plain, checkpointed in zip(*found, strict=True):
        assert_same(checkpointed, plain)


def test_without_an_optimizer_every_signal_lands_in_its_own_row(tmp_path):
    """A frozen first weight: the step ends when backward does, not at the last weight's
    gradient, so the first activation's signal (which arrives after it) is in the row."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(20, 16), nn.Sigmoid(), nn.Linear(16, 16), nn.Sigmoid(), nn.Linear(16, 10)
    )
    model[0].weight.requires_grad_(False)
    x, y = batch()
    with watch(model, every=1, out=tmp_path):
        for _ in range(3):
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
            with torch.no_grad():
                for p in model.parameters():
                    if p.grad is not None:
                        p -= 0.1 * p.grad
    assert all(row["signal_norms"][0] is not None for row in rows(tmp_path))


@pytest.mark.parametrize("with_optimizer", [True, False])
def test_a_tied_weight_is_the_output_layer_s(tmp_path, with_optimizer):
    """An embedding and a classifier sharing one weight (nanoGPT's wte and lm_head): it is
    watched once, as the module that ran last, the one computing the output; the embedding,
    with no weight of its own left, is not a layer, and config.json says whose weight it is."""

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 16)
            self.body = nn.Linear(16, 16)
            self.head = nn.Linear(16, 10, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, tokens):
            return self.head(torch.tanh(self.body(self.emb(tokens))))

    torch.manual_seed(0)
    model = Tied()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tokens = torch.randint(0, 10, (32,))
    with watch(model, optimizer if with_optimizer else None, every=1, out=tmp_path):
        model.zero_grad()
        F.cross_entropy(model(tokens), tokens).backward()
        expected = model.head.weight.grad.norm().item()  # both uses' gradient, summed
        optimizer.step()
    config = records.read_json(tmp_path / "config.json")
    assert config["layers"] == ["body", "head"]
    assert config["tied"] == {"head": ["emb"]}
    assert rows(tmp_path)[0]["grad_norms"][-1] == pytest.approx(expected, rel=1e-6)


def test_no_measured_forward_before_the_first_row_still_lists_the_activations(tmp_path):
    """LBFGS runs the model inside step(), after the row: the activation modules found are
    listed (a ReLU net is not called linear), their numbers missing, not stale."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 10))
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=2)
    x, y = batch()

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with watch(model, optimizer, every=1, out=tmp_path):
        for _ in range(2):
            optimizer.step(closure)
    config = records.read_json(tmp_path / "config.json")
    assert config["activation_layers"] == ["1"] and config["activation"] == "relu"
    assert all(row["signal_norms"] == [None] for row in rows(tmp_path))


def test_layers_naming_only_activations_keeps_every_weighted_layer(tmp_path):
    model = ConvNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, optimizer, every=1, out=tmp_path, layers=["act2"]):
        one_step(model, optimizer, *images())
    config = records.read_json(tmp_path / "config.json")
    assert config["layers"] == ["conv1", "conv2", "norm2", "fc"]
    assert config["activation_layers"] == ["act2"]


def test_a_scaler_needs_the_optimizer(tmp_path):
    with pytest.raises(UsageError, match="watch: scaler= needs the optimizer"):
        watch(ConvNet(), out=tmp_path, scaler=torch.amp.GradScaler("cpu"))


class Cached(nn.Sequential):
    """A model whose class leaves its cache out of its pickles."""

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("cache", None)
        return state


def test_a_models_own_getstate_still_decides_what_is_saved(tmp_path):
    """Saved inside a watch, a model's own __getstate__ still leaves its cache out; the watch's
    hooks are left out too."""
    import io

    model = Cached(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    model.cache = torch.ones(3)
    buffer = io.BytesIO()
    with watch(model, out=tmp_path):
        torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert not hasattr(loaded, "cache") and not loaded._forward_pre_hooks
    assert hasattr(model, "cache")


def test_a_forward_the_models_call_does_not_show_is_measured_between_its_marks(tmp_path):
    """A loop that calls the model's parts (as a LightningModule's training_step calls
    self.net): unmarked, its activations go unseen; between forward_starts and forward_ends
    they are measured as the model's own forward is, the signal as autograd gives it."""

    class Wrapper(nn.Module):  # the model watched; its forward is never called
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 10))

    torch.manual_seed(0)
    x, y = batch()
    for marked in (False, True):
        model = Wrapper()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        out = tmp_path / str(marked)
        with watch(model, optimizer, every=1, out=out) as w:
            if marked:
                w.forward_starts()
            hidden = model.net[1](model.net[0](x))
            hidden.retain_grad()
            loss = F.cross_entropy(model.net[2](hidden), y)
            if marked:
                w.forward_ends()
            loss.backward()
            optimizer.step()
        (row,) = rows(out)
        if marked:
            assert row["signal_norms"] == pytest.approx([hidden.grad.norm().item()], rel=1e-6)
            assert row["activation_mean"] == pytest.approx([hidden.mean().item()], rel=1e-5)
        else:
            assert row["signal_norms"] == [None]
