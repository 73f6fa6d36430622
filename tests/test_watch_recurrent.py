"""`watch()` on models with nn.RNN, nn.LSTM and nn.GRU: each stacked layer's time profile
(||dLoss/dh_t|| per step, gates, recurrent norms) against autograd of the unrolled module,
training left bit for bit as it was, packed sequences watched without a profile."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import zoo
from vanishing import records
from vanishing.measure import time as through_time
from vanishing.measure.definitions import TIME_DEFINITIONS
from vanishing.measure.watch import watch

TIME_KEYS = ("time_signal_norms", "time_layers", "gates", "gates_saturated", "recurrent_norms")


class Tagger(nn.Module):
    """A recurrent module and a Linear head on every step: (batch, T, 3) -> (batch, T, 4),
    or time first."""

    def __init__(self, make: type[nn.Module], layers: int, batch_first: bool, **kw) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.rnn = make(3, 8, num_layers=layers, batch_first=batch_first, **kw)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(x)
        return self.head(output)


def tag_loss(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output.reshape(-1, 4), y.reshape(-1))


def tagging(batch_first: bool, n: int = 16, steps: int = 7, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, steps, 3, generator=generator)
    y = torch.randint(0, 4, (n, steps), generator=generator)
    return (x, y) if batch_first else (x.transpose(0, 1), y.t())


def reference(model, name, x, y, loss_of, names):
    """The time profile by definition: the loss of the model's own forward with `name`'s module
    unrolled (every h_t in the graph) and autograd's dLoss/dh_t."""
    module = model.get_submodule(name)
    with torch.enable_grad(), through_time.unrolling([module]) as found:
        loss = loss_of(model(x), y)
    unrolled = found[module]
    hidden = [h for steps in unrolled.layers for h in steps.hidden]
    grads = list(torch.autograd.grad(loss, hidden))
    per_layer, start = [], 0
    for steps in unrolled.layers:
        per_layer.append(grads[start : start + len(steps.hidden)])
        start += len(steps.hidden)
    return through_time.time_probe(names, unrolled.layers, per_layer)


def assert_profile(row, expected):
    assert row["time_layers"] == expected["time_layers"]
    for got, want in zip(row["time_signal_norms"], expected["time_signal_norms"], strict=True):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-12)
    for key in ("gates", "gates_saturated"):
        for got, want in zip(row[key], expected[key], strict=True):
            assert got.keys() == want.keys()
            assert list(got.values()) == pytest.approx(list(want.values()), rel=1e-6, abs=1e-7)
    assert row["recurrent_norms"] == pytest.approx(expected["recurrent_norms"], rel=1e-6)


def train(model, x, y, steps, watched=None, loss_of=tag_loss):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    w = watched(model, optimizer) if watched is not None else None
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_of(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    if w is not None:
        w.close()
    return losses


CASES = {
    "lstm-2-batch-first": (nn.LSTM, 2, True, {}),
    "lstm-2-time-first": (nn.LSTM, 2, False, {}),
    "gru": (nn.GRU, 1, True, {}),
    "gru-3-no-bias": (nn.GRU, 3, False, {"bias": False}),
    "rnn-tanh": (nn.RNN, 1, False, {}),
    "rnn-relu-2": (nn.RNN, 2, True, {"nonlinearity": "relu"}),
}


# probe= takes samples first: a time-first model is measured on its training steps only
RUNS = [(case, False) for case in CASES] + [(case, True) for case in CASES if CASES[case][2]]


@pytest.mark.parametrize(("case", "probe"), RUNS)
def test_each_stacked_layer_gets_its_time_profile(tmp_path, case, probe):
    """A watched step (the step's own batch, or the probe batch in eval mode) records, per
    stacked layer ("rnn.l0", "rnn.l1"; a one-layer module its own name), the profile that
    autograd gives the unrolled module; the weights train exactly as they do unwatched."""
    make, layers, batch_first, kw = CASES[case]
    torch.manual_seed(0)
    model = Tagger(make, layers, batch_first, **kw)
    x, y = tagging(batch_first)
    probe_batch = tagging(batch_first, n=12, seed=5) if probe else None
    names = ["rnn"] if layers == 1 else [f"rnn.l{k}" for k in range(layers)]
    before = copy.deepcopy(model)
    expected = reference(
        copy.deepcopy(model).eval() if probe_batch else copy.deepcopy(model),
        "rnn",
        *(probe_batch or (x, y)),
        tag_loss,
        names,
    )
    unwatched = copy.deepcopy(model)
    plain = train(unwatched, x, y, 4)
    watched = train(
        model,
        x,
        y,
        4,
        lambda m, o: watch(m, o, every=3, probe=probe_batch, out=tmp_path, loss=tag_loss),
    )
    assert watched == plain
    for mine, theirs in zip(model.parameters(), unwatched.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    rows = [row for row in records.read_metrics(tmp_path) if row["kind"] == "probe"]
    assert [row["step"] for row in rows] == [0, 3]
    assert_profile(rows[0], expected)
    assert [len(norms) for norms in rows[1]["time_signal_norms"]] == [7] * layers
    gate_names = list(through_time.GATE_NAMES[{nn.LSTM: "lstm", nn.GRU: "gru"}.get(make, "rnn")])
    assert [list(g) for g in rows[1]["gates"]] == [gate_names] * layers
    # the weights' own gradients are the fused module's, as before
    config = records.read_json(tmp_path / "config.json")
    assert config["recurrent_layers"] == [f"rnn.l{k}" for k in range(layers)]
    result = records.read_json(tmp_path / "result.json")
    assert result["time_layers"] == names
    assert result["time_signal_norms_init"] == rows[0]["time_signal_norms"]
    assert result["time_signal_norms_final"] == rows[-1]["time_signal_norms"]
    assert result["gates_init"] == rows[0]["gates"]
    assert result["gates_final"] == rows[-1]["gates"]
    assert not any(
        torch.equal(a, b) for a, b in zip(model.parameters(), before.parameters(), strict=True)
    )


class Language(nn.Module):
    """word_language_model's shape without its dropout: embedding -> 2-layer LSTM (batch
    first, its state passed in by name) -> a Linear decoder on every step."""

    def __init__(self, tokens: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Embedding(tokens, 16)
        self.lstm = nn.LSTM(16, 12, num_layers=2, batch_first=True)
        self.decoder = nn.Linear(12, tokens)
        self.h0 = nn.Parameter(torch.zeros(2, 1, 12))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        state = (self.h0.expand(-1, len(ids), -1).contiguous(),) * 2
        output, _ = self.lstm(self.encoder(ids), hx=state)
        return self.decoder(output)


def next_token(output: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output[:, :-1].reshape(-1, output.shape[-1]), ids[:, 1:].reshape(-1))


def test_a_language_model_mixing_an_lstm_with_linear_layers(tmp_path):
    """Embedding, LSTM, decoder: the LSTM's two layers get the profile autograd gives, its
    state given by name; the embedding and decoder are measured as before."""
    torch.manual_seed(0)
    model = Language()
    ids, _ = zoo.tokens(16, 9)
    expected = reference(copy.deepcopy(model), "lstm", ids, ids, next_token, ["lstm.l0", "lstm.l1"])
    plain = train(copy.deepcopy(model), ids, ids, 3, loss_of=next_token)
    watched = train(
        model, ids, ids, 3, lambda m, o: watch(m, o, every=2, out=tmp_path), loss_of=next_token
    )
    assert watched == plain
    rows = [row for row in records.read_metrics(tmp_path) if row["kind"] == "probe"]
    assert_profile(rows[0], expected)
    norms = rows[0]["time_signal_norms"]
    assert [len(n) for n in norms] == [10, 10] and all(v > 0 for n in norms for v in n[:-1])
    assert norms[0][-1] == norms[1][-1] == 0  # the last step's output predicts nothing
    config = records.read_json(tmp_path / "config.json")
    assert config["layers"] == ["encoder", "lstm.l0", "lstm.l1", "decoder"]
    assert rows[0]["grad_norms"][0] > 0 and rows[0]["grad_norms"][-1] > 0


def test_word_language_model_trains_bit_for_bit_under_watch(tmp_path):
    """pytorch/examples' RNNModel, with dropout between its LSTM's layers and around it: the
    same losses watched and not (the unrolled copy draws no random number), and a time profile
    per layer over its 12 steps (the copy runs without the dropout between layers)."""
    case = zoo.CASES["lstm"]
    _, plain = zoo.train(case, 5)
    _, losses = zoo.train(case, 5, lambda m, o: watch(m, o, every=2, out=tmp_path))
    assert losses == plain
    rows = [row for row in records.read_metrics(tmp_path) if row["kind"] == "probe"]
    assert [row["time_layers"] for row in rows] == [["rnn.l0", "rnn.l1"]] * 3
    for row in rows:
        assert [len(n) for n in row["time_signal_norms"]] == [12, 12]
        assert all(math.isfinite(v) and v > 0 for n in row["time_signal_norms"] for v in n)


class Packed(nn.Module):
    """Padded sequences of different lengths through a packed GRU, and a second, unpacked LSTM
    over the padded output."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 6, batch_first=True)
        self.lstm = nn.LSTM(6, 5, batch_first=True)
        self.head = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = torch.tensor([len(x[0])] + [max(1, len(x[0]) - 2)] * (len(x) - 1))
        packed, _ = self.gru(pack_padded_sequence(x, lengths, batch_first=True))
        padded, _ = pad_packed_sequence(packed, batch_first=True)
        output, _ = self.lstm(padded)
        return self.head(output[:, -1])


def test_a_packed_sequence_is_watched_without_its_time_profile(tmp_path):
    """The packed GRU trains as unwatched and keeps its weight-gradient norms; only its time
    profile is left out; the LSTM after it has its own."""
    torch.manual_seed(0)
    model = Packed()
    x, _ = tagging(True)
    y = torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(3))
    plain = train(copy.deepcopy(model), x, y, 3, loss_of=F.cross_entropy)
    losses = train(
        model, x, y, 3, lambda m, o: watch(m, o, every=1, out=tmp_path), loss_of=F.cross_entropy
    )
    assert losses == plain
    rows = [row for row in records.read_metrics(tmp_path) if row["kind"] == "probe"]
    config = records.read_json(tmp_path / "config.json")
    assert config["layers"] == ["gru.l0", "lstm.l0", "head"]
    for row in rows:
        assert row["time_layers"] == ["lstm"]
        assert all(norm is not None and norm > 0 for norm in row["grad_norms"])


def test_a_model_with_only_a_packed_module_has_no_time_keys(tmp_path):
    class OnlyPacked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(3, 5, batch_first=True)
            self.head = nn.Linear(5, 4)

        def forward(self, x):
            lengths = torch.full((len(x),), x.shape[1])
            _, (h, _) = self.lstm(pack_padded_sequence(x, lengths, batch_first=True))
            return self.head(h[-1])

    x, _ = tagging(True)
    y = torch.randint(0, 4, (16,))
    train(OnlyPacked(), x, y, 2, lambda m, o: watch(m, o, every=1, out=tmp_path), F.cross_entropy)
    rows = [row for row in records.read_metrics(tmp_path) if row["kind"] == "probe"]
    assert len(rows) == 2 and not any(key in row for row in rows for key in TIME_KEYS)
    result = records.read_json(tmp_path / "result.json")
    assert result["time_layers"] == [] and result["time_signal_norms_init"] == []


def last_step(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output[:, -1, 0], y)


def test_watch_sees_a_tanh_rnn_vanish_and_an_lstm_with_open_forget_gates_not(tmp_path):
    """T = 100, the loss on the last step: a tanh RNN with recurrent weights of spectral norm
    1/2 passes step 1 under 1e-3 of what reaches step 100 (each step at most the norm: the
    theory's bound); an LSTM whose forget gates start open (bias 3) passes over 1e-2."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(32, 100, 3, generator=generator)
    y = torch.rand(32, generator=generator)
    torch.manual_seed(0)
    rnn = Tagger(nn.RNN, 1, True)
    with torch.no_grad():
        w = rnn.rnn.weight_hh_l0
        w.mul_(0.5 / torch.linalg.svdvals(w)[0])
    lstm = Tagger(nn.LSTM, 1, True)
    with torch.no_grad():
        lstm.rnn.bias_ih_l0[8:16] = 3.0
        lstm.rnn.bias_hh_l0[8:16] = 0.0
    found = {}
    for name, model in (("rnn", rnn), ("lstm", lstm)):
        out = tmp_path / name
        train(model, x, y, 1, lambda m, o, out=out: watch(m, o, out=out), loss_of=last_step)
        (row,) = [r for r in records.read_metrics(out) if r["kind"] == "probe"]
        found[name] = row
    norms = found["rnn"]["time_signal_norms"][0]
    assert found["rnn"]["recurrent_norms"] == [pytest.approx(0.5, rel=1e-5)]
    assert norms[0] < 1e-3 * norms[-1]
    assert all(a <= 0.5 * b * (1 + 1e-4) for a, b in zip(norms, norms[1:], strict=False))
    norms = found["lstm"]["time_signal_norms"][0]
    assert norms[0] > 1e-2 * norms[-1]
    assert found["lstm"]["gates"][0]["forget"] > 0.9


def test_the_time_profile_without_an_optimizer_and_under_a_grad_scaler(tmp_path):
    """Without an optimizer (a step is a backward, ended by autograd's callback) and with a
    GradScaler (its scale divided out), a step's profile is the plain step's."""
    torch.manual_seed(0)
    model = Tagger(nn.GRU, 2, True)
    x, y = tagging(True)
    runs = {}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with watch(model, optimizer, every=1, out=tmp_path / "plain"):
        optimizer.zero_grad()
        tag_loss(model(x), y).backward()
        optimizer.step()
    with watch(model, every=1, out=tmp_path / "alone"):
        tag_loss(model(x), y).backward()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    with watch(model, optimizer, every=1, out=tmp_path / "scaled", scaler=scaler):
        optimizer.zero_grad()
        scaler.scale(tag_loss(model(x), y)).backward()
        scaler.step(optimizer)
        scaler.update()
    for name in ("plain", "alone", "scaled"):
        (runs[name],) = [r for r in records.read_metrics(tmp_path / name) if r["kind"] == "probe"]
    for name in ("alone", "scaled"):
        assert_profile(runs[name], runs["plain"])


def test_layers_that_leave_the_recurrent_module_out_leave_out_its_profile(tmp_path):
    torch.manual_seed(0)
    model = Tagger(nn.LSTM, 2, True)
    x, y = tagging(True)
    train(model, x, y, 1, lambda m, o: watch(m, o, out=tmp_path, layers=["head"]))
    (row,) = [r for r in records.read_metrics(tmp_path) if r["kind"] == "probe"]
    assert "time_signal_norms" not in row
    train(model, x, y, 1, lambda m, o: watch(m, o, out=tmp_path / "l1", layers=["rnn", "head"]))
    (row,) = [r for r in records.read_metrics(tmp_path / "l1") if r["kind"] == "probe"]
    assert row["time_layers"] == ["rnn.l0", "rnn.l1"]


def test_every_time_key_is_defined_and_written():
    """TIME_DEFINITIONS names exactly the keys a recurrent probe row gains."""
    assert tuple(name for name, _ in TIME_DEFINITIONS) == TIME_KEYS
