"""The report through time, on records written to show each failure and written not to: a tanh
RNN whose gradient vanishes from the last step back to the first and an LSTM with forget bias 1
whose does not, exploding through time, closed forget gates, a stacked network read across its
layers and along its steps apart, a watched nn.LSTM; the figures through time; the live line by
the same rules; damaged time profiles skipped or read in one line."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from test_report import make_sweep
from vanishing import records
from vanishing import reporting as report
from vanishing.reporting import figures, loading, plots, verdict
from vanishing.reporting.verdict import judge, live_headline
from vanishing.reporting.verdict.time_profile import time_profile

FLOAT32_TINY = 1.2e-38  # what float32 holds: a smaller norm underflows to 0


def profile_of(per_step: float, steps: int, last: float = 0.05) -> list[float]:
    """||dLoss/dh_t|| for t = 1..T falling by `per_step` per step towards step 1, underflowing
    to 0 as float32 does."""
    values = [last * per_step ** (steps - t) for t in range(1, steps + 1)]
    return [v if v >= FLOAT32_TINY else 0.0 for v in values]


def write_recurrent_run(
    run_dir: Path,
    *,
    arch: str = "rnn",
    activation: str = "tanh",
    hidden: tuple[int, ...] = (128,),
    sequence: str | None = "rows",
    steps: int = 28,
    per_step: tuple[float, float] = (0.57, 0.57),  # at the first probe and the last
    gates: tuple[dict[str, float], dict[str, float]] | None = None,
    saturated: dict[str, float] | None = None,
    recurrent_norm: float = 0.57,
    nonfinite_at: int | None = None,  # the probe (from 0) whose step-1 norm is null
    accuracy: float | None = 0.9,
    test_loss: float = 0.3,
    baseline: float | None = None,
    seed: int = 0,
    dataset: str = "mnist",
    watched_names: list[str] | None = None,
    cut: int = 0,  # the first steps whose norm is exactly 0 (units at rest pass none back)
    grad_norms: list[float] | None = None,  # per weighted layer (default 0.1 each)
    **config: Any,
) -> Path:
    """A finished recurrent run as the trainer (or, with `watched_names`, `vanishing.watch`)
    writes it: three probe rows (steps 0, 300, 600), one epoch row, result.json."""
    run_dir.mkdir(parents=True)
    layers = len(hidden)
    regression = dataset == "adding"
    if watched_names:
        config = {
            "source": "watch",
            "model": "Seq2Seq",
            "description": "Seq2Seq(\n  (encoder): Encoder((lstm): LSTM(28, 64, num_layers=2))\n)",
            "parameters": 5000,
            "layers": [*watched_names, "fc"],
            "activation_layers": watched_names,
            "activation_kinds": [activation] * layers,
            "layer_labels": watched_names,
            "recurrent_layers": watched_names,
            "sequence_layers": watched_names,
            "activation": activation,
            "hidden": list(hidden),
            "every": 300,
            "probe_size": 64,
            "optimizer": "adam",
            "lr": 0.001,
            "seed": None,
            "device": "cpu",
            "dataset": dataset,
            **config,
        }
    else:
        config = {
            "activation": activation,
            "hidden": list(hidden),
            "init": "default",
            "optimizer": "adam",
            "lr": 0.001,
            "momentum": 0.0,
            "batch_size": 64,
            "epochs": 1,
            "seed": seed,
            "dataset": dataset,
            "probe_every": 300,
            "probe_size": 64,
            "device": "cpu",
            "arch": arch,
            "sequence": None if regression else sequence,
            "length": steps if regression else None,
            **config,
        }
    records.write_json(run_dir / records.CONFIG, config)
    names = watched_names or [f"{arch} {i + 1}" for i in range(layers)]
    writer = records.MetricsWriter(run_dir / records.METRICS)
    rows = []
    for index, step in enumerate((0, 300, 600)):
        each = per_step[0] if index == 0 else per_step[1]
        norms = [[0.0] * cut + profile_of(each, steps)[cut:] for _ in range(layers)]
        if nonfinite_at == index:
            norms[0][0] = math.inf  # written as null
        gate = (gates[0] if index == 0 else gates[1]) if gates else {}
        row = {
            "kind": "probe",
            "step": step,
            "epoch": 1,
            "loss": test_loss,
            "grad_norms": grad_norms or [0.1] * (layers + 1),
            "vanishing_ratio": 1.0,
            "signal_norms": [0.05] * layers,
            "activation_std": [0.5] * layers,
            "saturated_fraction": [0.0] * layers,
            "dead_fraction": [0.0] * layers,
            "update_ratio": [0.01] * (layers + 1),
            "time_signal_norms": norms,
            "time_layers": names,
            "gates": [dict(gate) for _ in range(layers)],
            "gates_saturated": [dict(saturated or {}) for _ in range(layers)],
            "recurrent_norms": [recurrent_norm] * layers,
        }
        writer.write(row)
        rows.append(row)
    epoch = {
        "epoch": 1,
        "train_loss": test_loss,
        "test_loss": test_loss,
        "test_accuracy": None if regression else accuracy,
        "dead_fraction": [0.0] * layers,
        **({"baseline_loss": baseline} if regression else {}),
    }
    writer.write({"kind": "epoch", "step": 601, **epoch})  # the last probe at the end
    writer.close()
    records.write_json(
        run_dir / records.RESULT,
        {
            "status": "ok",
            "test_accuracy": None if regression else accuracy,
            "test_loss": test_loss,
            "history": [epoch],
            "grad_norms_init": grad_norms or [0.1] * (layers + 1),
            "vanishing_ratio_init": (grad_norms[0] / grad_norms[-1]) if grad_norms else 1.0,
            "signal_norms_init": [0.05] * layers,
            "grad_norms_final": [0.1] * (layers + 1),
            "saturated_fraction": [0.0] * layers,
            "dead_fraction": [0.0] * layers,
            "steps": 601,
            "train_seconds": 1.0,
            "eval_seconds": 0.1,
            "probe_seconds": 0.1,
            "device": "cpu",
            "versions": {},
            "config": config,
            "time_signal_norms_init": rows[0]["time_signal_norms"],
            "time_signal_norms_final": rows[-1]["time_signal_norms"],
            "time_layers": names,
            "gates_init": rows[0]["gates"],
            "gates_final": rows[-1]["gates"],
            "task": "regression" if regression else "classification",
            "baseline_loss": baseline if regression else None,
        },
    )
    return run_dir


def point_of(run_dirs: Path | list[Path]) -> report.Point:
    runs, notes = loading.load_runs(run_dirs if isinstance(run_dirs, list) else [run_dirs])
    assert notes == []
    (point,) = report.make_points(runs)
    return point


def verdict_of(run_dirs: Path | list[Path]) -> verdict.Verdict:
    return judge(point_of(run_dirs))


# A tanh RNN reading MNIST pixel by pixel: 784 steps, 0.966 per step at init and 0.974 after.
PIXELS = {"sequence": "pixels", "steps": 784, "per_step": (0.966, 0.974), "recurrent_norm": 0.98}
# An LSTM with forget bias 1 on rows: its gates start at 0.73 (1.4e-3 over 27 steps) and learn to
# keep the cell (0.95), the gradient with it.
OPEN_LSTM = {
    "arch": "lstm",
    "forget_bias": 1.0,
    "per_step": (0.78, 0.97),
    "gates": (
        {"input": 0.5, "forget": 0.73, "output": 0.5},
        {"input": 0.4, "forget": 0.95, "output": 0.6},
    ),
}
# The same LSTM at PyTorch's init: forget gates at 0.5 that stay closed.
CLOSED_LSTM = {
    "arch": "lstm",
    "per_step": (0.59, 0.6),
    "gates": (
        {"input": 0.5, "forget": 0.5, "output": 0.5},
        {"input": 0.5, "forget": 0.52, "output": 0.5},
    ),
}


def test_a_tanh_rnn_vanishes_through_time_and_is_cured_by_its_cause(tmp_path):
    found = verdict_of(write_recurrent_run(tmp_path / "rnn", **PIXELS))
    assert found.kinds[0] == "vanishing-through-time"
    assert found.word.startswith("vanishing through time")
    # 0.974^783 = 1.1e-09 after training; 0.966^783 = 1.7e-12 at initialisation
    assert found.headline == (
        "Vanishing through time: the gradient reaching step 1 is 1.1e-09 of what reaches step "
        "784 (0.97 per step) after training (last probe); 1.7e-12 (0.97 per step) at "
        "initialisation."
    )
    text = " ".join(found.sentences)
    assert (
        "A Tanh RNN's step multiplies the gradient by at most Tanh's largest slope (1) times its "
        "recurrent weight's largest singular value (0.98 after training): at most 0.98 per "
        "step, (0.98)^783 = 1.3e-07 over the sequence."
    ) in text
    assert "Test accuracy 90.00 % (one seed)." in text
    assert found.cure == (
        "Cure: gated cells (--arch lstm or --arch gru), whose cell state carries the gradient "
        "through time; an orthogonal recurrent weight (--init orthogonal) or IRNN (--arch rnn "
        "--activation relu --init identity; Le, Jaitly and Hinton 2015), whose recurrent weight "
        "starts as the identity; a shorter sequence to back-propagate through: --sequence rows "
        "(28 steps instead of 784)."
    )
    # the steps are never called layers, nor a depth cure offered
    assert "layer 784" not in text and "batch norm" not in text and "residual" not in text


def test_the_cure_fits_what_the_rnn_already_uses(tmp_path):
    irnn = write_recurrent_run(tmp_path / "irnn", activation="relu", init="identity", **PIXELS)
    cure = verdict_of(irnn).cure
    assert "IRNN" not in cure and "orthogonal" not in cure
    assert cure.startswith("Cure: gated cells (--arch lstm or --arch gru)")
    rows = write_recurrent_run(tmp_path / "rows", init="orthogonal", per_step=(0.5, 0.6))
    cure = verdict_of(rows).cure
    assert "--init orthogonal" not in cure and "IRNN" in cure
    assert "shorter sequence" not in cure  # 28 rows are already the short way to read an image


def test_an_lstm_with_forget_bias_1_does_not_vanish_through_time(tmp_path):
    found = verdict_of(write_recurrent_run(tmp_path / "lstm", **OPEN_LSTM))
    assert "vanishing-through-time" not in found.kinds and "closed-gates" not in found.kinds
    assert found.kinds[0] == "healthy"
    # 0.97^27 = 0.439 after training; 0.78^27 = 1.2e-03 at initialisation
    assert found.headline == (
        "Healthy gradient through time: the gradient reaching step 1 is 0.439 of what reaches "
        "step 28 (0.97 per step) after training (last probe); at initialisation only 1.2e-03 "
        "(0.78 per step): training opened the way back."
    )
    assert found.cure == ""
    # One recurrent layer and its head make no profile across depth: no sentence on layers.
    assert "layer 1 receives" not in " ".join(found.sentences)
    # Two stacked layers do: the layers are read apart, in the evidence.
    stacked = verdict_of(write_recurrent_run(tmp_path / "stacked", hidden=(64, 64), **OPEN_LSTM))
    assert "to layer 1 (×1, 1.00 per layer)" in " ".join(stacked.sentences)


def test_an_lstm_whose_forget_gates_stay_closed_is_told_forget_bias_1(tmp_path):
    found = verdict_of(write_recurrent_run(tmp_path / "lstm", **CLOSED_LSTM))
    assert found.kinds[:2] == ("vanishing-through-time", "closed-gates")
    assert found.headline.startswith(
        "Vanishing through time: the gradient reaching step 1 is 1.0e-06 of what reaches step "
        "28 (0.60 per step) after training (last probe)"
    )
    assert (
        "Closed forget gates: the forget gates keep 0.52 of the cell per step on average after "
        "training (last probe); over 28 steps the cell alone keeps 2.1e-08 of its content."
    ) in found.sentences
    assert found.cure == (
        "Cure: --forget-bias 1 (Jozefowicz et al. 2015): the forget gates start at 0.73 instead "
        "of 0.5, so the cell keeps its content, and the gradient its way back, for longer."
    )
    # Given the bias already, the bias is not offered again.
    biased = write_recurrent_run(tmp_path / "biased", forget_bias=1.0, **{**CLOSED_LSTM})
    assert "--forget-bias" not in verdict_of(biased).cure


def test_a_gru_names_its_update_gates(tmp_path):
    gates = ({"reset": 0.5, "update": 0.45}, {"reset": 0.5, "update": 0.4})
    found = verdict_of(
        write_recurrent_run(tmp_path / "gru", arch="gru", per_step=(0.6, 0.6), gates=gates)
    )
    assert (
        "Closed update gates: the update gates keep 0.40 of the state per step on average after "
        "training (last probe); over 28 steps the state alone keeps 1.8e-11 of its content."
    ) in found.sentences


def test_saturated_gates_are_named_without_a_cure_where_the_gradient_vanishes(tmp_path):
    saturated = {"input": 0.1, "forget": 0.62, "output": 0.2}
    found = verdict_of(write_recurrent_run(tmp_path / "lstm", saturated=saturated, **CLOSED_LSTM))
    assert found.kinds[0] == "vanishing-through-time" and "saturated-gates" in found.kinds
    assert (
        "Saturated gates: 62 % of the forget gate's values are below 0.05 or above 0.95 after "
        "training (last probe): a gate there passes under a fifth of a sigmoid's largest slope "
        "back to its weights, which learn slowly."
    ) in found.sentences
    assert "Saturated gates" not in found.cure


def test_gates_are_not_a_failure_where_the_gradient_crosses_the_steps(tmp_path):
    # An LSTM that solved the adding problem kept forget gates at 0.6 on average: a few units
    # keep the memory, and the mean hides them. Its gates explain no failure: none is named.
    gates = (
        {"input": 0.3, "forget": 0.6, "output": 0.3},
        {"input": 0.3, "forget": 0.6, "output": 0.3},
    )
    saturated = {"input": 0.1, "forget": 0.62, "output": 0.2}
    found = verdict_of(
        write_recurrent_run(
            tmp_path / "lstm", arch="lstm", forget_bias=1.0, per_step=(0.78, 0.97), gates=gates,
            saturated=saturated,
        )
    )  # fmt: skip
    assert found.kinds == ("healthy",)
    assert not any("gates" in sentence for sentence in found.sentences)


def test_exploding_through_time_is_clipped(tmp_path):
    # 1.2 per step over 27 steps: step 1 gets 137 times what step 28 gets
    run = write_recurrent_run(tmp_path / "rnn", per_step=(0.9, 1.2), init_gain=2.0)
    found = verdict_of(run)
    assert found.kinds[0] == "exploding-through-time"
    assert found.headline == (
        "Exploding through time: the gradient reaching step 1 is 137 times what reaches step 28 "
        "(1.20 per step) at step 300."
    )
    assert found.cure == (
        "Cure: --clip-grad-norm 1, which cuts every step's gradient to norm 1 (Pascanu, "
        "Mikolov and Bengio 2013); a smaller recurrent weight at init (--init-gain below 1, 2 "
        "here)."
    )
    # 99x is not over the threshold
    tame = verdict_of(write_recurrent_run(tmp_path / "tame", per_step=(0.9, 1.185)))
    assert "exploding-through-time" not in tame.kinds


def test_a_gradient_through_time_that_became_non_finite_explodes(tmp_path):
    run = write_recurrent_run(tmp_path / "rnn", per_step=(0.9, 0.9), nonfinite_at=2)
    found = verdict_of(run)
    assert found.headline == (
        "Exploding through time: the gradient on its way back through the sequence is no "
        "longer a finite number at step 600."
    )


def test_an_underflow_says_how_far_back_the_gradient_reaches(tmp_path):
    # 0.5 per step from 0.05: 0.05 * 0.5^121 = 1.9e-38 at step 79, under float32's 1.2e-38 before
    found = verdict_of(write_recurrent_run(tmp_path / "rnn", steps=200, per_step=(0.5, 0.5)))
    assert found.headline.startswith(
        "Vanishing through time: the gradient reaching step 1 is exactly 0, too small for "
        "float32: it reaches back only to step 79 of 200, which gets 3.8e-37 of what reaches "
        "step 200 (0.50 per step) after training (last probe); 0 (0.50 per step) at "
        "initialisation."
    )


def test_a_stacked_network_is_read_across_layers_and_along_steps_apart(tmp_path):
    run = write_recurrent_run(tmp_path / "rnn", hidden=(64, 64), **PIXELS)
    found = verdict_of(run)
    assert found.headline.startswith("Vanishing through time in rnn 1: the gradient reaching step")
    text = " ".join(found.sentences)
    # depth: the signal across the two layers, which keeps its size
    assert "The back-propagated signal keeps its size from layer 2 to layer 1 (×1)." in text
    # the slope bound holds for the last layer only: the first has the layer above as a path too
    assert "A Tanh RNN's step" not in text
    assert "from layer 784" not in text and "layer 28" not in text


def test_a_watched_lstm_names_its_stacked_layers(tmp_path):
    names = ["encoder.lstm.l0", "encoder.lstm.l1"]
    run = write_recurrent_run(
        tmp_path / "watched", hidden=(64, 64), watched_names=names, **CLOSED_LSTM
    )
    found = verdict_of(run)
    assert found.headline.startswith(
        "Vanishing through time in encoder.lstm.l0: the gradient reaching step 1 is 1.0e-06"
    )
    assert "the forget gates of encoder.lstm.l0 keep 0.52 of the cell" in " ".join(found.sentences)
    assert found.cure.startswith(
        "Cure: the forget gates' bias at 1 (Jozefowicz et al. 2015): PyTorch orders an LSTM's "
        "gates i, f, g, o"
    )
    assert "truncated BPTT" not in found.cure and "--" not in found.cure  # no options to give
    built = report.build_report([run])
    anchors = [block.anchor for block in built.figures]
    assert {"through-time", "time-heatmaps", "gates"} <= set(anchors)
    page = report.render_html(built)
    assert "encoder.lstm.l0" in page and "Through time it is the same product" in page


def test_a_recurrent_report_draws_time_and_an_mlps_does_not(tmp_path):
    rnn = write_recurrent_run(tmp_path / "runs" / "rnn", **PIXELS)
    lstm = write_recurrent_run(tmp_path / "runs" / "lstm", **OPEN_LSTM)
    built = report.build_report([rnn, lstm])
    anchors = [block.anchor for block in built.figures]
    # two conditions (RNN on pixels, LSTM on rows): the figures per condition, each its own
    assert [a for a in anchors if a.startswith(("through-time", "time-heatmaps", "gates"))] == [
        "through-time-lstm-rows-forget-gate-bias-1",
        "time-heatmaps-lstm-rows-forget-gate-bias-1",
        "gates-lstm-rows-forget-gate-bias-1",
        "through-time-rnn-pixels",
        "time-heatmaps-rnn-pixels",
    ]
    # the theory line (dotted) for the plain RNN only: none for an LSTM
    rnn_point, lstm_point = sorted(built.points, key=lambda g: g.runs[0].config["arch"] != "rnn")
    assert [rnn_point.label, lstm_point.label] == [
        "RNN (Tanh), pixels",
        "LSTM, rows, forget-gate bias 1",
    ]
    figure = plots.time_profiles([rnn_point])
    assert figure is not None
    dotted = [line for line in figure.axes[0].get_lines() if line.get_linestyle() == ":"]
    assert len(dotted) == 1
    theory = dotted[0].get_ydata()
    measured = time_profile(rnn_point).layers[0].norms
    # (1 * 0.98)^(T - t), scaled to the measured norm at step T: above the measured line
    assert theory[-1] == pytest.approx(measured[-1])
    assert theory[0] == pytest.approx(measured[-1] * 0.98**783)
    assert (theory >= measured * (1 - 1e-9)).all()
    figure = plots.time_profiles([lstm_point])
    assert not [line for line in figure.axes[0].get_lines() if line.get_linestyle() == ":"]
    page = report.render_html(built)
    assert "<h1>Vanishing gradients: LSTM, RNN (Tanh) on mnist</h1>" in page
    assert (
        "LSTM 128 over 28 rows of 28 pixels; RNN (Tanh) 128 over 784 pixels, one at a time; init "
        "default, adam lr 0.001, batch 64, epochs 1, forget bias 1/none; seeds 0;"
    ) in page


def test_a_gate_figure_only_where_gates_were_recorded(tmp_path):
    rnn = point_of(write_recurrent_run(tmp_path / "rnn", **PIXELS))
    assert plots.gate_means([rnn]) is None  # a plain RNN has no gates
    lstm = point_of(write_recurrent_run(tmp_path / "lstm", **OPEN_LSTM))
    figure = plots.gate_means([lstm])
    assert figure is not None
    heights = [patch.get_height() for patch in figure.axes[0].patches]
    assert heights == pytest.approx([0.5, 0.73, 0.5, 0.4, 0.95, 0.6])


def test_the_live_line_reads_the_same_rules(tmp_path):
    run = write_recurrent_run(tmp_path / "rnn", **PIXELS)
    rows = records.read_metrics(run)
    config = records.read_json(run / records.CONFIG)
    line = live_headline(rows, config)
    assert line.startswith(
        "Vanishing through time: the gradient reaching step 1 is 1.1e-09 of what reaches step "
        "784 (0.97 per step) at step 600; 1.7e-12 (0.97 per step) at initialisation. "
    )
    assert live_headline(rows[:1], config).startswith(
        "Vanishing through time: the gradient reaching step 1 is 1.7e-12 of what reaches step "
        "784 (0.97 per step) at initialisation. "
    )
    lstm = write_recurrent_run(tmp_path / "lstm", **OPEN_LSTM)
    line = live_headline(records.read_metrics(lstm), records.read_json(lstm / records.CONFIG))
    assert line.startswith("Through time: the gradient reaching step 1 is 0.439 of what reaches")
    exploding = write_recurrent_run(tmp_path / "boom", per_step=(0.9, 1.2))
    rows = records.read_metrics(exploding)
    line = live_headline(rows, records.read_json(exploding / records.CONFIG))
    assert line.startswith("Exploding through time: the gradient reaching step 1 is 137 times")


def test_the_cure_section_compares_gated_cells_and_the_forget_gate_bias(tmp_path):
    root = tmp_path / "sweep"
    for seed in range(2):
        write_recurrent_run(root / f"rnn-s{seed}", seed=seed)
        write_recurrent_run(root / f"lstm-s{seed}", seed=seed, **CLOSED_LSTM)
        write_recurrent_run(root / f"lstm-fb-s{seed}", seed=seed, **OPEN_LSTM)
    built = report.build_report([root])
    labels = sorted(g.label for g in built.points)
    assert labels == ["LSTM", "LSTM, forget-gate bias 1", "RNN (Tanh)"]
    (time_block,) = [b for b in built.figures if b.anchor == "cure-time"]
    assert time_block.section[1] == (
        "The settings of this report that change how the gradient flows, and differ here "
        "(architecture: RNN, LSTM (gated cells against a plain RNN); forget-gate bias: none, 1), "
        "at depth 1, side by side."
    )
    assert [b.anchor for b in built.figures if b.anchor.startswith("cure")] == ["cure-time"]
    table = time_block.table
    assert table is not None
    assert table.header[4] == "through time, step 1 / T"
    cells = {row[0]: row for row in table.rows}
    assert cells["RNN (Tanh)"][4] == "2.6e-07 (0.57 per step)"  # 0.57^27
    assert cells["LSTM, forget-gate bias 1"][-1] == "healthy"
    assert cells["LSTM"][-1] == "vanishing through time, gates closed"
    assert figures.cure_words().startswith("init, gradient clipping")


def test_an_mlps_report_says_nothing_through_time(tmp_path):
    root = make_sweep(tmp_path / "mlp", {"relu": [0.97], "sigmoid": [0.95]})
    built = report.build_report([root])
    assert not [b for b in built.figures if b.anchor.startswith(("through", "time-", "gates"))]
    page, markdown = report.render_html(built), report.render_markdown(built)
    for text in (page, markdown):
        assert "through time" not in text.lower() and "test MSE" not in text
    for point in built.points:
        assert time_profile(point) is None
        assert not [k for k in judge(point).kinds if "time" in k or "gates" in k]


def test_a_damaged_time_profile_is_dropped_from_its_row_and_the_run_read(tmp_path):
    run = write_recurrent_run(tmp_path / "rnn", **PIXELS)
    rows = records.read_metrics(run)
    damaged = [
        {**rows[0], "time_signal_norms": [3], "gates": "x"},
        {**rows[1], "time_layers": [1], "recurrent_norms": [[1]]},
        rows[2],
    ]
    usable = loading.usable_rows(damaged)
    assert "time_signal_norms" not in usable[0] and "gates" not in usable[0]
    assert "time_layers" not in usable[1] and "recurrent_norms" not in usable[1]
    assert usable[1]["time_signal_norms"] == rows[1]["time_signal_norms"]
    assert usable[2] == rows[2]
    # A result.json whose time profile or task is damaged reads as missing them.
    result = records.read_json(run / records.RESULT)
    checked = loading.checked_result(
        {**result, "time_signal_norms_init": "x", "task": 3, "baseline_loss": "x"}, failed=False
    )
    assert isinstance(checked, dict)
    assert (checked["time_signal_norms_init"], checked["task"], checked["baseline_loss"]) == (
        None,
        None,
        None,
    )


def test_a_run_that_blew_up_through_time_is_cured_by_clipping(tmp_path):
    run = write_recurrent_run(tmp_path / "rnn", per_step=(1.1, 1.3), nonfinite_at=2)
    result = records.read_json(run / records.RESULT)
    records.write_json(
        run / records.RESULT,
        {**result, "status": "diverged", "test_loss": None, "diverged_step": 600},
    )
    found = verdict_of(run)
    assert found.kinds[:2] == ("training-blow-up", "exploding-through-time")
    assert found.headline.startswith("Blew up: 1 of 1 runs diverged")
    assert (
        "Exploding through time: the gradient on its way back through the sequence is no longer "
        "a finite number at step 600."
    ) in found.sentences
    assert found.cure.startswith("Cure: --clip-grad-norm 1, which cuts every step's gradient")


def test_steps_cut_off_by_units_at_rest_are_not_an_underflow(tmp_path):
    # IRNN reading pixels: the blank top rows leave its ReLUs at 0, which pass nothing back to
    # steps 1 to 40; from step 41 it keeps 0.999 per step: no vanishing gradient.
    irnn = write_recurrent_run(
        tmp_path / "irnn", activation="relu", init="identity", sequence="pixels", steps=784,
        per_step=(0.999, 0.999), cut=40, recurrent_norm=1.0,
    )  # fmt: skip
    found = verdict_of(irnn)
    assert found.kinds[0] == "healthy"
    sentence = next(s for s in found.sentences if "no gradient reaches steps 1 to 40" in s)
    assert "not an underflow" in sentence and "from step 41" in sentence
    assert "too small for float32" not in " ".join(found.sentences)
    # A tanh RNN whose gradient fades into float32's underflow on its way back is vanishing.
    fading = write_recurrent_run(
        tmp_path / "rnn", sequence="pixels", steps=784, per_step=(0.9, 0.9), cut=10
    )
    found = verdict_of(fading)
    assert found.kinds[0] == "vanishing-through-time"
    assert "too small for float32" in found.headline


def test_one_recurrent_layer_and_its_head_are_not_read_as_depth(tmp_path):
    # The recurrent layer's weight gradient sums 28 steps' and the head's sees one: a ratio of
    # 166 between them is no exploding gradient across depth.
    found = verdict_of(
        write_recurrent_run(tmp_path / "rnn", per_step=(0.97, 0.97), grad_norms=[16.6, 0.1])
    )
    assert "exploding" not in found.kinds and found.kinds[0] == "healthy"
    assert not any("layer 1 receives" in sentence for sentence in found.sentences)


def test_a_last_probe_well_before_the_end_of_training_says_when(tmp_path):
    run = write_recurrent_run(tmp_path / "rnn", **PIXELS)
    result = records.read_json(run / records.RESULT)
    records.write_json(run / records.RESULT, {**result, "steps": 5000})
    found = verdict_of(run)
    assert "at the last probe (step 600 of 5000)" in found.headline
    assert "after training" not in found.headline


def test_one_seed_whose_gradient_never_reaches_step_1_is_not_averaged_away(tmp_path):
    # Two seeds keep 0.97 per step; the third's gradient underflows before step 1: the point's
    # gradient through time is not called healthy on the strength of the other two.
    runs = [
        write_recurrent_run(tmp_path / f"s{seed}", seed=seed, per_step=(0.97, 0.97))
        for seed in (0, 1)
    ]
    # 0.02 per step: under float32's smallest normal number 22 steps back, 0 at step 1
    runs.append(write_recurrent_run(tmp_path / "s2", seed=2, per_step=(0.02, 0.02)))
    found = verdict_of(runs)
    assert found.kinds[0] == "vanishing-through-time"
    assert "Healthy gradient through time" not in found.headline
