"""MLP shapes and parameter count, init-scheme statistics, optimizers, seeds and bad input."""

import itertools
import math
import pickle
import re

import pytest
import torch
from torch import nn

from vanishing.errors import UsageError
from vanishing.model.activations import ACTIVATIONS, ActivationOptions
from vanishing.model.mlp import (
    INIT_ALIASES,
    INITS,
    MLP,
    OPTIMIZERS,
    SEED_HIDDEN,
    build_model,
    hidden_widths,
    init_names,
    initialize,
    make_optimizer,
)
from vanishing.settings import codec

TINY = (7, 5)


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.fixture(scope="module")
def wide() -> MLP:
    """784 -> 2000 -> 10: the first layer has 1.6 M weights, enough for tight statistics."""
    torch.manual_seed(0)
    return MLP((2000,), "relu")


def test_seed_mlp_parameter_count():
    model = MLP(SEED_HIDDEN, "relu")
    expected = 784 * 520 + 520 + 520 * 320 + 320 + 320 * 240 + 240 + 240 * 120 + 120 + 120 * 10 + 10
    assert sum(p.numel() for p in model.parameters()) == expected
    assert [linear.weight.shape for linear in model.linears] == [
        (520, 784),
        (320, 520),
        (240, 320),
        (120, 240),
        (10, 120),
    ]
    assert len(model.activations) == 4


def test_prelu_slopes_per_layer_or_per_unit():
    layer = MLP(TINY, "prelu")
    unit = MLP(TINY, "prelu", ActivationOptions(prelu_mode="unit"))
    assert [act.weight.shape for act in layer.activations] == [(1,), (1,)]
    assert [act.weight.shape for act in unit.activations] == [(7,), (5,)]


@pytest.mark.parametrize("init", ["default", "kaiming"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_forward_and_one_adam_step(activation, init):
    model = build_model(TINY, activation, init, seed=0)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 784, generator=generator)
    y = torch.randint(0, 10, (3,), generator=generator)
    assert model(x).shape == (3, 10)
    model.eval()  # RReLU is random in train mode
    torch.testing.assert_close(model(x.reshape(3, 28, 28)), model(x))
    model.train()
    before = [linear.weight.detach().clone() for linear in model.linears]
    optimizer = make_optimizer("adam", model.parameters(), lr=1e-2)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    for linear, old in zip(model.linears, before, strict=True):
        assert not torch.equal(linear.weight, old)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_model_pickles(activation):
    # Sweeps may send whole models to worker processes.
    model = build_model(TINY, activation, seed=0).eval()
    copy = pickle.loads(pickle.dumps(model))  # noqa: S301 our own bytes, made here
    x = torch.randn(2, 784)
    torch.testing.assert_close(copy(x), model(x))
    assert copy.activation == model.activation


def test_forward_hidden_matches_forward():
    model = build_model(TINY, "tanh", seed=0)
    x = torch.randn(4, 784)
    logits, pre_activations, post_activations, outputs = model.forward_hidden(x)
    torch.testing.assert_close(logits, model(x))
    assert [z.shape for z in pre_activations] == [(4, 7), (4, 5)]
    for z, a, h in zip(pre_activations, post_activations, outputs, strict=True):
        torch.testing.assert_close(h, torch.tanh(z))
        assert a is h  # no skip: the layer's output is the activation's
    torch.testing.assert_close(pre_activations[0], model.linears[0](x))


@pytest.mark.parametrize(
    ("init", "activation", "std"),
    [
        ("kaiming", "relu", math.sqrt(2 / 784)),
        ("he", "tanh", math.sqrt(2 / 784)),  # nonlinearity "relu" for everything else
        ("kaiming", "leaky_relu", math.sqrt(2 / (1 + 0.01**2) / 784)),
        ("kaiming", "prelu", math.sqrt(2 / (1 + 0.25**2) / 784)),
        ("lecun", "selu", math.sqrt(1 / 784)),
        ("xavier_normal", "tanh", math.sqrt(2 / (784 + 2000))),
        ("xavier_uniform", "tanh", math.sqrt(6 / (784 + 2000)) / math.sqrt(3)),
        ("default", "relu", 1 / math.sqrt(784) / math.sqrt(3)),
    ],
)
def test_init_weight_std(wide, init, activation, std):
    initialize(wide, init, activation)
    weight = wide.linears[0].weight
    assert weight.mean().abs() < 0.01 * std
    assert weight.std().item() == pytest.approx(std, rel=0.01)  # 1.6 M draws: ~0.1 % noise


def test_uniform_inits_stay_in_bounds(wide):
    initialize(wide, "xavier", "relu")
    assert wide.linears[0].weight.abs().max() <= math.sqrt(6 / (784 + 2000))
    initialize(wide, "default", "relu")
    bound = 1 / math.sqrt(784)
    assert wide.linears[0].weight.abs().max() <= bound
    assert wide.linears[0].bias.abs().max() <= bound
    assert wide.linears[0].bias.abs().max() > 0.5 * bound  # default draws biases, not zeros


def test_orthogonal_square_layer():
    model = MLP((64, 64), "relu", in_features=64)
    initialize(model, "orthogonal", "relu")
    weight = model.linears[1].weight  # (64, 64)
    torch.testing.assert_close(weight @ weight.T, torch.eye(64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("init", [name for name in init_names() if name != "default"])
def test_non_default_inits_zero_the_biases(init):
    model = MLP(TINY, "relu")
    initialize(model, init, "relu")
    for linear in model.linears:
        assert torch.count_nonzero(linear.bias) == 0
        assert linear.weight.std() > 0


def test_init_names_are_the_entries_and_their_aliases():
    names = init_names()
    assert sorted(names) == sorted([*INITS, *INIT_ALIASES]), "an alias may not shadow an entry"
    assert set(INIT_ALIASES.values()) <= set(INITS), "each alias names a real init"


@pytest.mark.parametrize("init", init_names())
def test_every_init_name_initialises_a_model(init):
    model = build_model(TINY, "tanh", init, seed=0)
    for linear in model.linears:
        assert torch.isfinite(linear.weight).all() and linear.weight.std() > 0
    assert model(torch.randn(2, 784)).shape == (2, 10)
    if init in INIT_ALIASES:  # the same draws as the entry it stands for
        entry = build_model(TINY, "tanh", INIT_ALIASES[init], seed=0)
        for a, b in zip(_weights(model), _weights(entry), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("command", "option", "names"),
    [
        ("train", "--activation", list(ACTIVATIONS)),
        ("compare", "--activations", list(ACTIVATIONS)),
        ("sweep", "--activations", list(ACTIVATIONS)),
        ("train", "--init", init_names()),
        ("train", "--optimizer", list(OPTIMIZERS)),
        ("sweep", "--optimizers", list(OPTIMIZERS)),
    ],
)
def test_cli_help_lists_every_registry_entry(capsys, monkeypatch, command, option, names):
    from vanishing.frontends.cli import main

    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside a help text
    with pytest.raises(SystemExit) as stopped:
        main([command, "--help"])
    assert stopped.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.lstrip().startswith(option + " ")]
    entry = [lines[start]]  # the option, then its help's lines (indented past option names)
    entry += itertools.takewhile(lambda line: line.startswith("   "), lines[start + 1 :])
    assert set(names) <= set(re.findall(r"\w+", " ".join(entry))), entry


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = _weights(build_model(TINY, "prelu", "kaiming", seed=7))
    second = _weights(build_model(TINY, "prelu", "kaiming", seed=7))
    other = _weights(build_model(TINY, "prelu", "kaiming", seed=8))
    torch.testing.assert_close(torch.rand(3), expected_draw)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], other[0])


def _reference_step(name: str, w0: list[float], steps: int) -> torch.Tensor:
    """Weights after `steps` updates on loss sum(w^2), by the textbook update rules."""
    w, lr, momentum = torch.tensor(w0, dtype=torch.float64), 0.1, 0.5
    velocity = m = v = torch.zeros_like(w)
    for t in range(1, steps + 1):
        grad = 2 * w
        if name == "sgd":
            velocity = momentum * velocity + grad
            w = w - lr * velocity
        elif name == "rmsprop":  # no momentum: the registry's RMSprop takes none
            v = 0.99 * v + 0.01 * grad**2
            w = w - lr * grad / (v.sqrt() + 1e-8)
        else:
            if name == "adamw":  # weight decay 0.01, decoupled from the gradient's moments
                w = w * (1 - lr * 0.01)
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad**2
            w = w - lr * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
    return w


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_steps_match_the_update_rule(name):
    weight = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    optimizer = make_optimizer(name, [weight], lr=0.1, momentum=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        (weight**2).sum().backward()
        optimizer.step()
    torch.testing.assert_close(weight.detach(), _reference_step(name, [1.0, -2.0], 3))


def test_adam_uses_the_seed_settings():
    optimizer = make_optimizer("adam", [nn.Parameter(torch.zeros(1))], lr=1e-3)
    group = optimizer.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"]) == ((0.9, 0.999), 1e-8, 0)
    assert group["fused"] is True  # one kernel for every parameter: no per-tensor loop


@pytest.mark.parametrize(
    ("text", "expected"),
    [("520,320,240,120", SEED_HIDDEN), ("64", (64,)), (" 8, 4 ", (8, 4))],
)
def test_hidden_widths_from_text(text, expected):
    assert codec.config({"hidden": text}).hidden == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("520,x,120", "hidden: expected int, got 'x'"),
        ("520,,120", "hidden: expected int, got ''"),
        ("8,0", "every hidden width must be an integer >= 1, got 0"),
    ],
)
def test_hidden_widths_name_the_bad_item(text, message):
    with pytest.raises(UsageError, match=message):
        codec.config({"hidden": text})


def test_hidden_widths():
    assert hidden_widths() == SEED_HIDDEN
    assert hidden_widths([3, 2]) == (3, 2)
    assert hidden_widths(depth=3) == (256, 256, 256)
    assert hidden_widths(depth=2, width=9) == (9, 9)
    assert hidden_widths(width=9) == (9, 9, 9, 9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden": [4], "depth": 2}, "not both"),
        ({"hidden": []}, "must not be empty"),
        ({"hidden": [4, 0]}, "integer >= 1, got 0"),
        ({"depth": 0}, "depth must be 1 to 10000 hidden layers, got 0"),
        ({"depth": 10**20}, "depth must be 1 to 10000 hidden layers, got 1000"),
        ({"depth": 2, "width": 0}, "width must be >= 1"),
    ],
)
def test_hidden_widths_rejects(kwargs, message):
    with pytest.raises(UsageError, match=message):
        hidden_widths(**kwargs)


def test_bad_names_and_values_raise():
    model = MLP(TINY, "relu")
    with pytest.raises(UsageError, match="unknown init 'glorot'; choose from: default, .*, he"):
        initialize(model, "glorot", "relu")
    with pytest.raises(UsageError, match="unknown activation 'swish'"):
        build_model(TINY, "swish")
    with pytest.raises(
        UsageError, match="unknown optimizer 'lbfgs'; choose from: adam, sgd, rmsprop"
    ):
        make_optimizer("lbfgs", model.parameters(), lr=0.1)
    with pytest.raises(UsageError, match="learning rate must be a finite number > 0, got 0"):
        make_optimizer("sgd", model.parameters(), lr=0)
    with pytest.raises(UsageError, match="momentum must be >= 0 and < 1, got 1.0"):
        make_optimizer("sgd", model.parameters(), lr=0.1, momentum=1.0)
