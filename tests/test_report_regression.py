"""A regression (the adding problem) in the report: its test loss, the mean squared error, and
the baseline of always answering 1 stand where a classification's accuracy does, in every table,
sentence and figure, with whether it beat the baseline; lower is better in every comparison; a
null accuracy never reads as a number."""

from __future__ import annotations

import csv
import io
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from test_report_time import write_recurrent_run
from vanishing import records
from vanishing import reporting as report
from vanishing.frontends.cli import main
from vanishing.reporting import loading, plots, summary
from vanishing.reporting.verdict import judge, live_headline

BASELINE = 0.1671  # always answering 1 on the test set: about 1/6
LSTM = [0.004, 0.006, 0.005]  # T = 100: solved
RNN = [0.166, 0.168, 0.167]  # a tanh RNN stays at the baseline
RELU = [0.08, 0.05, 0.07]  # a relu RNN's gradient reaches further back: half way
ADDING = {"dataset": "adding", "steps": 100, "baseline": BASELINE}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def adding(tmp_path) -> Path:
    """A sweep on the adding problem: an LSTM that solves it, a tanh RNN that stays at the
    baseline and a relu RNN half way, three seeds each."""
    root = tmp_path / "adding"
    for seed in range(3):
        write_recurrent_run(
            root / f"lstm-seed{seed}",
            arch="lstm",
            seed=seed,
            test_loss=LSTM[seed],
            per_step=(0.8, 0.97),
            gates=({"input": 0.5, "forget": 0.73, "output": 0.5},) * 2,
            forget_bias=1.0,
            **ADDING,
        )
        write_recurrent_run(
            root / f"rnn-seed{seed}",
            seed=seed,
            test_loss=RNN[seed],
            per_step=(0.57, 0.6),
            **ADDING,
        )
        write_recurrent_run(
            root / f"relu-seed{seed}",
            activation="relu",
            seed=seed,
            test_loss=RELU[seed],
            per_step=(0.9, 0.98),
            **ADDING,
        )
    return root


def points_of(root: Path) -> dict[str, report.Point]:
    built = report.build_report([root], figures=False)
    return {f"{g.runs[0].config['arch']} {g.activation.name}": g for g in built.points}


def test_each_point_says_its_mse_against_the_baseline(adding):
    points = points_of(adding)
    lstm, rnn = judge(points["lstm tanh"]), judge(points["rnn tanh"])
    assert (
        "Test MSE 0.005 ± 0.001 (over 3 seeds; always answering 1: 0.167): it beat the baseline."
    ) in lstm.sentences
    assert "no-learning" not in lstm.kinds
    assert (
        "Test MSE 0.167 ± 0.001 (over 3 seeds; always answering 1: 0.167): no better than the "
        "baseline, it did not learn."
    ) in rnn.sentences
    assert rnn.kinds[0] == "vanishing-through-time" and "no-learning" in rnn.kinds
    assert "--length" not in rnn.cure  # a shorter adding problem is another task, no cure
    for found in (lstm, rnn):
        text = " ".join(found.sentences)
        assert "accuracy" not in text and "nan" not in text and "chance" not in text


def test_a_loss_above_the_baseline_is_worse_and_one_far_above_blew_up(tmp_path):
    worse = write_recurrent_run(tmp_path / "worse", test_loss=0.2, **ADDING)
    (point,) = report.build_report([worse], figures=False).points
    assert "worse than the baseline, it did not learn." in " ".join(judge(point).sentences)
    # A fresh network answering 0 scores 1 + 1/6, 7x the baseline: not a blow-up; 100x is.
    fresh = write_recurrent_run(tmp_path / "fresh", test_loss=1.17, **ADDING)
    (point,) = report.build_report([fresh], figures=False).points
    assert "training-blow-up" not in judge(point).kinds
    huge = write_recurrent_run(tmp_path / "huge", test_loss=20.0, **ADDING)
    (point,) = report.build_report([huge], figures=False).points
    found = judge(point)
    assert found.headline == (
        "Blew up: the final test loss is 20, far above the baseline's 0.167 (always answering "
        "1): the updates exploded at lr 0.001."
    )
    rows = records.read_metrics(huge)
    config = records.read_json(huge / records.CONFIG)
    assert live_headline(rows, config).startswith(
        "Blew up: by step 600 the loss is 20, far above the baseline's 0.167. "
    )
    rows = records.read_metrics(fresh)
    assert not live_headline(rows, config).startswith("Blew up")


def test_lower_is_better_in_the_gap_tests(adding):
    """Activations are compared at one setting (the RNN's tanh and relu), gated cells in the
    cure section: the relu RNN's lower MSE is the better."""
    built = report.build_report([adding], figures=False)
    (gap,) = built.gaps
    assert (gap.better.activation.name, gap.worse.activation.name) == ("relu", "tanh")
    assert gap.difference == pytest.approx(sum(RNN) / 3 - sum(RELU) / 3)
    p = scipy_stats.ttest_rel(RELU, RNN).pvalue
    assert gap.p == pytest.approx(p) and gap.t == pytest.approx(
        scipy_stats.ttest_rel(RELU, RNN).statistic
    )
    assert built.verdicts[0] == (
        "1 of the 1 test MSE gaps between two activations at the same setting are larger than "
        "the seed spread (p below 0.05), listed below; 0 are within it: not significant."
    )
    from vanishing.reporting import diagnosis

    assert diagnosis.verdict(gap) == (
        "The test MSE gap between RNN (ReLU) and RNN (Tanh) (0.1) is larger than the seed "
        f"spread: significant at 3 seeds (paired t-test, p = {p:.2g})."
    )


def test_the_tables_show_the_mse_and_the_baseline(adding, tmp_path):
    runs, notes = loading.load_runs([adding])
    assert notes == []
    rows = summary.summary_rows(runs)
    lines = summary.format_summary(rows).splitlines()
    assert lines[0].split()[:5] == ["activation", "test", "MSE", "baseline", "(always"]
    table = {line.split("  ")[0]: " ".join(line.split()) for line in lines[2:]}
    assert table["LSTM, forget-gate bias 1"] == (
        "LSTM, forget-gate bias 1 0.0050 ± 0.0010 0.167 (beaten) 1.0 1.00e+00 - 0.0"
    )
    assert table["RNN (Tanh)"] == "RNN (Tanh) 0.1670 ± 0.0010 0.167 (not beaten) 1.0 1.00e+00 - 0.0"
    assert table["RNN (ReLU)"] == "RNN (ReLU) 0.0667 ± 0.0153 0.167 (beaten) 1.0 1.00e+00 0.0 -"
    path = tmp_path / "summary.csv"
    summary.write_summary_csv(path, rows)
    written = read_csv(path)
    assert list(written[0])[:8] == [
        "activation",
        "setting",
        "runs",
        "diverged",
        "test_accuracy_mean",
        "test_accuracy_std",
        "test_loss_mean",
        "baseline_loss",
    ]
    lstm, rnn = sorted(
        (row for row in written if row["activation"] == "tanh"),
        key=lambda row: float(row["test_loss_mean"]),
    )
    assert (lstm["setting"], rnn["setting"]) == ("forget-gate bias 1", "")
    assert lstm["test_accuracy_mean"] == "" and float(lstm["test_loss_mean"]) == pytest.approx(
        0.005
    )
    assert float(lstm["baseline_loss"]) == pytest.approx(BASELINE)
    assert (lstm["beat_baseline"], rnn["beat_baseline"]) == ("True", "False")

    out = tmp_path / "tables"
    out.mkdir()
    summary.tabulate(out, [run.path for run in runs])
    by_run = {row["run_dir"]: row for row in read_csv(out / "runs.csv")}
    assert by_run["lstm-seed0"]["test_accuracy"] == ""
    assert float(by_run["lstm-seed0"]["baseline_loss"]) == pytest.approx(BASELINE)
    points = {(row["arch"], row["activation"]): row for row in read_csv(out / "points.csv")}
    assert float(points["lstm", "tanh"]["test_loss_mean"]) == pytest.approx(0.005)
    assert float(points["rnn", "tanh"]["baseline_loss_mean"]) == pytest.approx(BASELINE)
    (pair,) = read_csv(out / "pairs.csv")
    losses = {"tanh": RNN, "relu": RELU}
    a, b = losses[pair["a"]], losses[pair["b"]]
    assert float(pair["mean_difference"]) == pytest.approx(sum(a) / 3 - sum(b) / 3)
    assert float(pair["t"]) == pytest.approx(scipy_stats.ttest_rel(a, b).statistic)


def test_the_page_reads_mse_where_it_reads_accuracy(adding):
    built = report.build_report([adding])
    page, markdown = report.render_html(built), report.render_markdown(built)
    images = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]*")
    for text in (images.sub("", page), markdown):
        assert "nan" not in text
        assert "test MSE" in text and "always answering 1" in text
    assert "<th>test MSE</th><th>baseline (always 1)</th>" in page
    assert "<td>MSE 0.0040</td>" in page  # the run list
    assert "on the adding problem, T = 100" in page
    learning = [b for b in built.figures if b.anchor.startswith("learning")]
    assert learning and learning[0].question.startswith("Does the network learn, and how fast?")
    figure = plots.learning_curves([g for g in built.points if g.runs[0].config["arch"] == "rnn"])
    assert figure is not None
    score_axes = figure.axes[0]
    assert score_axes.get_ylabel() == "test MSE"
    dotted = [line for line in score_axes.get_lines() if line.get_linestyle() == ":"]
    assert [line.get_ydata()[0] for line in dotted] == pytest.approx([BASELINE, BASELINE])


def test_the_report_command_on_a_regression(adding):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert main(["report", str(adding)]) == 0
    assert err.getvalue() == ""
    assert (adding / "report.html").is_file() and (adding / "report.md").is_file()
