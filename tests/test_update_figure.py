"""The report's figure of the update ratio ||dW|| / ||W|| per layer, beside the gradient's: what
it draws is the records' numbers (the seed's sigmoid net under Adam: layer 1 moves as fast as the
output layer though its gradient is 1,000x smaller), a watched model's layers name its ticks, and
records without update ratios get no figure at all."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import vanishing
from test_diagnosis import write_run
from test_watch_report import LAYERS, write_watch_run
from vanishing import reporting as report
from vanishing.reporting import figures, plots
from vanishing.reporting.results import Point

# The seed experiment (`make run`: the reference MLP, 4 hidden layers, Adam at lr 1e-3), as its
# records hold it at step 0, layer 1 ... output. Sigmoid's layer 1 gets 1/1000 of the output
# layer's gradient yet moves at 1.9x its rate: Adam divides each step by the gradient's size.
SIGMOID_GRADS = [4.6e-4, 2.1e-3, 1.2e-2, 6.0e-2, 0.43]
SIGMOID_RATIOS = [3.6e-02, 3.7e-02, 3.9e-02, 3.1e-02, 1.9e-02]
RELU_GRADS = [0.70, 0.52, 0.47, 0.41, 0.43]
RELU_RATIOS = [2.2e-02, 2.6e-02, 2.9e-02, 2.4e-02, 1.8e-02]
LATER = [1.0e-3, 1.1e-3, 1.2e-3, 9.0e-4, 5.0e-4]  # the last probe's ratios, seed 0
SEED_FACTOR = 1.21  # seed 1's ratios are seed 0's times this: the geometric mean is 1.1 times


def seed_experiment(tmp_path) -> list[Point]:
    """Sigmoid and ReLU under Adam, two seeds each, with a step-0 and a later probe."""
    for activation, grads, ratios in (
        ("sigmoid", SIGMOID_GRADS, SIGMOID_RATIOS),
        ("relu", RELU_GRADS, RELU_RATIOS),
    ):
        for seed, factor in ((0, 1.0), (1, SEED_FACTOR)):
            write_run(
                tmp_path / f"{activation}-seed{seed}",
                activation=activation,
                depth=4,
                seed=seed,
                init="default",
                optimizer="adam",
                lr=1e-3,
                momentum=0.0,
                grad_norms=grads,
                later_norms=[[0.01] * 5],
                update_ratios=[[factor * r for r in ratios], [factor * r for r in LATER]],
                accuracy=0.9766 if activation == "sigmoid" else 0.9778,
            )
    return report.build_report([tmp_path], figures=False).points


def test_the_seed_experiment_draws_its_records_update_ratios(tmp_path):
    sigmoid, relu = seed_experiment(tmp_path)
    assert (sigmoid.label, relu.label) == ("Sigmoid", "ReLU")
    mean = np.sqrt(SEED_FACTOR)  # the geometric mean over the two seeds
    first, last = plots.update_ratio_ends(sigmoid)
    np.testing.assert_allclose(first[0], mean * np.array(SIGMOID_RATIOS), rtol=1e-6)
    np.testing.assert_allclose(first[1], SIGMOID_RATIOS, rtol=1e-6)  # the band: seed 0 ...
    np.testing.assert_allclose(first[2], SEED_FACTOR * np.array(SIGMOID_RATIOS), rtol=1e-6)
    np.testing.assert_allclose(last[0], mean * np.array(LATER), rtol=1e-6)

    figure = plots.update_ratios([sigmoid, relu])
    assert figure is not None
    start, end = figure.axes[:2]
    sigmoid_line, relu_line = (np.asarray(line.get_ydata()) for line in start.get_lines()[:2])
    np.testing.assert_allclose(sigmoid_line, mean * np.array(SIGMOID_RATIOS), rtol=1e-6)
    np.testing.assert_allclose(relu_line, mean * np.array(RELU_RATIOS), rtol=1e-6)
    np.testing.assert_allclose(end.get_lines()[0].get_ydata(), mean * np.array(LATER), rtol=1e-6)
    # The figure's point: sigmoid's layer 1 moves faster than its output layer (1.9x) although
    # it receives a thousandth of its gradient, which the gradient figure beside it shows.
    assert sigmoid_line[0] / sigmoid_line[-1] == pytest.approx(0.036 / 0.019)
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == ["Sigmoid: 1.89", "ReLU: 1.22"]
    gradient = plots.gradient_flow([sigmoid, relu])
    gradient_legend = [text.get_text() for text in gradient.legends[0].get_texts()]
    assert gradient_legend[0] == "Sigmoid: 1.1e-03"
    # Ratio 1, a step as large as the weights, marked on both panels.
    for axes in (start, end):
        assert any(list(line.get_ydata()) == [1.0, 1.0] for line in axes.get_lines())


def test_the_update_figure_follows_the_gradient_figure_in_the_report(tmp_path):
    points = seed_experiment(tmp_path)
    anchors = [block.anchor for block in figures.draw_figures(points)]
    assert anchors[anchors.index("gradient-flow") + 1] == "update-ratio"
    (block,) = [b for b in figures.draw_figures(points) if b.anchor == "update-ratio"]
    assert block.image[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Adam and RMSprop divide each weight's step" in block.caption
    assert "A ratio near 1 (grey line) is a step as large as the weights" in block.caption


def test_records_without_update_ratios_get_no_update_figure(tmp_path):
    # An older record: probes without update_ratio.
    write_run(tmp_path / "old", activation="sigmoid", depth=3, grad_norms=[1e-3, 1e-2, 0.1, 0.2])
    (point,) = report.build_report([tmp_path / "old"], figures=False).points
    assert plots.update_ratios([point]) is None
    assert not figures.draw(figures.layer_specs()[1], [point])
    assert figures.draw(figures.layer_specs()[0], [point])  # the gradient figure is drawn


def test_a_model_watched_without_its_optimizer_gets_no_update_figure(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 10))
    x, y = torch.randn(16, 1, 4, 4), torch.randint(0, 10, (16,))
    with vanishing.watch(model, every=1, out=tmp_path / "watched"):  # no optimizer: no ratio
        for _ in range(3):
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
    (point,) = report.build_report([tmp_path / "watched"], figures=False).points
    assert point.probe_series("grad_norms")[1].size  # measured, but no step recorded
    assert plots.update_ratios([point]) is None


def test_a_watched_models_layers_name_the_update_figures_ticks(tmp_path):
    (point,) = report.build_report([write_watch_run(tmp_path / "run")], figures=False).points
    figure = plots.update_ratios([point])
    assert figure is not None
    ticks = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    assert ticks == LAYERS  # conv1 ... fc, the model's own names
    np.testing.assert_allclose(figure.axes[0].get_lines()[0].get_ydata(), [0.001] * 5)
