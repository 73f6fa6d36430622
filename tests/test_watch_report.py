"""The report and the live list on a watched model's records (`vanishing.watch`): verdicts that
name the model's own layers, the right failure for a vanishing, an exploding, a dead-unit and a
healthy net, cures worded as changes to the model, labels that read as the model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from torch import nn
from torch.nn import functional as F

import vanishing
from test_report import make_sweep
from vanishing import records
from vanishing import reporting as report
from vanishing.frontends.cli import main
from vanishing.frontends.live.events import RunFollower
from vanishing.frontends.live.listing import Listing
from vanishing.frontends.live.reading import Status
from vanishing.reporting import loading, plots
from vanishing.reporting.verdict import judge, live_headline
from vanishing.settings.naming import NUMBERED

LABELS = ["conv1", "conv2", "conv3", "conv4"]
LAYERS = [*LABELS, "fc"]


def histogram(elements: int) -> dict[str, list[float]]:
    """A probe row's histogram of one layer: its counts sum to the batch's elements."""
    return {"edges": [0.0, 0.5, 1.0], "counts": [elements // 2, elements - elements // 2]}


def write_watch_run(
    run_dir: Path,
    activation: str = "sigmoid",
    signal: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2),
    elements: tuple[int, ...] = (1000, 1000, 1000, 1000),
    dead: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0),
    grad_norms: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 0.1),
    labels: list[str] = LABELS,
    layers: list[str] = LAYERS,
    description: str = "Net(\n  (conv1): Conv2d(1, 16, kernel_size=(3, 3))\n)",
) -> Path:
    """A watched run's records in the spec's format: config.json, two probe rows (steps 0 and
    100), one epoch row and result.json."""
    run_dir.mkdir(parents=True)
    config = {
        "source": "watch",
        "model": "Net",
        "description": description,
        "parameters": 12345,
        "layers": layers,
        "activation_layers": [f"act{i + 1}" for i in range(len(labels))],
        "activation_kinds": [activation] * len(labels),
        "layer_labels": labels,
        "activation": activation,
        "hidden": [16] * len(labels),
        "every": 100,
        "probe_size": None,
        "optimizer": "adam",
        "lr": 0.001,
        "seed": None,
        "device": "cpu",
        "dataset": "mnist",
    }
    records.write_json(run_dir / records.CONFIG, config)
    writer = records.MetricsWriter(run_dir / records.METRICS)
    rows = []
    for step in (0, 100):
        row = {
            "kind": "probe",
            "step": step,
            "epoch": 0,
            "loss": None,
            "grad_norms": list(grad_norms),
            "vanishing_ratio": grad_norms[0] / grad_norms[-1],
            "signal_norms": list(signal),
            "activation_mean": [0.5] * len(labels),
            "activation_std": [0.1] * len(labels),
            "activation_histogram": [histogram(n) for n in elements],
            "saturated_fraction": [0.0] * len(labels),
            "dead_fraction": list(dead),
            "weight_norms": [1.0] * len(layers),
            "update_ratio": [0.001] * len(layers),
        }
        writer.write(row)
        rows.append(row)
    epoch = {"epoch": 1, "train_loss": 0.5, "test_loss": 0.4, "test_accuracy": 0.9}
    writer.write({"kind": "epoch", "step": 100, **epoch})
    writer.close()
    records.write_json(
        run_dir / records.RESULT,
        {
            "status": "ok",
            "test_accuracy": 0.9,
            "test_loss": 0.4,
            "history": [epoch],
            "grad_norms_init": list(grad_norms),
            "vanishing_ratio_init": grad_norms[0] / grad_norms[-1],
            "signal_norms_init": list(signal),
            "grad_norms_final": list(grad_norms),
            "saturated_fraction": [0.0] * len(labels),
            "dead_fraction": list(dead),
            "steps": 100,
            "train_seconds": 1.0,
            "eval_seconds": 0.0,
            "probe_seconds": 0.01,
            "device": "cpu",
            "versions": {},
            "config": config,
        },
    )
    return run_dir


def verdict_of(run_dir: Path) -> report.Verdict:
    runs, notes = loading.load_runs([run_dir])
    assert not notes
    (point,) = report.make_points(runs)
    return judge(point)


def test_a_vanishing_watched_net_is_named_by_its_layers_and_cured_by_changes_to_it(tmp_path):
    found = verdict_of(write_watch_run(tmp_path / "run"))
    assert found.kinds[0] == "vanishing"
    assert found.headline == (
        "Vanishing gradient: the back-propagated signal shrinks 1,000-fold from conv4 to conv1 "
        "(0.10 per layer)."
    )
    text = " ".join(found.sentences)
    assert "4 activation layers alone multiply" in text
    assert "Test accuracy 90.00 % (one run)." in text
    assert found.cure.startswith("Cure: a rectifier instead of Sigmoid (nn.ReLU with He init)")
    assert "batch norm (nn.BatchNorm2d) before the activations" in found.cure
    assert "--" not in found.cure  # no command-line option: the user changes the model


def test_maps_and_fc_layers_compare_by_their_signal_per_sample(tmp_path):
    """PyTorch's MNIST example at step 0: conv1's map (32 x 26 x 26 per sample) passes back a
    signal of 0.0205, fc1 (128 units) 0.0959. Per sample, as a weight's gradient sums it over
    the positions: 4.7-fold, not the 120-fold that dividing by the positions read."""
    run_dir = write_watch_run(
        tmp_path / "run",
        activation="relu",
        signal=(0.0205, 0.035, 0.06, 0.0959),
        elements=(64 * 32 * 676, 64 * 64 * 576, 64 * 64 * 144, 64 * 128),
        grad_norms=(0.1, 0.1, 0.1, 0.1, 0.1),
    )
    found = verdict_of(run_dir)
    assert found.kinds == ("healthy",)
    assert found.headline.startswith(
        "Healthy gradient: the back-propagated signal shrinks only 4.7-fold from conv4 to conv1 "
        f"(×{0.0205 / 0.0959:.3f},"
    )


def test_dead_units_of_a_watched_net_are_read_at_its_last_probe(tmp_path):
    run_dir = write_watch_run(
        tmp_path / "run",
        activation="relu",
        signal=(1.0, 1.0, 1.0, 1.0),
        dead=(0.0, 0.0, 0.61, 0.0),
        grad_norms=(0.1, 0.1, 0.1, 0.1, 0.1),
    )
    found = verdict_of(run_dir)
    assert found.kinds[:2] == ("healthy", "dead")
    text = " ".join(found.sentences)
    assert "Dead units: conv3: 61 % dead units at the last probe (step 100)" in text
    assert found.cure == (
        "Cure: nn.LeakyReLU or nn.PReLU instead of nn.ReLU keep a slope for z < 0, so no unit "
        "dies for good."
    )


def test_one_activation_layer_reads_the_weight_gradients_by_name(tmp_path):
    run_dir = write_watch_run(
        tmp_path / "run",
        signal=(1.0,),
        elements=(100,),
        dead=(0.0,),
        grad_norms=(2e-5, 1.0),
        labels=["conv1"],
        layers=["conv1", "fc"],
    )
    found = verdict_of(run_dir)
    assert found.headline == (
        "Vanishing gradient: layer conv1 receives 2.0e-05 of the weight gradient fc receives at "
        "initialisation."
    )


def test_watched_runs_group_as_their_model_not_their_structure(tmp_path):
    sigmoid = write_watch_run(tmp_path / "sigmoid", description="Net(... Sigmoid() ...)")
    relu = write_watch_run(
        tmp_path / "relu",
        activation="relu",
        description="Net(... ReLU() ...)",
        signal=(1.0, 1.0, 1.0, 1.0),
    )
    run = loading.read_run(sigmoid)
    assert isinstance(run, report.RunRecords) and "norm" not in run.config  # not a TrainConfig
    runs, _ = loading.load_runs([sigmoid, relu])
    points = report.make_points(runs)
    assert [g.label for g in points] == ["Net (Sigmoid)", "Net (ReLU)"]
    assert len({g.condition for g in points}) == 1  # the descriptions differ by the activation
    assert all(g.condition_label == "" for g in points)
    keys = {key for key, _ in points[0].condition.pairs}
    assert not keys & {"description", "layers", "layer_labels", "activation_kinds", "parameters"}


def test_report_cli_on_a_watched_run(tmp_path, capsys):
    run_dir = write_watch_run(tmp_path / "run")
    assert main(["report", str(run_dir)]) == 0
    markdown = (run_dir / "report.md").read_text()
    assert "### Net (Sigmoid)" in markdown
    assert "shrinks 1,000-fold from conv4 to conv1" in markdown
    assert "--norm" not in markdown
    assert "MLP 784" not in markdown and "probes every" not in markdown  # not an MLP's setup
    assert markdown.startswith("# Vanishing gradients: Net (Sigmoid) on mnist\n")
    assert report.results.model_setup(records.read_json(run_dir / "config.json")) in markdown


def test_the_live_list_and_stream_show_a_watched_run(tmp_path):
    write_watch_run(tmp_path / "runs" / "sigmoid")
    write_watch_run(tmp_path / "runs" / "relu", activation="relu", signal=(1.0, 1.0, 1.0, 1.0))
    items = Listing([tmp_path / "runs"], lambda path: Status("running")).items()
    assert sorted(item["label"] for item in items) == ["Net (ReLU)", "Net (Sigmoid)"]
    assert {item["status"] for item in items} == {"ok"}
    follower = RunFollower("0/sigmoid", tmp_path / "runs" / "sigmoid", lambda path: Status("ok"))
    events = "".join(follower.poll())
    assert "event: verdict" in events and "from conv4 to conv1" in events
    assert follower.ended
    # the layer names come once, before the first row, for the page's axes and labels
    names = {"run": "0/sigmoid", "weighted": LAYERS, "hidden": LABELS}
    assert events.count("event: layers") == 1
    assert events.index(f"event: layers\ndata: {json.dumps(names)}\n") < events.index("event: row")


# Real watched networks: each built to show one failure, or none.
class MLP(nn.Module):
    """`depth` Linear layers of `width` with an activation after each, then a classifier."""

    def __init__(self, activation: type[nn.Module], depth: int, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Linear(20, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.acts = nn.ModuleList(activation() for _ in range(depth))
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, 20) -> (batch, 10)
        x = self.acts[0](self.stem(x))
        for block, act in zip(self.blocks, self.acts[1:], strict=True):
            x = act(block(x))
        return self.head(x)

    def he_init(self, gain: float = 1.0) -> MLP:
        for linear in [self.stem, *self.blocks]:
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
            linear.weight.data *= gain
            nn.init.zeros_(linear.bias)
        return self


def vanishing_net() -> MLP:
    return MLP(nn.Sigmoid, depth=10)  # PyTorch's default init: ~0.15 per layer


def exploding_net() -> MLP:
    return MLP(nn.ReLU, depth=8).he_init(gain=3.0)  # 3x He's scale: ~3 per layer


def dead_net() -> MLP:
    net = MLP(nn.ReLU, depth=6).he_init()
    nn.init.constant_(net.blocks[1].bias, -5.0)  # the third layer: off for every input
    return net


def healthy_net() -> MLP:
    return MLP(nn.ReLU, depth=4, width=128).he_init()


def watched_run(net: MLP, out: Path, lr: float = 1e-3) -> Path:
    """Train `net` 40 SGD steps on a fixed random task under `vanishing.watch`."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(512, 20, generator=generator)  # (512, 20)
    y = x[:, :10].argmax(1)  # a learnable labelling
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    with vanishing.watch(net, optimizer, every=10, out=out) as w:
        for _ in range(40):
            batch = torch.randint(0, 512, (64,), generator=generator)
            optimizer.zero_grad()
            F.cross_entropy(net(x[batch]), y[batch]).backward()
            optimizer.step()
        w.log(epoch=1, test_accuracy=0.5)
    return out


@pytest.mark.parametrize(
    ("make", "lr", "kinds", "headline"),
    [
        (
            vanishing_net,
            1e-3,
            ("vanishing",),
            "Vanishing gradient: the back-propagated signal shrinks 3.5e+07-fold from blocks.8 "
            "to stem",
        ),
        (
            exploding_net,
            1e-6,
            ("exploding", "forward-blow-up"),
            "Exploding gradient: the back-propagated signal grows 2,400-fold from blocks.6 to stem",
        ),
        (
            dead_net,
            1e-3,
            ("vanishing", "forward-collapse", "dead"),
            "Vanishing gradient: the back-propagated signal reaching stem is exactly 0 because "
            "every unit of blocks.1 is dead at step 0",
        ),
        (healthy_net, 1e-3, ("healthy",), "Healthy gradient: the back-propagated signal keeps"),
    ],
)
def test_each_watched_net_gets_the_verdict_of_its_failure(tmp_path, make, lr, kinds, headline):
    torch.manual_seed(0)
    found = verdict_of(watched_run(make(), tmp_path / "run", lr))
    assert found.kinds[: len(kinds)] == kinds
    assert found.headline.startswith(headline)
    assert "--" not in found.cure
    if make is exploding_net:
        assert "Huge gradients at initialisation: norms up to" in " ".join(found.sentences)
        assert "smaller initial weights" in found.cure
    if make is dead_net:
        assert "look at what feeds the dead layer" in found.cure
    if make is healthy_net:
        assert found.cure == "" and "dead" not in found.kinds


def test_the_live_line_of_a_watched_net_names_its_layers(tmp_path):
    torch.manual_seed(0)
    run_dir = watched_run(vanishing_net(), tmp_path / "run")
    rows = records.read_metrics(run_dir)
    line = live_headline(rows, records.read_json(run_dir / records.CONFIG))
    assert line.startswith("Vanishing gradient: the back-propagated signal shrinks")
    assert "from blocks.8 to stem" in line
    assert not math.isnan(rows[0]["signal_norms"][0])


def test_model_setup_says_what_was_watched(tmp_path):
    config = records.read_json(write_watch_run(tmp_path / "run") / records.CONFIG)
    assert report.results.model_setup(config) == (
        "Net (12,345 parameters; 5 weighted layers, 4 activation layers: sigmoid), adam lr "
        "0.001, watched by vanishing.watch: measured every 100 steps on the training batch of "
        "the step."
    )


def test_a_watched_signal_is_read_as_recorded_whatever_the_layers_shapes():
    """Per sample: the norms over one batch, as recorded, for an MLP's layers of 520 and 120
    units (as `vanishing train`'s records are read) and for a conv's 28 x 28 map alike."""
    from vanishing.reporting.verdict import signal_of

    def row(signal, counts):
        return {"signal_norms": signal, "activation_histogram": [{"counts": [c]} for c in counts]}

    mlp = signal_of(row([0.5, 2.0], [64 * 520, 64 * 120]))
    assert mlp[0] / mlp[1] == pytest.approx(0.25)
    conv = signal_of(row([28.0, 1.0], [64 * 16 * 784, 64 * 16]))
    assert conv[0] / conv[1] == pytest.approx(28.0)
    assert list(signal_of(row([0.5, 2.0], [1, 1]))) == [0.5, 2.0]


def test_the_weight_gradient_sentence_names_the_layers_its_ratio_read():
    """A listed layer no gradient reached (an unused head, last in `layers`) is not the one the
    first layer's gradient is compared with."""
    from vanishing.settings.naming import LayerNames

    config = {"source": "watch", "layers": ["a", "b", "aux"], "layer_labels": ["a"]}
    names = LayerNames.of(config, [0.2, 0.26, None])
    assert names.share("0.77") == "layer a receives 0.77 of the weight gradient b receives"
    assert names.share_short() == "a / b"
    assert LayerNames.of(config).share_short() == "a / aux"  # no probe row: as listed


def tick_texts(labels) -> list[str]:
    return [label.get_text() for label in labels]


def overlapping(labels) -> list[tuple[str, str]]:
    """Pairs of drawn tick labels whose boxes overlap (the figure must have been drawn)."""
    boxes = [(label.get_text(), label.get_window_extent()) for label in labels]
    return [
        (a, b)
        for i, (a, box) in enumerate(boxes)
        for b, other in boxes[i + 1 :]
        if box.overlaps(other)
    ]


def test_figures_name_a_watched_models_layers_as_its_sentences_do(tmp_path):
    # A ResNet's shape: 16 activation layers, 41 weighted ones (convolutions, shortcuts, fc).
    labels = [f"layer{i // 4 + 1}.{i % 4}.relu" for i in range(16)]
    layers = ["conv1", *(f"layer{i // 10 + 1}.{i % 10}.conv" for i in range(39)), "fc"]
    run_dir = write_watch_run(
        tmp_path / "run",
        activation="relu",
        signal=(1.0,) * 16,
        elements=(1000,) * 16,
        dead=(0.0,) * 15 + (0.7,),
        grad_norms=tuple(0.1 * (i + 1) for i in range(41)),
        labels=labels,
        layers=layers,
    )
    runs, _ = loading.load_runs([run_dir])
    (point,) = report.make_points(runs)

    figure = plots.gradient_flow([point])
    FigureCanvasAgg(figure).draw()  # lays the labels out, as saving would
    for axes in figure.axes:
        (line,) = axes.get_lines()
        assert list(line.get_xdata()) == list(range(1, 42))  # a point per weighted layer
        positions = [int(p) for p in axes.get_xticks()]
        assert positions[0] == 1 and positions[-1] == 41 and len(positions) <= 16
        assert tick_texts(axes.get_xticklabels()) == [layers[p - 1] for p in positions]
        assert overlapping(axes.get_xticklabels()) == []

    heatmaps = plots.gradient_heatmaps([point])
    FigureCanvasAgg(heatmaps).draw()
    axes = heatmaps.axes[0]  # the colour bar is the other
    positions = [int(p) for p in axes.get_yticks()]
    assert positions[-1] == 41 and len(positions) <= 12
    assert tick_texts(axes.get_yticklabels()) == [layers[p - 1] for p in positions]
    assert overlapping(axes.get_yticklabels()) == []

    health = plots.unit_health([point])
    assert tick_texts(health.legends[0].get_texts())[-1] == "layer4.3.relu"  # the dead one
    profiles = plots.layer_profiles([("Net", np.linspace(1.0, 2.0, 16))], "std", point.names)
    axes = profiles.axes[0]
    positions = [int(p) for p in axes.get_xticks()]
    assert positions[-1] == 16
    assert tick_texts(axes.get_xticklabels()) == [labels[p - 1] for p in positions]


def test_the_trainers_mlps_keep_numbered_ticks(tmp_path):
    runs, _ = loading.load_runs([make_sweep(tmp_path, {"relu": [0.98]})])
    (point,) = report.make_points(runs)
    figure = plots.gradient_flow([point])
    assert tick_texts(figure.axes[0].get_xticklabels()) == ["1", "2", "3", "out"]
    heatmaps = plots.gradient_heatmaps([point])
    assert tick_texts(heatmaps.axes[0].get_yticklabels()) == ["1", "2", "3", "out"]
    health = plots.unit_health([point])
    assert tick_texts(health.legends[0].get_texts()) == ["layer 1", "layer 2", "layer 3"]
    # A deep one: every k-th layer and the output layer, so that labels never touch.
    assert NUMBERED.weighted_ticks(31)[-2:] == ["30", "out"]
    positions, shown = plots.tick_marks(NUMBERED.weighted_ticks(31), 16)
    assert shown == [*(str(i) for i in range(1, 30, 2)), "out"] and positions[-1] == 31


def test_a_watched_report_draws_the_signal_its_headline_reads(tmp_path):
    """report.html of a watched run: the per-layer signal figure, and captions that say the
    layers were measured on the step's batch (no probe batch) and name no Linear layer."""
    from vanishing.reporting.page import build_report

    built = build_report([write_watch_run(tmp_path / "run")])
    figures = {block.anchor: block for block in built.figures}
    assert "signal" in figures
    assert "the training batch of each measured step at step 0" in figures["signal"].caption
    assert "on the training batch of each measured step" in figures["gradient-flow"].caption
    assert "fixed probe batch" not in figures["gradient-flow"].caption
    assert "Linear" not in " ".join(block.caption for block in built.figures)
    assert "Rectifiers: share of units with zero output for every sample of the last 8" in (
        figures["units"].caption
    )


def test_a_watched_run_keeps_what_it_logged_and_says_its_lr_schedule(tmp_path):
    """A logged test_loss without test_accuracy is kept; a warm-up's lr is given as its range;
    a notebook shows no accuracy as '–', not nan."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 4))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    with vanishing.watch(model, optimizer, every=1, out=tmp_path) as w:
        for _ in range(5):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            warmup.step()
        w.log(epoch=1, test_loss=0.75)
    assert w.result.test_loss == 0.75
    config = records.read_json(tmp_path / records.CONFIG)
    assert config["lr"] == pytest.approx(0.025)
    assert config["lr_range"] == pytest.approx([0.025, 0.1])
    assert "sgd lr 0.025 to 0.1 (a schedule)" in report.results.model_setup(config)
    html = w.result._repr_html_()
    assert "nan" not in html and "<td>–</td>" in html
