"""The grouped trainer against K one-by-one runs: weights, rows, optimizers, probes, NaN."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from conftest import compared, without_timings
from vanishing import executor, records
from vanishing.data import datasets as data
from vanishing.errors import UsageError
from vanishing.executor import local
from vanishing.frontends.cli import main
from vanishing.measure import probes
from vanishing.model.activations import get_activation
from vanishing.model.mlp import GroupedMLP, build_model, make_optimizer
from vanishing.reporting import loading, summary
from vanishing.settings.config import TrainConfig
from vanishing.training import group
from vanishing.training import loop as train_module
from vanishing.training.group import clip_group_gradients, plan_groups, train_group
from vanishing.training.loop import clip_gradients, train

SMALL = TrainConfig(
    hidden=(32, 16), epochs=2, batch_size=32, probe_every=4, probe_size=64, device="cpu"
)
TIMINGS = {"train_seconds", "eval_seconds"}  # wall-clock: the only fields allowed to differ


@pytest.fixture
def tiny(tiny_dir) -> data.Dataset:
    return data.load_dataset(data_dir=tiny_dir, verify=False)


def configs_of(runs, **change) -> list[TrainConfig]:
    base = dataclasses.replace(SMALL, **change)
    return [dataclasses.replace(base, activation=a, init=i, seed=s) for a, i, s in runs]


def capture(monkeypatch, module, name: str) -> list:
    """Record what `module.name` returns each time it is called."""
    returned = []
    original = getattr(module, name)

    def spy(*args, **kwargs):
        returned.append(original(*args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(module, name, spy)
    return returned


def plain(value):
    """A record value that pytest.approx compares: histograms as their edges then counts."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [n for layer in value for part in ("edges", "counts") for n in layer[part]]
    return value


def assert_rows_close(got, expected) -> None:
    """Same rows (kind, step, epoch and keys), numbers equal to float tolerance."""
    assert [(r["kind"], r["step"], r["epoch"]) for r in got] == [
        (r["kind"], r["step"], r["epoch"]) for r in expected
    ]
    for a, b in zip(got, expected, strict=True):
        assert set(a) == set(b)
        assert a["kind"] == b["kind"]
        for key in set(a) - TIMINGS - {"kind"}:
            close = pytest.approx(plain(b[key]), rel=1e-4, abs=1e-6, nan_ok=True)
            assert plain(a[key]) == close, key


def group_models(trained: GroupedMLP, configs) -> list:
    """The group's models in the callers' order (a group sorts equal activations together)."""
    by_position = [trained.model(k) for k in range(len(trained))]
    first_seen = {c.activation: i for i, c in reversed(list(enumerate(configs)))}
    order = sorted(range(len(configs)), key=lambda i: (first_seen[configs[i].activation], i))
    models = [None] * len(configs)
    for position, i in enumerate(order):
        models[i] = by_position[position]
    return models


def assert_weights_close(got: torch.Tensor, expected: torch.Tensor, lr: float) -> None:
    """Equal to float tolerance, allowing a rare element to be off by a fraction of one step.

    bmm and mm add in different orders; Adam divides each gradient element by its own scale, so
    where a gradient is near zero that rounding can move a weight by a share of lr.
    """
    torch.testing.assert_close(got, expected, rtol=0, atol=lr / 10)
    close = torch.isclose(got, expected, rtol=1e-4, atol=1e-6)
    assert close.float().mean() >= 0.999, f"{(~close).sum()} of {close.numel()} differ"


MIXES = {  # (activation, init, seed) per run, and PReLU's mode
    "relu-inits": (
        [("relu", "default", 0), ("relu", "kaiming", 1), ("relu", "orthogonal", 0)],
        "layer",
    ),
    "prelu-sigmoid-interleaved": (
        [("prelu", "default", 0), ("sigmoid", "xavier", 1), ("prelu", "lecun", 2)],
        "layer",
    ),
    "smooth-leaky-prelu-unit": (
        [
            ("tanh", "lecun", 0),
            ("leaky_relu", "he", 3),
            ("prelu", "default", 1),
            ("gelu", "default", 1),
        ],
        "unit",
    ),
}


@pytest.mark.parametrize("mix", list(MIXES))
def test_group_equals_one_by_one(tiny, tmp_path, monkeypatch, mix):
    runs, prelu_mode = MIXES[mix]
    configs = configs_of(runs, prelu_mode=prelu_mode)
    singles = capture(monkeypatch, train_module, "fit")
    expected = [train(c, dataset=tiny, run_dir=tmp_path / f"one{i}") for i, c in enumerate(configs)]
    groups = capture(monkeypatch, group, "fit_group")
    dirs = [tmp_path / f"group{i}" for i in range(len(configs))]
    got = train_group(configs, dataset=tiny, run_dirs=dirs)
    for one, grouped in zip(singles, group_models(groups[0], configs), strict=True):
        for p, q in zip(grouped.parameters(), one.parameters(), strict=True):
            assert_weights_close(p, q, SMALL.lr)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a.status == b.status == "ok" and a.steps == b.steps == 20
        assert a.config == b.config and a.run_dir == str(dirs[i])
        assert_rows_close(records.read_metrics(dirs[i]), records.read_metrics(tmp_path / f"one{i}"))
        for key in ("test_accuracy", "test_loss", "grad_norms_init", "grad_norms_final"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-4, abs=1e-6)
        assert a.dead_fraction == pytest.approx(b.dead_fraction)


def test_residual_gain_and_clipping_grouped_equal_one_by_one(tiny, tmp_path, monkeypatch):
    """Each model its own init gain and clipping limit (or none), one residual shape."""
    runs = [("prelu", "default", 0), ("tanh", "kaiming", 1), ("relu", "default", 2)]
    per_model = [(1.5, 1.8), (0.5, None), (2.0, 2.6)]  # (init_gain, clip_grad_norm)
    configs = [
        dataclasses.replace(c, init_gain=gain, clip_grad_norm=clip)
        for c, (gain, clip) in zip(configs_of(runs, hidden=(16, 16, 16), residual=True),
                                   per_model, strict=True)
    ]  # fmt: skip
    assert len(plan_groups(configs, 3)) == 1  # they share a group
    singles = capture(monkeypatch, train_module, "fit")
    expected = [train(c, dataset=tiny, run_dir=tmp_path / f"one{i}") for i, c in enumerate(configs)]
    groups = capture(monkeypatch, group, "fit_group")
    dirs = [tmp_path / f"group{i}" for i in range(len(configs))]
    got = train_group(configs, dataset=tiny, run_dirs=dirs)
    assert groups[0].residual
    for one, grouped in zip(singles, group_models(groups[0], configs), strict=True):
        for p, q in zip(grouped.parameters(), one.parameters(), strict=True):
            assert_weights_close(p, q, SMALL.lr)
    clipped = [b.clipped_steps for b in expected]
    assert clipped[1] is None and 0 < clipped[0] < 20 and 0 < clipped[2] < 20, clipped
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a.status == b.status == "ok" and a.clipped_steps == b.clipped_steps
        assert_rows_close(records.read_metrics(dirs[i]), records.read_metrics(tmp_path / f"one{i}"))
        for key in ("test_accuracy", "test_loss", "grad_norms_init", "grad_norms_final"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-4, abs=1e-6)


def test_a_clipping_residual_group_resumes_to_its_uninterrupted_records(tiny, tmp_path):
    runs = [("relu", "default", 0), ("tanh", "kaiming", 1)]
    configs = [
        dataclasses.replace(c, clip_grad_norm=clip, init_gain=1.5)
        for c, clip in zip(configs_of(runs, hidden=(16, 16), residual=True, epochs=3),
                           (2.0, None), strict=True)
    ]  # fmt: skip
    expected = [tmp_path / f"whole{i}" for i in range(2)]
    train_group(configs, dataset=tiny, run_dirs=expected)
    dirs = [tmp_path / f"resumed{i}" for i in range(2)]
    calls = []

    def stop(count: int) -> None:  # in epoch 2, after the checkpoint of epoch 1
        calls.append(count)
        if len(calls) == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_group(configs, dataset=tiny, run_dirs=dirs, on_steps=stop)
    assert all((d / records.CHECKPOINT).is_file() for d in dirs)
    seen = []
    train_group(configs, dataset=tiny, run_dirs=dirs, resume=True,
                on_epoch=lambda config, row: seen.append(row["epoch"]))  # fmt: skip
    assert sorted(seen) == [2, 2, 3, 3]  # it continued from epoch 1
    for got, want in zip(dirs, expected, strict=True):
        rows = records.read_metrics(got)
        assert without_timings(rows) == without_timings(records.read_metrics(want))
        result, reference = (records.read_json(d / records.RESULT) for d in (got, want))
        assert without_timings(result) == without_timings(reference)
    counts = [records.read_json(d / records.RESULT)["clipped_steps"] for d in dirs]
    assert counts[1] is None and counts[0] > 0


def test_grouped_clipping_equals_clipping_each_model():
    names, limits = ["prelu", "prelu", "relu", "tanh"], [0.5, None, 500.0, 0.1]  # norms ~100
    models = [build_model((12, 7), n, seed=s) for s, n in enumerate(names)]
    g = torch.Generator().manual_seed(0)
    for model in models:
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
    stacked = GroupedMLP.from_models(models)
    grads = GroupedMLP.from_models([gradients_of(m) for m in models])
    for p, grad in zip(stacked.parameters(), grads.parameters(), strict=True):
        p.grad = grad.detach().clone()
    max_norms = torch.tensor([math.inf if x is None else x for x in limits])
    flags = clip_group_gradients(stacked, max_norms).tolist()
    expected = [
        False if limit is None else bool(clip_gradients(model, limit))
        for model, limit in zip(models, limits, strict=True)
    ]
    assert flags == expected == [True, False, False, True]
    clipped = GroupedMLP.from_models([gradients_of(m) for m in models])
    for p, q in zip(stacked.parameters(), clipped.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.detach(), rtol=1e-5, atol=1e-7)


def gradients_of(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the model whose parameters are the model's gradients."""
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for p, source in zip(copied.parameters(), model.parameters(), strict=True):
            p.copy_(source.grad)
    return copied


@pytest.mark.parametrize(
    "optimizer, momentum", [("adam", 0.0), ("sgd", 0.9), ("rmsprop", 0.0), ("adamw", 0.0)]
)
def test_stacked_optimizer_equals_independent_ones(optimizer, momentum):
    models = [
        build_model((12, 7), name, seed=s) for s, name in enumerate(["prelu", "relu", "tanh"])
    ]
    stacked = GroupedMLP.from_models(models)
    singles = [make_optimizer(optimizer, m.parameters(), 0.01, momentum) for m in models]
    joint = make_optimizer(optimizer, stacked.parameters(), 0.01, momentum)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # random gradients, different per model and per step
        for model in models:
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=g)
        grads = GroupedMLP.from_models([gradients_of(m) for m in models])  # stacked alike
        for p, grad in zip(stacked.parameters(), grads.parameters(), strict=True):
            p.grad = grad.detach().clone()
        for opt in [*singles, joint]:
            opt.step()
    for k, model in enumerate(models):
        for p, q in zip(stacked.model(k).parameters(), model.parameters(), strict=True):
            # Elementwise, so equal up to the last bit: fused Adam's vector lanes and scalar tail
            # may round differently, and an element's lane depends on its offset in the tensor.
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-9)


def test_probes_per_model_equal_single_model_probes():
    names = ["sigmoid", "prelu", "prelu", "relu"]
    models = [build_model((12, 7, 5), n, seed=s) for s, n in enumerate(names)]
    stacked = GroupedMLP.from_models(models)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 32, 784, generator=g), torch.randint(0, 10, (4, 32), generator=g)
    x[3, :, :] *= -1  # pushes some relu units dead, so dead_fraction is not all zeros
    rows = probes.measure_group(stacked, x, y)
    for k, model in enumerate(models):
        expected = probes.measure(model, get_activation(names[k]), x[k], y[k])
        assert set(rows[k]) == set(expected)
        for key, value in expected.items():
            assert plain(rows[k][key]) == pytest.approx(plain(value), rel=1e-5, abs=1e-7), key
    dead = probes.dead_units_group(stacked, x.flatten(0, 1), chunk=40)
    assert dead == [pytest.approx(probes.dead_units(m, x.flatten(0, 1), chunk=40)) for m in models]
    before, before_each = probes.snapshot_group(stacked), [probes.snapshot(m) for m in models]
    with torch.no_grad():
        for weight in stacked.weights:
            weight.mul_(1.5)
        for model in models:
            for linear in model.linears:
                linear.weight.mul_(1.5)
    ratios = probes.update_ratios_group(stacked, before)
    for k, model in enumerate(models):
        assert ratios[k] == pytest.approx(probes.update_ratios(model, before_each[k]), rel=1e-5)


def test_nan_in_one_model_leaves_the_others_untouched(tiny, monkeypatch):
    runs = [("relu", "default", 0), ("relu", "default", 1), ("tanh", "xavier", 2)]
    configs = configs_of(runs, epochs=1)
    clean = capture(monkeypatch, group, "fit_group")
    train_group(configs, dataset=tiny)
    poisoned_from = GroupedMLP.from_models

    def poison(models):
        stacked = poisoned_from(models)
        with torch.no_grad():
            stacked.weights[1][1, 0, 0] = math.nan  # model 1 only
        return stacked

    monkeypatch.setattr(GroupedMLP, "from_models", staticmethod(poison))
    results = train_group(configs, dataset=tiny)
    dirty = clean[1]
    assert [r.status for r in results] == ["ok", "diverged", "ok"]
    assert results[1].diverged_step == 4  # the first probe point after the NaN step (step 0)
    assert results[1].history == [] and "non-finite loss" in results[1].error
    for k in (0, 2):
        for p, q in zip(dirty.model(k).parameters(), clean[0].model(k).parameters(), strict=True):
            assert torch.equal(p, q)  # not merely close: nothing crosses between models


def test_records_have_the_structure_train_writes(tiny, tmp_path):
    config = dataclasses.replace(SMALL, activation="prelu", epochs=1)
    train(config, dataset=tiny, run_dir=tmp_path / "one")
    train_group([config, dataclasses.replace(config, seed=1)], dataset=tiny,
                run_dirs=[tmp_path / "group", None])  # fmt: skip
    one, grouped = tmp_path / "one", tmp_path / "group"
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in grouped.iterdir())
    assert records.read_json(grouped / records.CONFIG) == records.read_json(one / records.CONFIG)
    a, b = records.read_json(grouped / records.RESULT), records.read_json(one / records.RESULT)
    assert set(a) == set(b) and a["run_dir"] == str(grouped)
    assert [set(h) for h in a["history"]] == [set(h) for h in b["history"]]
    rows, expected = records.read_metrics(grouped), records.read_metrics(one)
    assert [(r["kind"], set(r)) for r in rows] == [(r["kind"], set(r)) for r in expected]


def test_a_group_leaves_the_global_rng_as_it_was(tiny, tmp_path):
    """As `train` promises: building, training and checkpointing a group never draws from it."""
    config = dataclasses.replace(SMALL, activation="prelu", epochs=2)  # a checkpoint at epoch 1
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train_group([config, dataclasses.replace(config, seed=1)], dataset=tiny,
                run_dirs=[tmp_path / "a", tmp_path / "b"])  # fmt: skip
    assert torch.equal(torch.get_rng_state(), before)


def test_plan_groups_by_shape_and_size_rrelu_alone():
    configs = [
        dataclasses.replace(SMALL, activation=a, seed=s)
        for a in ("relu", "rrelu", "sigmoid")
        for s in (0, 1)
    ]
    configs.append(dataclasses.replace(SMALL, hidden=(8,)))
    assert plan_groups(configs, 3) == [[0, 1, 4], [2], [3], [5], [6]]
    assert plan_groups(configs, 1) == [[i] for i in range(7)]
    with pytest.raises(UsageError, match="must share hidden"):
        train_group([configs[0], configs[6]])
    with pytest.raises(UsageError, match="rrelu draws random numbers"):
        train_group(configs[2:4])


def test_plan_groups_keeps_norm_runs_alone_and_train_group_refuses_them():
    configs = [
        dataclasses.replace(SMALL, norm=n, seed=s)
        for n in ("none", "batch", "layer")
        for s in (0, 1)
    ]
    assert plan_groups(configs, 4) == [[0, 1], [2], [3], [4], [5]]
    for norm in ("batch", "layer"):
        pair = [dataclasses.replace(SMALL, norm=norm, seed=s) for s in (0, 1)]
        with pytest.raises(UsageError, match=f"{norm} norm has no grouped form: train it alone"):
            train_group(pair)
    with pytest.raises(ValueError, match="no norm layers"):
        GroupedMLP.from_models([build_model((8,), "relu", seed=0, norm="layer")])


def test_compare_grouped_and_one_at_a_time_agree(tiny, tmp_path):
    small = dataclasses.replace(SMALL, epochs=1)
    rows, epochs, steps = {}, {}, {}
    for grouped in (True, False):
        epochs[grouped], steps[grouped] = [], []

        def on_epoch(config, row, seen=epochs[grouped]):
            seen.append((config.activation, config.seed, row["epoch"]))

        results = compared(
            small, ["relu", "prelu"], [0, 1], tmp_path / str(grouped), tiny,
            on_epoch=on_epoch, on_steps=steps[grouped].append, group=4 if grouped else False,
        )  # fmt: skip
        runs_read, _ = loading.load_runs([r.run_dir for r in results])
        rows[grouped] = summary.summary_rows(runs_read)
        assert all(records.is_complete(r.run_dir) for r in results)
    assert sorted(epochs[True]) == sorted(epochs[False]) and len(epochs[True]) == 4
    assert sum(steps[True]) == sum(steps[False]) == 4 * 10 and len(steps[True]) == 10
    for a, b in zip(rows[True], rows[False], strict=True):
        assert a["activation"] == b["activation"]
        for key in set(b) - {"activation", "label", "setting", "seconds_per_epoch"}:
            if b[key] is None or isinstance(b[key], bool):  # a regression's keys: none here
                assert a[key] == b[key], key
            else:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


def test_cli_no_group_trains_one_at_a_time(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(executor.MAX_GROUP, "cpu", 4)  # as on a GPU: group by default
    calls = capture(monkeypatch, local, "train_group")
    # One worker: every unit trains in this process, where the spy records it.
    options = ["--data-dir", str(tiny_dir), "--no-verify", "--activations", "relu",
               "--seeds", "0,1", "--epochs", "1", "--hidden", "8", "--device", "cpu",
               "--workers", "1"]  # fmt: skip
    assert main(["compare", *options, "--out", str(tmp_path / "one"), "--no-group"]) == 0
    (finished,) = (tmp_path / "one").glob("relu-*-s1-*")
    assert calls == [] and records.is_complete(finished)
    assert main(["compare", *options, "--out", str(tmp_path / "grouped")]) == 0
    assert len(calls) == 1 and len(calls[0]) == 2
