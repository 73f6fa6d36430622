"""Gradients through time (`vanishing.measure.time`) and the trainer's recurrent probe: the
unrolled module against PyTorch's own, dLoss/dh_t against backprop through time written out by
hand and against PyTorch's cells' Jacobians, gates by their definitions, and the phenomenon."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from vanishing.measure import probes
from vanishing.measure import time as through_time
from vanishing.model.activations import SATURATION_FRACTION, get_activation, make_activation
from vanishing.model.recurrent import LoopRNN, build_recurrent

MODULES = {"rnn_tanh": nn.RNN, "rnn_relu": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def make(kind: str, layers: int = 1, batch_first: bool = False, bias: bool = True, **kw):
    extra = {"nonlinearity": "relu"} if kind == "rnn_relu" else {}
    return MODULES[kind](5, 7, num_layers=layers, batch_first=batch_first, bias=bias, **extra, **kw)


def initial(kind: str, layers: int, batch: int | None, generator: torch.Generator):
    shape = (layers, 7) if batch is None else (layers, batch, 7)
    h = torch.randn(*shape, generator=generator)
    return (h, torch.randn(*shape, generator=generator)) if kind == "lstm" else h


def assert_same_call(expected, got) -> None:
    output, state = expected
    torch.testing.assert_close(got.output, output, rtol=1e-5, atol=1e-5)
    if isinstance(state, tuple):
        for want, have in zip(state, got.state, strict=True):
            torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5)
    else:
        torch.testing.assert_close(got.state, state, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(MODULES))
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("given", [False, True])
def test_unroll_computes_what_the_module_computes(kind, layers, batch_first, bias, given):
    """(output, h_n) and an LSTM's (h_n, c_n) as module(input, hx), to 1e-5 in float32; one
    list of T hidden states per stacked layer, the top one the output."""
    torch.manual_seed(0)
    module = make(kind, layers, batch_first, bias)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 5, generator=generator)  # (batch, T, features) or (T, batch, ...)
    batch = 4 if batch_first else 6
    hx = initial(kind, layers, batch, generator) if given else None
    unrolled = through_time.unroll(module, x, hx)
    assert unrolled is not None
    assert_same_call(module(x, hx), unrolled)
    assert [len(steps.hidden) for steps in unrolled.layers] == [
        x.shape[1 if batch_first else 0]
    ] * layers
    top = torch.stack(unrolled.layers[-1].hidden, dim=1 if batch_first else 0)
    assert torch.equal(top, unrolled.output)


@pytest.mark.parametrize("kind", list(MODULES))
def test_unroll_takes_an_unbatched_sequence_and_hx_by_name(kind):
    torch.manual_seed(0)
    module = make(kind, layers=2)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(6, 5, generator=generator)  # (T, features): no batch
    hx = initial(kind, 2, None, generator)
    unrolled = through_time.unroll(module, x, hx)
    assert unrolled is not None
    assert_same_call(module(x, hx=hx), unrolled)
    with through_time.unrolling([module]) as found:
        output, _ = module(x, hx=hx)
    assert output is found[module].output  # the hook's replacement, hx read by name


@pytest.mark.parametrize("activation", ["tanh", "elu", "sigmoid", "prelu", "leaky_relu"])
@pytest.mark.parametrize("given", [False, True])
def test_unroll_computes_what_a_loop_rnn_computes(activation, given):
    torch.manual_seed(0)
    module = LoopRNN(5, 7, make_activation(activation, 7))
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 5, generator=generator)
    hx = torch.randn(1, 4, 7, generator=generator) if given else None
    unrolled = through_time.unroll(module, x, hx)
    assert unrolled is not None
    assert_same_call(module(x, hx), unrolled)
    assert unrolled.layers[0].activation is module.activation


def test_what_unroll_cannot_measure_is_none():
    """A bidirectional module, an LSTM with a projection, a packed sequence, another module:
    None, never an error."""
    x = torch.randn(3, 4, 5)
    assert through_time.unroll(nn.LSTM(5, 7, bidirectional=True), x) is None
    assert through_time.unroll(nn.LSTM(5, 7, proj_size=3), x) is None
    assert through_time.unroll(nn.Linear(5, 7), x) is None
    packed = pack_padded_sequence(x, torch.tensor([3, 2, 2, 1]))
    gru = nn.GRU(5, 7)
    assert through_time.unroll(gru, packed) is None
    with through_time.unrolling([gru]) as found:
        output, _ = gru(packed)  # runs as it would: its own packed output
    assert found == {} and isinstance(output, type(packed))


def hand_bptt(w, u, xs, a, c):
    """h_t = tanh(W h_{t-1} + U x_t) from h_0 = 0 and L = sum_t a_t . h_t + c . h_T, by hand:
    the forward, then delta_t = dL/dh_t = a_t (+ c at T) + W^T diag(1 - h_{t+1}^2) delta_{t+1}."""
    hs, h = [], torch.zeros(w.shape[0], dtype=w.dtype)
    for x in xs:
        h = torch.tanh(w @ h + u @ x)
        hs.append(h)
    deltas = [None] * len(xs)
    later = torch.zeros_like(h)
    for t in reversed(range(len(xs))):
        direct = a[t] + (c if t == len(xs) - 1 else 0)
        deltas[t] = direct + later
        later = w.T @ ((1 - hs[t] ** 2) * deltas[t])
    return hs, deltas


def test_step_norms_equal_backprop_through_time_by_hand():
    """A 3-unit tanh recurrence over 5 steps in float64: dLoss/dh_t from the unrolled module,
    and `time_probe`'s norms, are the hand-written backprop's (the Jacobians diag(1 - h^2) W),
    the loss reading every step's output and h_n."""
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    u = torch.randn(3, 2, generator=generator, dtype=torch.float64)
    xs = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    a = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    c = torch.randn(3, generator=generator, dtype=torch.float64)
    module = nn.RNN(2, 3, bias=False).double()
    with torch.no_grad():
        module.weight_hh_l0.copy_(w)
        module.weight_ih_l0.copy_(u)
    unrolled = through_time.unroll(module, xs[:, None])  # (T, batch 1, 2)
    assert unrolled is not None
    loss = (unrolled.output[:, 0] * a).sum() + (unrolled.state[0, 0] * c).sum()
    steps = unrolled.layers[0]
    grads = torch.autograd.grad(loss, steps.hidden)
    hs, deltas = hand_bptt(w, u, xs, a, c)
    for h, mine, want, hand_h in zip(steps.hidden, grads, deltas, hs, strict=True):
        torch.testing.assert_close(h[0], hand_h, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(mine[0], want, rtol=1e-12, atol=1e-12)
    row = through_time.time_probe(["rnn"], [steps], [list(grads)])
    assert row["time_signal_norms"][0] == pytest.approx([float(d.norm()) for d in deltas], rel=1e-6)
    assert row["time_layers"] == ["rnn"] and row["gates"] == [{}]
    assert row["recurrent_norms"][0] == pytest.approx(float(torch.linalg.svdvals(w)[0]), 1e-6)


def test_through_time_passes_the_modules_own_gradients_back():
    """From the gradients a loss gives nn.LSTM's own (fused) output and (h_n, c_n),
    `through_time` gives each step's dLoss/dh_t: those of the same loss on the unrolled copy."""
    torch.manual_seed(0)
    module = nn.LSTM(5, 7, num_layers=2)
    x = torch.randn(6, 4, 5)
    target = torch.randn(6, 4, 7)

    def loss_of(output, state):
        return ((output - target) ** 2).sum() + state[0][1].sum() + 2 * state[1][0].sum()

    output, state = module(x)
    grads = torch.autograd.grad(loss_of(output, state), [output, *state])
    unrolled = through_time.unroll(module, x)
    assert unrolled is not None
    found = through_time.through_time(unrolled, list(grads))
    again = through_time.unroll(module, x)  # the first one's graph is spent
    assert again is not None
    hidden = [h for steps in again.layers for h in steps.hidden]
    expected = torch.autograd.grad(loss_of(again.output, again.state), hidden)
    flat = [g for layer in found for g in layer]
    for mine, want in zip(flat, expected, strict=True):
        torch.testing.assert_close(mine, want, rtol=1e-5, atol=1e-6)
    assert through_time.through_time(again, [None, None, None]) == []


def cell_of(module: nn.Module) -> nn.Module:
    """PyTorch's own cell (nn.LSTMCell, nn.GRUCell) with a one-layer module's weights."""
    cell = (nn.LSTMCell if isinstance(module, nn.LSTM) else nn.GRUCell)(5, 4).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(module, f"{name}_l0"))
    return cell


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_step_gradients_equal_the_cells_jacobians_chained(kind):
    """dLoss/dh_t of a gated cell, the loss on the last step only, against the chain of
    PyTorch's own cell's Jacobians (nn.LSTMCell: of the state (h, c), so the gradient also
    flows through the cell), in float64."""
    torch.manual_seed(0)
    module = (nn.LSTM if kind == "lstm" else nn.GRU)(5, 4).double()
    xs = torch.randn(6, 1, 5, dtype=torch.float64)
    weights = torch.randn(4, dtype=torch.float64)
    unrolled = through_time.unroll(module, xs)
    assert unrolled is not None
    loss = (unrolled.output[-1, 0] * weights).sum()
    mine = torch.autograd.grad(loss, unrolled.layers[0].hidden)
    cell = cell_of(module)
    states = [torch.zeros(1, 8 if kind == "lstm" else 4, dtype=torch.float64)]

    def step(x, state):
        if kind == "lstm":
            h, c = cell(x, (state[:, :4], state[:, 4:]))
            return torch.cat([h, c], dim=1)
        return cell(x, state)

    for x in xs:
        states.append(step(x, states[-1]))
    delta = torch.zeros_like(states[-1])
    delta[0, :4] = weights  # dLoss/d(h_T, c_T): the loss reads h_T only
    expected = [delta[0, :4].clone()]
    for t in range(len(xs) - 1, 0, -1):  # delta_{t-1} = J_t^T delta_t
        j = jacobian(lambda s, x=xs[t]: step(x, s), states[t])[0, :, 0, :]
        delta = (j.T @ delta[0])[None]
        expected.append(delta[0, :4].clone())
    expected.reverse()
    for have, want in zip(mine, expected, strict=True):
        torch.testing.assert_close(have[0], want, rtol=1e-10, atol=1e-12)


def test_gates_are_named_by_what_they_do():
    """An LSTM whose forget-gate bias is +20 and input-gate bias -20 keeps its cell: forget
    reads 1 and input 0, both saturated every time; a GRU whose update-gate bias is +20 keeps
    h_0 (its update z is the share kept), its reset gate at 1/2 when its inputs are zero."""
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4)
    with torch.no_grad():
        lstm.bias_ih_l0.zero_()
        lstm.bias_hh_l0.zero_()
        lstm.bias_ih_l0[:4] = -20.0  # i
        lstm.bias_ih_l0[4:8] = 20.0  # f
    x = torch.randn(5, 2, 3)
    c0 = torch.randn(1, 2, 4)
    unrolled = through_time.unroll(lstm, x, (torch.zeros(1, 2, 4), c0))
    assert unrolled is not None
    torch.testing.assert_close(unrolled.state[1], c0, rtol=1e-6, atol=1e-6)  # kept
    row = through_time.time_probe(["lstm"], unrolled.layers, [[None] * 5])
    assert row["gates"][0]["forget"] == pytest.approx(1.0, abs=1e-6)
    assert row["gates"][0]["input"] == pytest.approx(0.0, abs=1e-6)
    assert row["gates_saturated"][0]["forget"] == row["gates_saturated"][0]["input"] == 1.0
    assert row["time_signal_norms"] == [[0.0] * 5]  # no gradient reached them
    gru = nn.GRU(3, 4)
    with torch.no_grad():
        for p in gru.parameters():
            p.zero_()
        gru.bias_ih_l0[4:8] = 20.0  # z
    h0 = torch.randn(1, 2, 4)
    unrolled = through_time.unroll(gru, x, h0)
    assert unrolled is not None
    torch.testing.assert_close(unrolled.state, h0, rtol=1e-6, atol=1e-6)
    row = through_time.time_probe(["gru"], unrolled.layers, [[None] * 5])
    assert row["gates"] == [{"reset": 0.5, "update": pytest.approx(1.0, abs=1e-6)}]
    assert row["gates_saturated"] == [{"reset": 0.0, "update": 1.0}]


def test_recurrent_norm_is_the_largest_singular_value():
    module = nn.GRU(3, 4, num_layers=2)
    with torch.no_grad():
        module.weight_hh_l1.copy_(torch.cat([0.5 * torch.eye(4)] * 3))  # stacked (12, 4)
    unrolled = through_time.unroll(module, torch.randn(2, 1, 3))
    assert unrolled is not None
    row = through_time.time_probe(["gru.l0", "gru.l1"], unrolled.layers, [[None] * 2] * 2)
    expected = float(torch.linalg.svdvals(module.weight_hh_l0.detach())[0])
    assert row["recurrent_norms"] == pytest.approx([expected, 0.5 * math.sqrt(3)], rel=1e-6)


def sequences(n: int = 24, steps: int = 9, features: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, steps, features, generator=generator)
    return x, torch.randint(0, 4, (n,), generator=generator)


ARCHS = [("rnn", "tanh"), ("rnn", "relu"), ("rnn", "elu"), ("lstm", "tanh"), ("gru", "tanh")]


@pytest.mark.parametrize(("arch", "activation"), ARCHS)
def test_recurrent_probe_equals_autograd_of_the_model(arch, activation):
    """`probes.measure_recurrent`: the loss, the weight-gradient norms (each layer's W_ih and
    W_hh together, then the head), the signal at each layer's output sequence and its
    statistics are those of the model's own forward (PyTorch's fused modules); the time
    profile ends, at the last step of the last layer, with the head's gradient; no gradient is
    left on the model."""
    model = build_recurrent(arch, [8, 6], activation, 3, 4, seed=0)
    x, y = sequences()
    measured = probes.measure_recurrent(model, get_activation(activation), x, y, F.cross_entropy)
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # its mode put back
    model.eval()
    outputs: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_hook(lambda m, a, out: outputs.append(out[0]))
        for layer in model.layers
    ]
    loss = F.cross_entropy(model(x), y)
    for hook in hooks:
        hook.remove()
    groups = model.layer_weights()
    grads = torch.autograd.grad(loss, [w for g in groups for w in g] + outputs)
    expected, start = [], 0
    for group in groups:
        expected.append(
            float(torch.stack([g.norm() for g in grads[start : start + len(group)]]).norm())
        )
        start += len(group)
    assert measured["loss"] == pytest.approx(float(loss.detach()), rel=1e-6)
    assert measured["grad_norms"] == pytest.approx(expected, rel=1e-5)
    signals = [float(g.norm()) for g in grads[start:]]
    assert measured["signal_norms"] == pytest.approx(signals, rel=1e-5)
    assert measured["activation_mean"] == pytest.approx(
        [float(o.detach().mean()) for o in outputs], rel=1e-4, abs=1e-6
    )
    assert measured["time_layers"] == [f"{arch} 1", f"{arch} 2"]
    norms = measured["time_signal_norms"]
    assert [len(n) for n in norms] == [9, 9]
    # the last layer's last step: its output there is all the head reads
    assert norms[1][-1] == pytest.approx(signals[1], rel=1e-5)
    assert (
        measured["gates"]
        == [dict.fromkeys(through_time.GATE_NAMES[arch], pytest.approx(0.5, abs=0.2))] * 2
    )
    weights_hh = [layer.weight_hh_l0.detach() for layer in model.layers]
    assert measured["recurrent_norms"] == pytest.approx(
        [float(torch.linalg.svdvals(w)[0]) for w in weights_hh], rel=1e-5
    )
    assert ("prelu_slopes" in measured) is False


def test_a_tanh_rnn_saturates_and_a_relu_rnn_dies_as_their_outputs_say():
    """saturated_fraction of a tanh RNN: the share of its outputs h whose slope 1 - h^2 is under
    SATURATION_FRACTION; dead_fraction of a relu RNN: its units zero at every sample and step
    (unit 0 held below zero by its bias)."""
    x, y = sequences()
    model = build_recurrent("rnn", [8], "tanh", 3, 4, seed=1, init_gain=6.0)
    measured = probes.measure_recurrent(model, get_activation("tanh"), x, y, F.cross_entropy)
    with torch.no_grad():
        h = model.layers[0](x)[0]
    share = float((1 - h**2 < SATURATION_FRACTION).float().mean())
    assert 0.05 < measured["saturated_fraction"][0] == pytest.approx(share, abs=2 / h.numel())
    relu = build_recurrent("rnn", [8], "relu", 3, 4, seed=1)
    with torch.no_grad():
        relu.layers[0].bias_ih_l0[0] = -100.0
    measured = probes.measure_recurrent(relu, get_activation("relu"), x, y, F.cross_entropy)
    with torch.no_grad():
        h = relu.layers[0](x)[0]
    dead = float((h == 0).all(dim=0).all(dim=0).float().mean())
    assert measured["dead_fraction"] == [dead] and dead >= 1 / 8


def test_a_gated_cells_saturation_counts_its_gates_and_tanh_values():
    """Biases of +20 on every gate and the candidate: every sigmoid value of the LSTM is
    saturated, every tanh value too but tanh(c_1) = tanh(1) (c_t = t): 1 value in 5 x 9 is
    not; all weights 0: every gate 1/2, every tanh 0, none is (0)."""
    x, y = sequences()
    lstm = build_recurrent("lstm", [6], "tanh", 3, 4, seed=0)
    with torch.no_grad():
        lstm.layers[0].bias_ih_l0.fill_(20.0)
    measured = probes.measure_recurrent(lstm, get_activation("tanh"), x, y, F.cross_entropy)
    assert measured["saturated_fraction"] == [pytest.approx(1 - 1 / 45)]
    assert measured["gates_saturated"] == [{"input": 1.0, "forget": 1.0, "output": 1.0}]
    with torch.no_grad():
        for p in lstm.layers[0].parameters():
            p.zero_()
    measured = probes.measure_recurrent(lstm, get_activation("tanh"), x, y, F.cross_entropy)
    assert measured["saturated_fraction"] == [0.0]
    assert measured["gates"] == [{"input": 0.5, "forget": 0.5, "output": 0.5}]


def test_a_loop_rnn_records_its_prelu_slopes():
    model = build_recurrent("rnn", [5, 5], "prelu", 3, 4, seed=0)
    x, y = sequences()
    measured = probes.measure_recurrent(model, get_activation("prelu"), x, y, F.cross_entropy)
    assert measured["prelu_slopes"] == pytest.approx([0.25, 0.25])
    assert measured["time_layers"] == ["rnn 1", "rnn 2"]


def squared_error(output, target):
    return F.mse_loss(output.squeeze(-1), target)


def adding_batch(steps: int = 100, n: int = 64):
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, steps, 2, generator=generator), torch.rand(n, generator=generator)


def test_a_tanh_rnn_with_small_recurrent_weights_vanishes_through_time():
    """T = 100, W_hh at half its default size: the gradient reaching step 1 is under 1e-3 of
    what reaches step 100, and every step shrinks it by at most the theory's factor
    bound * ||W_hh|| (tanh's bound 1), the loss reading the last step only."""
    x, y = adding_batch()
    model = build_recurrent("rnn", [32], "tanh", 2, 1, seed=0, init_gain=0.5)
    measured = probes.measure_recurrent(model, get_activation("tanh"), x, y, squared_error)
    norms = measured["time_signal_norms"][0]
    assert len(norms) == 100
    assert norms[0] < 1e-3 * norms[-1]
    bound = get_activation("tanh").derivative_bound * measured["recurrent_norms"][0]
    assert bound < 1
    for earlier, later in zip(norms, norms[1:], strict=False):
        assert earlier <= bound * later * (1 + 1e-5) + 1e-30


def test_an_lstm_with_a_forget_bias_does_not_vanish_through_time():
    """The same T = 100: an LSTM whose forget gates start nearly open (bias 3: a mean forget
    gate of 0.95) keeps over 1e-2 of the last step's gradient at step 1; its forget bias 1
    (Jozefowicz et al.) keeps a million times more than PyTorch's default init (bias 0); the
    tanh RNN at its default init loses it all."""
    x, y = adding_batch()
    ratios = {}
    for name, forget_bias in [("default", None), ("one", 1.0), ("open", 3.0)]:
        model = build_recurrent("lstm", [32], "tanh", 2, 1, seed=0, forget_bias=forget_bias)
        measured = probes.measure_recurrent(model, get_activation("tanh"), x, y, squared_error)
        norms = measured["time_signal_norms"][0]
        ratios[name] = norms[0] / norms[-1]
        if name == "open":
            assert measured["gates"][0]["forget"] > 0.9
    tanh = build_recurrent("rnn", [32], "tanh", 2, 1, seed=0)
    norms = probes.measure_recurrent(tanh, get_activation("tanh"), x, y, squared_error)[
        "time_signal_norms"
    ][0]
    assert ratios["open"] > 1e-2
    assert ratios["one"] > 1e6 * ratios["default"]
    assert norms[0] / norms[-1] < 1e-10 < ratios["one"]


@pytest.mark.parametrize(("arch", "activation"), [("rnn", "relu"), ("lstm", "tanh")])
def test_a_recurrent_layers_histogram_is_numpys_over_every_step(arch, activation):
    """The histogram of a recurrent layer is of its whole output sequence (batch x T x hidden
    values), bin for bin numpy.histogram's, values on the edges included."""
    model = build_recurrent(arch, [8, 6], activation, 3, 4, seed=0)
    x, y = sequences()
    measured = probes.measure_recurrent(model, get_activation(activation), x, y, F.cross_entropy)
    with torch.no_grad():
        first = model.layers[0](x)[0]
        outputs = [first, model.layers[1](first)[0]]
    for layer, h in zip(measured["activation_histogram"], outputs, strict=True):
        counts, edges = np.histogram(h.numpy(), bins=probes.HISTOGRAM_BINS)
        assert layer["counts"] == counts.tolist() and sum(layer["counts"]) == h.numel()
        assert layer["edges"] == pytest.approx(edges.tolist(), rel=1e-6, abs=1e-7)
    # every value on an edge, and one ulp either side: the bins searchsorted would give
    edges = probes.histograms(torch.linspace(-3, 5, 1000)[None])[0, : probes.HISTOGRAM_BINS + 1]
    values = torch.cat([edges, edges.nextafter(edges + 1), edges.nextafter(edges - 1)])
    values = values.clamp(-3, 5)[None]
    found = probes.histograms(values)[0]
    inner = found[1 : probes.HISTOGRAM_BINS].contiguous()
    index = torch.searchsorted(inner, values[0].contiguous(), right=True)
    expected = torch.bincount(index, minlength=probes.HISTOGRAM_BINS).float()
    assert torch.equal(found[probes.HISTOGRAM_BINS + 1 :], expected)
