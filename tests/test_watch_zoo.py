"""`vanishing.watch` on real-world-shaped models (`zoo`: PyTorch's MNIST example, a ResNet,
nanoGPT, BERT, an LSTM language model, and a sigmoid conv stack built to fail): each one's
headline, the numbers behind it checked against autograd, and training under watch bitwise
identical to unwatched, with the loop's own clipping, torch.save and copies of the model."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import zoo
from vanishing import records
from vanishing import reporting as report
from vanishing.measure.watch import watch, watched_by
from vanishing.reporting import loading
from vanishing.reporting.verdict import judge
from vanishing.settings.naming import title

STEPS, EVERY = 11, 10  # probes at steps 0 and 10


def watched_run(name: str, out: Path, steps: int = STEPS) -> tuple[report.Verdict, dict]:
    """Train zoo case `name` under watch; its verdict and config.json."""
    zoo.train(zoo.CASES[name], steps, lambda m, o: watch(m, o, every=EVERY, out=out))
    runs, notes = loading.load_runs([out])
    assert not notes
    (point,) = report.make_points(runs)
    return judge(point), records.read_json(out / records.CONFIG)


def rows(run_dir: Path) -> list[dict]:
    return [row for row in records.read_metrics(run_dir) if row["kind"] == "probe"]


def first_batch(case: zoo.Case) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The model and the first batch `zoo.train` gives it, made again (seed 0)."""
    torch.manual_seed(0)
    model = case.make()
    x, y = case.data()
    batch = torch.randint(0, len(x), (32,), generator=torch.Generator().manual_seed(1))
    return model, x[batch], y[batch]


@pytest.mark.parametrize(
    ("name", "kinds", "headline"),
    [
        (
            "mnist",  # 4.5-fold per sample; dividing by the positions read 100-fold
            ("healthy",),
            "Healthy gradient: the back-propagated signal shrinks only 4.5-fold from fc1 to conv1",
        ),
        ("resnet", ("healthy",), "Healthy gradient: the back-propagated signal grows only"),
        (
            "gpt",  # gelu_new is one GELU, not two tanh layers
            ("healthy",),
            "Healthy gradient: the back-propagated signal keeps its size from "
            "transformer.h.1.mlp.c_fc to transformer.h.0.mlp.c_fc",
        ),
        (
            "bert",  # the pooler, one position per sample, is left out
            ("healthy",),
            "Healthy gradient: the back-propagated signal keeps its size from "
            "bert.encoder.layer.1.intermediate.dense to bert.encoder.layer.0.intermediate.dense",
        ),
        (
            "lstm",  # no activation module: read by its weight gradients, never "linear"
            ("attenuated",),
            "Attenuated gradient: layer encoder receives 0.0876 of the weight gradient decoder "
            "receives",
        ),
        (
            "sigmoid-stack",  # built to fail
            ("vanishing",),
            "Vanishing gradient: the back-propagated signal shrinks 1.1e+06-fold from convs.7 to "
            "convs.0",
        ),
    ],
)
def test_each_zoo_model_gets_its_headline(tmp_path, name, kinds, headline):
    found, config = watched_run(name, tmp_path / name)
    assert found.kinds[: len(kinds)] == kinds
    assert found.headline.startswith(headline)
    text = " ".join([found.headline, *found.sentences, found.cure])
    assert "linear classifier" not in text and "Linear" not in text
    if config.get("residual"):  # transformer and ResNet blocks: never offered what they have
        assert "residual connections" not in found.cure
    if name == "bert":
        assert found.sentences[1].startswith(
            "bert.pooler.dense sees one position per sample (a pooler's or a head's)"
        )
    if name == "sigmoid-stack":
        assert "residual connections (x + f(x))" in found.cure
    if name == "lstm":  # no rectifier, batch norm or shortcut to put inside an LSTM
        assert found.cure == ""


def test_mnist_signal_factor_is_autograds_per_sample_ratio(tmp_path):
    """PyTorch's MNIST example at step 0: conv1's signal over fc1's, as autograd gives them on
    the same batch (the dropout masks drawn alike), is the factor the headline reads."""
    case = zoo.CASES["mnist"]
    model, x, y = first_batch(case)
    h1 = F.relu(model.conv1(x))
    h2 = F.relu(model.conv2(h1))
    flat = torch.flatten(model.dropout1(F.max_pool2d(h2, 2)), 1)
    h3 = F.relu(model.fc1(flat))
    for h in (h1, h2, h3):
        h.retain_grad()
    F.cross_entropy(F.log_softmax(model.fc2(model.dropout2(h3)), dim=1), y).backward()
    expected = (h1.grad.norm() / h3.grad.norm()).item()
    found, _ = watched_run("mnist", tmp_path / "run", steps=1)
    signal = rows(tmp_path / "run")[0]["signal_norms"]
    assert signal[0] / signal[2] == pytest.approx(expected, rel=1e-4)
    assert f"(×{expected:.3f}," in found.headline
    assert 1 / expected < 10  # not the 100-fold read per position


def test_residual_connections_are_seen_where_the_model_has_them(tmp_path):
    """A forward that adds a layer's input to a later output (ResNet's and transformer blocks)
    is residual; the MNIST example, the LSTM and the sigmoid stack are not."""
    for name in zoo.CASES:
        zoo.train(zoo.CASES[name], 1, lambda m, o, n=name: watch(m, o, out=tmp_path / n))
    residual = {
        name: records.read_json(tmp_path / name / records.CONFIG)["residual"] for name in zoo.CASES
    }
    assert residual == {
        "mnist": False,
        "resnet": True,
        "gpt": True,
        "bert": True,
        "lstm": False,
        "sigmoid-stack": False,
    }


def test_gelu_new_is_one_gelu_layer_and_a_bare_tanh_is_still_one(tmp_path):
    """GPT-2's gelu_new (0.5 x (1 + tanh(...))) is one GELU: its inner torch.tanh is not a
    layer. A torch.tanh a forward calls outside an activation module still is one."""
    _, config = watched_run("gpt", tmp_path / "gpt", steps=1)
    assert config["activation"] == "gelu"
    assert config["activation_kinds"] == ["gelu", "gelu"]
    assert config["activation_layers"] == ["transformer.h.0.mlp.gelu", "transformer.h.1.mlp.gelu"]

    class Bare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.out = nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.out(torch.tanh(self.fc(x)))

    model = Bare()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, optimizer, out=tmp_path / "bare"):
        optimizer.zero_grad()
        F.cross_entropy(model(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0])).backward()
        optimizer.step()
    assert records.read_json(tmp_path / "bare" / records.CONFIG)["activation_kinds"] == ["tanh"]


@pytest.mark.parametrize("tied", [True, False])
def test_a_tied_lm_head_is_the_output_layer(tmp_path, tied):
    """nanoGPT's lm_head shares wte's weight: lm_head, the module that computes the logits, is
    the output layer (its gradient autograd's), not ln_f; untied, both are layers."""
    case = zoo.CASES["gpt"]
    model, x, y = first_batch(case)
    if not tied:
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    case = zoo.Case("gpt", lambda: model, lambda: (x, y), case.loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with watch(model, optimizer, every=1, out=tmp_path):
        optimizer.zero_grad()
        case.loss(model, x, y).backward()
        expected = model.lm_head.weight.grad.norm().item()
        optimizer.step()
    config = records.read_json(tmp_path / records.CONFIG)
    assert config["layers"][-2:] == ["transformer.ln_f", "lm_head"]
    assert ("transformer.wte" in config["layers"]) is not tied
    assert config["tied"] == ({"lm_head": ["transformer.wte"]} if tied else {})
    assert rows(tmp_path)[0]["grad_norms"][-1] == pytest.approx(expected, rel=1e-5)
    runs, _ = loading.load_runs([tmp_path])
    (point,) = report.make_points(runs)
    found = judge(point)
    assert "would read as exploding" not in " ".join(found.sentences)
    setup = report.results.model_setup(config)
    assert ("lm_head's weight tied to transformer.wte" in setup) is tied


def test_a_stacked_lstm_has_a_layer_per_layer(tmp_path):
    """word_language_model's 2-layer LSTM: rnn.l0 and rnn.l1, each its weight_ih and weight_hh
    gradients' norm as autograd gives them; its output passes tanh, so never "linear"."""
    case = zoo.CASES["lstm"]
    model, x, y = first_batch(case)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with watch(model, optimizer, every=1, out=tmp_path):
        optimizer.zero_grad()
        case.loss(model, x, y).backward()
        expected = [
            torch.stack(
                [model.rnn.get_parameter(f"weight_{k}_l{i}").grad.norm() for k in ("ih", "hh")]
            )
            .norm()
            .item()
            for i in (0, 1)
        ]
        ratio = (model.encoder.weight.grad.norm() / model.decoder.weight.grad.norm()).item()
        optimizer.step()
    config = records.read_json(tmp_path / records.CONFIG)
    assert config["layers"] == ["encoder", "rnn.l0", "rnn.l1", "decoder"]
    assert config["activation"] == "tanh"
    row = rows(tmp_path)[0]
    assert row["grad_norms"][1:3] == pytest.approx(expected, rel=1e-5)
    assert row["vanishing_ratio"] == pytest.approx(ratio, rel=1e-5)
    assert title(config) == "RNNModel (Tanh)"


def exploding_mlp() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
    model.append(nn.Linear(64, 10))
    with torch.no_grad():
        for layer in model[::2]:
            layer.weight.mul_(30)  # gradients in the hundreds
    return model


@pytest.mark.parametrize("scaled", [False, True])
def test_the_loops_clipping_does_not_hide_an_exploding_gradient(tmp_path, scaled):
    """clip_grad_norm_ between backward and step: the recorded norms are those backward left
    (autograd's, unclipped), with a GradScaler passed as scaler= its scale divided out."""
    x, y = torch.randn(32, 20), torch.randint(0, 10, (32,))
    reference = exploding_mlp()
    F.cross_entropy(reference(x), y).backward()
    expected = [reference[i].weight.grad.norm().item() for i in (0, 2, 4)]
    assert max(expected) > 100
    model = exploding_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8) if scaled else None
    with watch(model, optimizer, every=1, out=tmp_path, scaler=scaler):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        if scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
        clipped = torch.stack([p.grad.norm() for p in model.parameters()]).norm().item()
    assert clipped == pytest.approx(1.0, rel=1e-4)  # the loop did clip
    assert rows(tmp_path)[0]["grad_norms"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", list(zoo.CASES))
def test_training_under_watch_is_bitwise_unchanged(tmp_path, name):
    """The zoo's losses and weights, watched every other step, with the loop's own clipping,
    torch.save(model) and copy.deepcopy(model) after each step: exactly the unwatched ones."""

    def save_and_copy(model: nn.Module) -> None:
        torch.save(model, io.BytesIO())
        copy.deepcopy(model)

    case = zoo.CASES[name]
    plain, plain_losses = zoo.train(case, 6, clip=0.5, after_step=save_and_copy)
    watched, watched_losses = zoo.train(
        case,
        6,
        lambda m, o: watch(m, o, every=2, out=tmp_path),
        clip=0.5,
        after_step=save_and_copy,
    )
    assert watched_losses == plain_losses
    for a, b in zip(plain.state_dict().values(), watched.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert len(rows(tmp_path)) == 3


def test_a_saved_or_copied_watched_model_is_not_watched(tmp_path):
    """torch.save inside a watch (word_language_model saves at each epoch end, with no
    optimizer) gives a model without the watch's hooks; a deepcopy trains without writing into
    the original's run, and can be watched itself."""
    case = zoo.CASES["lstm"]
    model, x, y = first_batch(case)
    buffer = io.BytesIO()
    with watch(model, every=1, out=tmp_path / "run") as w:
        case.loss(model, x, y).backward()  # a step: the backward, no optimizer
        torch.save(model, buffer)
        twin = copy.deepcopy(model)
        assert watched_by(model) is w and watched_by(twin) is None
        twin.zero_grad()
        case.loss(twin, x, y).backward()  # not a step of this watch
        assert w.step == 1
        with watch(twin, every=1, out=tmp_path / "twin"):
            case.loss(twin, x, y).backward()
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert not loaded._forward_hooks and not loaded._forward_pre_hooks
    assert "__getstate__" not in loaded.__dict__ and "_vanishing_watch" not in loaded.__dict__
    loaded.eval(), model.eval()
    assert torch.equal(loaded(x.t()[:-1]), model(x.t()[:-1]))
    assert len(rows(tmp_path / "run")) == 1 and len(rows(tmp_path / "twin")) == 1
    assert "__getstate__" not in model.__dict__  # the watch is over: nothing left on the model
