"""The activation histogram of the probes against numpy.histogram: per layer, per model of a
group as alone, on a diverged network, and read back from metrics.jsonl."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from test_report import write_run
from vanishing import records
from vanishing import reporting as report
from vanishing.measure import probes
from vanishing.model.activations import ACTIVATIONS, get_activation
from vanishing.model.mlp import GroupedMLP, build_model

BINS = probes.HISTOGRAM_BINS


def batch(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_histogram_equals_numpy(name):
    model = build_model((12, 7, 5), name, seed=3)
    x, y = batch()
    measured = probes.measure(model, get_activation(name), x, y)["activation_histogram"]
    model.eval()  # as the probe: RReLU at its mean slope, batch norm on the batch's statistics
    with torch.no_grad():
        hidden = model.forward_hidden(x, "batch").outputs
    assert len(measured) == len(hidden) == 3
    for layer, h in zip(measured, hidden, strict=True):
        counts, edges = np.histogram(h.numpy(), bins=BINS)
        assert layer["edges"] == pytest.approx(edges.tolist(), rel=1e-6, abs=1e-7)
        assert layer["counts"] == counts.tolist()
        assert all(isinstance(c, int) for c in layer["counts"])
        assert sum(layer["counts"]) == h.numel() == 32 * len(h[0])


def test_constant_layer_and_values_on_edges():
    # Every output exactly zero (a dead ReLU layer): numpy's range, 0.5 either side.
    edges, counts = probes.histograms(torch.zeros(1, 10)).split([BINS + 1, BINS], dim=1)
    assert edges[0].tolist() == pytest.approx(np.histogram(np.zeros(10), BINS)[1].tolist())
    assert counts[0].tolist() == np.histogram(np.zeros(10), BINS)[0].tolist()
    # Ties on edges: the smallest value in the first bin, the largest in the last (closed).
    values = torch.tensor([[0.0, 0.5, 1.0, 1.0]])
    row = probes.split_layers([[0.0] * probes.STATS + probes.histograms(values)[0].tolist()])[-1]
    expected, _ = np.histogram(values.numpy(), BINS)
    assert row[0]["counts"] == expected.tolist()
    assert row[0]["counts"][0] == 1 and row[0]["counts"][-1] == 2


def test_grouped_histograms_equal_single_model_histograms():
    names = ["sigmoid", "prelu", "relu", "tanh"]
    models = [build_model((12, 7, 5), n, seed=s) for s, n in enumerate(names)]
    stacked = GroupedMLP.from_models(models)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 32, 784, generator=g), torch.randint(0, 10, (4, 32), generator=g)
    rows = probes.measure_group(stacked, x, y)
    for k, model in enumerate(models):
        alone = probes.measure(model, get_activation(names[k]), x[k], y[k])
        grouped = rows[k]["activation_histogram"]
        for mine, theirs in zip(grouped, alone["activation_histogram"], strict=True):
            assert mine["edges"] == pytest.approx(theirs["edges"], rel=1e-5, abs=1e-7)
            assert mine["counts"] == theirs["counts"]


def test_diverged_probe_is_well_formed(tmp_path):
    x, y = batch()
    partly = build_model((6, 5), "tanh", seed=0)
    with torch.no_grad():
        partly.linears[1].weight[0, 0] = math.nan  # layer 2's unit 0 is nan for every sample
    measured = probes.measure(partly, get_activation("tanh"), x, y)["activation_histogram"]
    assert [sum(layer["counts"]) for layer in measured] == [32 * 6, 32 * 4]  # the finite ones
    assert all(math.isfinite(e) for layer in measured for e in layer["edges"])

    diverged = build_model((6, 5), "tanh", seed=0)
    with torch.no_grad():
        diverged.linears[0].weight.fill_(math.nan)  # every value of every layer is nan
    single = probes.measure(diverged, get_activation("tanh"), x, y)["activation_histogram"]
    stacked = GroupedMLP.from_models([diverged, build_model((6, 5), "tanh", seed=1)])
    grouped = probes.measure_group(stacked, x.expand(2, -1, -1), y.expand(2, -1))
    for histogram in (single, grouped[0]["activation_histogram"]):
        assert len(histogram) == 2
        for layer in histogram:
            assert len(layer["edges"]) == BINS + 1 and len(layer["counts"]) == BINS
            assert all(isinstance(c, int) and c == 0 for c in layer["counts"])
            assert all(math.isnan(e) for e in layer["edges"])
    # The healthy model of the group is untouched by its neighbour.
    assert [sum(layer["counts"]) for layer in grouped[1]["activation_histogram"]] == [192, 160]
    # Written as null, read back as None, with the counts intact.
    writer = records.MetricsWriter(tmp_path / records.METRICS)
    writer.write({"kind": "probe", "step": 0, "activation_histogram": single})
    writer.close()
    (row,) = records.read_metrics(tmp_path)
    assert row["activation_histogram"][0] == {"edges": [None] * (BINS + 1), "counts": [0] * BINS}


def test_partly_non_finite_layer_counts_the_finite_values():
    values = torch.tensor([[1.0, math.nan, 2.0, math.inf, 3.0, -math.inf]])
    row = probes.histograms(values)[0].tolist()
    edges, counts = row[: BINS + 1], row[BINS + 1 :]
    assert (edges[0], edges[-1]) == (1.0, 3.0)  # the finite range, not stretched to inf
    assert counts == np.histogram([1.0, 2.0, 3.0], BINS)[0].tolist()


def test_histogram_round_trips_through_metrics_jsonl(tmp_path):
    model = build_model((8, 4), "relu", seed=0)
    measured = probes.measure(model, get_activation("relu"), *batch())
    writer = records.MetricsWriter(tmp_path / records.METRICS)
    writer.write({"kind": "probe", "step": 0, **measured})
    writer.close()
    (row,) = records.read_metrics(tmp_path)
    assert row["activation_histogram"] == measured["activation_histogram"]
    assert [sum(layer["counts"]) for layer in row["activation_histogram"]] == [32 * 8, 32 * 4]


def test_report_draws_histograms_and_reads_older_runs(tmp_path):
    run = write_run(tmp_path / "new" / "relu-seed0", "relu", 0, 0.97)
    anchors = [b.anchor for b in report.build_report([run.parent]).figures]
    assert "histograms" in anchors
    older = write_run(tmp_path / "old" / "relu-seed0", "relu", 0, 0.97)
    rows = records.read_metrics(older)
    writer = records.MetricsWriter(older / records.METRICS)
    for row in rows:
        row.pop("activation_histogram", None)
        writer.write(row)
    writer.close()
    anchors = [b.anchor for b in report.build_report([older.parent]).figures]
    assert "histograms" not in anchors and "gradient-flow" in anchors
