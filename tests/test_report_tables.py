"""The tables read from records (a compare's summary, a sweep's CSVs), which runs make one grid
point and how conditions are named and ordered, one mark for a missing number in every table, the
page's escaping, and the report package's imports."""

from __future__ import annotations

import csv
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from test_report import make_sweep, write_run
from vanishing import records
from vanishing import reporting as report
from vanishing.measure.definitions import DEFINITIONS
from vanishing.reporting import formats, loading, results, summary
from vanishing.reporting.figures import FigureBlock

RELU = [0.980, 0.981, 0.979]
SIGMOID = [0.950, 0.955, 0.946]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def compared(tmp_path) -> list[Path]:
    """A compare's run directories, in the order it ran them: relu and sigmoid over three seeds,
    and a tanh run that diverged."""
    root = make_sweep(tmp_path / "cmp", {"relu": RELU, "sigmoid": SIGMOID})
    write_run(root / "tanh-seed0", "tanh", 0, 0.0, diverged=True)
    return [root / f"{name}-seed{seed}" for name in ("relu", "sigmoid") for seed in range(3)] + [
        root / "tanh-seed0"
    ]


def test_compare_table_and_summary_csv(compared, tmp_path):
    runs, notes = loading.load_runs(compared)
    assert notes == []
    rows = summary.summary_rows(runs)
    assert [r["activation"] for r in rows] == ["relu", "sigmoid", "tanh"]  # the order they ran

    # By hand: RELU_DEAD after epoch 2 is 0, 10 % and 31 % of 8, 6 and 4 units; every layer-1
    # gradient is scaled by 1, 2 and 1/2 over the seeds, so the geometric mean ratio is the base's.
    lines = summary.format_summary(rows).splitlines()
    assert lines[0].split("  ")[0] == "activation"
    assert lines[1].replace(" ", "").strip("-") == ""
    assert " ".join(lines[2].split()) == "ReLU 98.00 ± 0.10 0.2000 1.5 1.67e+00 10.2 -"
    assert " ".join(lines[3].split()) == "Sigmoid 95.03 ± 0.45 0.2000 1.5 3.00e-04 - 20.0"
    # The diverged run: no accuracy, loss or time; its ratio at init was measured all the same.
    assert " ".join(lines[4].split()) == "Tanh – (1 diverged) – – 1.25e-01 - –"
    assert len({len(line) for line in lines}) == 1  # aligned

    path = tmp_path / "summary.csv"
    summary.write_summary_csv(path, rows)
    written = read_csv(path)
    assert tuple(written[0]) == summary.SUMMARY_FIELDS  # ratio_underflow is the table's only
    relu, sigmoid, tanh = written
    assert float(relu["test_accuracy_mean"]) == pytest.approx(sum(RELU) / 3)
    assert float(relu["test_accuracy_std"]) == pytest.approx(scipy_stats.tstd(RELU))
    assert float(relu["dead_percent"]) == pytest.approx(100 * (0.1 * 6 + 0.31 * 4) / 18)
    assert float(sigmoid["vanishing_ratio_init"]) == pytest.approx(3e-4)
    assert float(sigmoid["saturated_percent"]) == pytest.approx(100 * (0.8 + 1.2 + 1.6) / 18)
    assert (tanh["runs"], tanh["diverged"], tanh["test_accuracy_mean"]) == ("1", "1", "nan")


def test_a_missing_number_reads_the_same_in_every_table(compared):
    built = report.build_report([compared[-1].parent], figures=False)
    page, markdown = report.render_html(built), report.render_markdown(built)
    (row,) = [r for r in summary.summary_rows(built.runs) if r["activation"] == "tanh"]
    text = summary.format_summary([row]).splitlines()[2]
    missing = formats.MISSING
    assert f"{missing} (1 diverged)" in text
    assert f"<td>Tanh</td><td>1</td><td>{missing} (1 diverged)</td><td>{missing}</td>" in page
    assert f"| Tanh | 1 | {missing} (1 diverged) | {missing} | {missing} |" in markdown
    assert "nan" not in text + page + markdown


def test_one_seed_has_no_spread_in_the_summary(tmp_path):
    write_run(tmp_path / "relu-seed0", "relu", 0, 0.97)
    (row,) = summary.summary_rows(loading.load_runs([tmp_path])[0])
    assert row["test_accuracy_mean"] == 0.97 and math.isnan(row["test_accuracy_std"])
    assert summary.summary_cells(row)[1] == "97.00"  # no "±" with one seed


def failed_run(run_dir: Path, config: dict) -> Path:
    """A run that raised, as a sweep records it: result.json only, without a config.json."""
    run_dir.mkdir(parents=True)
    result = {
        "status": "failed",
        "error": "RuntimeError: boom",
        "config": config,
        "test_accuracy": None,
        "test_loss": None,
        "history": [],
        "versions": {},
        "run_dir": str(run_dir),
    }
    records.write_json(run_dir / records.RESULT, result)
    return run_dir


def test_tabulate_writes_runs_points_and_pairs(compared, tmp_path):
    root = compared[0].parent
    config = records.read_json(compared[0] / records.CONFIG)
    failed = failed_run(root / "relu-seed3", {**config, "seed": 3})
    write_run(root / "sigmoid-seed5", "sigmoid", 5, 0.9, finished=False)
    run_dirs = [*compared, failed, root / "sigmoid-seed5"]
    out = tmp_path / "tables"
    out.mkdir()

    rows = summary.tabulate(out, run_dirs)
    written = read_csv(out / "runs.csv")
    assert len(rows) == len(written) == 8  # the unfinished run is left out
    assert [r["run_dir"] for r in written] == [d.name for d in run_dirs[:-1]]
    first = written[0]
    assert (first["activation"], first["hidden"], first["depth"], first["width"]) == (
        "relu",
        "8-6-4",
        "3",
        "",  # widths differ: no single width
    )
    assert (first["status"], first["test_accuracy"], first["epochs_completed"]) == (
        "ok",
        "0.98",
        "2",
    )
    assert float(first["dead_percent"]) == pytest.approx(100 * (0.1 * 6 + 0.31 * 4) / 18)
    lost = written[7]
    assert (lost["status"], lost["error"], lost["test_accuracy"], lost["dead_percent"]) == (
        "failed",
        "RuntimeError: boom",
        "",
        "",
    )

    points = {p["activation"]: p for p in read_csv(out / "points.csv")}
    assert (points["relu"]["runs"], points["relu"]["ok"]) == ("4", "3")  # the failed one counts
    low, high = scipy_stats.t.interval(0.95, 2, loc=sum(RELU) / 3, scale=scipy_stats.sem(RELU))
    assert float(points["relu"]["test_accuracy_ci_low"]) == pytest.approx(low)
    assert float(points["relu"]["test_accuracy_ci_high"]) == pytest.approx(high)
    assert points["tanh"]["ok"] == "0" and points["tanh"]["test_accuracy_mean"] == "nan"

    (pair,) = read_csv(out / "pairs.csv")  # tanh has no finished accuracy to pair
    expected = scipy_stats.ttest_rel(RELU, SIGMOID)
    assert (pair["a"], pair["b"], pair["seeds"], pair["significant"]) == (
        "relu",
        "sigmoid",
        "3",
        "True",
    )
    assert float(pair["p"]) == pytest.approx(expected.pvalue)
    assert float(pair["t"]) == pytest.approx(expected.statistic)


@pytest.mark.parametrize(
    "relu, sigmoid, test, sentence",
    [
        ([0.981, 0.980, 0.979], [0.905, 0.895, 0.900], "paired", "(paired t-test, p = "),
        ([0.981, 0.980, 0.979], [0.900, 0.905], "Welch", "(Welch's t-test, p = "),
        ([0.900, 0.905], [0.981, 0.980, 0.979], "Welch", "(Welch's t-test, p = "),  # b better
        ([0.98], [0.97], "", "cannot be judged: one seed"),
    ],
    ids=["same-seeds", "other-seeds", "other-seeds-b-better", "one-seed"],
)
def test_pairs_csv_uses_the_reports_test(tmp_path, relu, sigmoid, test, sentence):
    root = make_sweep(tmp_path / "runs", {"relu": relu, "sigmoid": sigmoid})
    out = tmp_path / "tables"
    out.mkdir()
    summary.tabulate(out, sorted(root.iterdir()))
    (pair,) = read_csv(out / "pairs.csv")
    (verdict,) = report.build_report([root], figures=False).verdicts
    assert (pair["a"], pair["b"], pair["test"]) == ("relu", "sigmoid", test)
    assert sentence in verdict
    seeds = str(len(relu)) if len(relu) == len(sigmoid) else f"{len(relu)} and {len(sigmoid)}"
    assert pair["seeds"] == seeds
    difference = sum(relu) / len(relu) - sum(sigmoid) / len(sigmoid)  # a's minus b's, signed
    assert float(pair["mean_difference"]) == pytest.approx(difference)
    if test == "paired":
        expected = scipy_stats.ttest_rel(relu, sigmoid)
    elif test == "Welch":
        expected = scipy_stats.ttest_ind(relu, sigmoid, equal_var=False)
    else:
        assert (pair["p"], pair["t"], pair["significant"]) == ("nan", "nan", "False")
        return
    assert float(pair["p"]) == pytest.approx(expected.pvalue)
    assert float(pair["t"]) == pytest.approx(expected.statistic)
    assert f"p = {expected.pvalue:.2g})" in verdict
    assert pair["significant"] == str(bool(expected.pvalue < 0.05))


def configure(run_dir: Path, **changes) -> Path:
    """Change a written run's config, in config.json and in result.json's copy, as a run with
    those settings would have written it."""
    config = {**records.read_json(run_dir / records.CONFIG), **changes}
    records.write_json(run_dir / records.CONFIG, config)
    result = records.read_json(run_dir / records.RESULT)
    records.write_json(run_dir / records.RESULT, {**result, "config": config})
    return run_dir


# Accuracy per activation and seed 0, 1, 2 at each of two values of a setting; the second value
# is 1 point better, so points that mixed the two would average them.
BY_VALUE = {"relu": [0.980, 0.981, 0.979], "sigmoid": [0.950, 0.955, 0.946]}


def sweep_over(root: Path, key: str, values: tuple) -> list[Path]:
    """Run directories of ReLU and Sigmoid over three seeds at each value of one config key."""
    return [
        configure(
            write_run(root / f"{name}-{i}-s{seed}", name, seed, accuracy + i / 100), **{key: value}
        )
        for i, value in enumerate(values)
        for name, accuracies in BY_VALUE.items()
        for seed, accuracy in enumerate(accuracies)
    ]


@pytest.mark.parametrize(
    "key, values, words, setup",
    [
        ("momentum", (0.0, 0.9), ["momentum 0", "momentum 0.9"], "momentum 0/0.9"),
        # A key the report has never heard of, as the next setting of the config will write it.
        (
            "weight_decay",
            (0.0, 0.01),
            ["weight decay 0", "weight decay 0.01"],
            "weight decay 0/0.01",
        ),
    ],
    ids=["momentum", "new-key"],
)
def test_runs_that_differ_in_any_config_key_are_two_points(tmp_path, key, values, words, setup):
    run_dirs = sweep_over(tmp_path / "runs", key, values)
    out = tmp_path / "tables"
    out.mkdir()
    summary.tabulate(out, run_dirs)

    points = read_csv(out / "points.csv")
    # The old columns first, in their old order; then the other config keys as config.json has
    # them (a new key last), seed and device left out; then the numbers.
    others = ["momentum", "negative_slope", "prelu_mode", "probe_every", "probe_size"]
    others += [] if key in others else [key]
    keys = [*report.LEADING_KEYS, *others]
    assert list(points[0])[: len(keys) + 2] == [*keys, "depth", "runs"]
    assert len(points) == 4  # two activations at each of two values
    for i, value in enumerate(values):
        for activation, accuracies in BY_VALUE.items():
            (point,) = [p for p in points if p["activation"] == activation and p[key] == str(value)]
            assert point["runs"] == "3"
            mean = sum(accuracies) / 3 + i / 100
            assert float(point["test_accuracy_mean"]) == pytest.approx(mean)

    pairs = read_csv(out / "pairs.csv")
    assert list(pairs[0])[: len(keys)] == [*(k for k in keys if k != "activation"), "a"]
    assert [(p["a"], p["b"], p[key], p["seeds"], p["test"]) for p in pairs] == [
        ("relu", "sigmoid", str(value), "3", "paired") for value in values
    ]

    # The report: two conditions, each named by its value; activations in registry order.
    built = report.build_report([tmp_path / "runs"], figures=False)
    assert built.conditions == 2
    labels = [f"{name}, {word}" for name in ("Sigmoid", "ReLU") for word in words]
    assert [g.label for g in built.points] == labels
    assert [gap.better.condition_label for gap in built.gaps] == words
    # pairs.csv holds the report's gaps: the same test and p-value, pair by pair.
    assert [float(p["p"]) for p in pairs] == [pytest.approx(gap.p) for gap in built.gaps]

    # compare's summary over the same runs: a row per point, named as the report names it.
    rows = summary.summary_rows(loading.load_runs(run_dirs)[0])
    assert [row["label"] for row in rows] == [
        f"{n}, {w}" for w in words for n in ("ReLU", "Sigmoid")
    ]
    assert [line.split("  ")[0] for line in summary.format_summary(rows).splitlines()[2:]] == [
        row["label"] for row in rows
    ]
    summary.write_summary_csv(tmp_path / "summary.csv", rows)
    written = read_csv(tmp_path / "summary.csv")
    assert list(written[0])[:3] == ["activation", "setting", "runs"]
    assert [(r["activation"], r["setting"], r["runs"]) for r in written] == [
        (name, word, "3") for word in words for name in ("relu", "sigmoid")
    ]
    markdown = report.render_markdown(built)
    for label in labels:
        assert f"| {label} | 3 |" in markdown
    assert f", {setup}; seeds 0, 1, 2" in markdown  # the setup line names the axis


def test_runs_that_differ_in_seed_and_device_only_are_one_point(tmp_path):
    root = make_sweep(tmp_path / "runs", {"relu": RELU})
    run_dirs = [
        configure(root / f"relu-seed{seed}", device=device)
        for seed, device in enumerate(("cpu", "cuda", "auto"))
    ]
    out = tmp_path / "tables"
    out.mkdir()
    summary.tabulate(out, run_dirs)
    (point,) = read_csv(out / "points.csv")
    assert point["runs"] == "3" and "seed" not in point and "device" not in point
    assert float(point["test_accuracy_mean"]) == pytest.approx(sum(RELU) / 3)
    built = report.build_report([root], figures=False)
    assert built.conditions == 1 and [g.label for g in built.points] == ["ReLU"]
    assert len(built.points[0].runs) == 3


@pytest.mark.parametrize(
    "key, values, names",
    [
        ("lr", (0.1, 0.001), ["lr 0.1", "lr 0.001"]),  # a key with a word of its own
        ("negative_slope", (0.01, 0.2), ["negative slope 0.01", "negative slope 0.2"]),
        ("residual", (False, True), ["", "residual"]),  # a cure left off is not named
        ("clip_grad_norm", (None, 1.0), ["", "clip grad norm 1"]),
        ("norm", ("none", "layer"), ["", "norm layer"]),
    ],
)
def test_a_condition_is_named_by_what_differs(key, values, names):
    conditions = [
        report.condition_of(
            {"activation": "relu", "hidden": [8], "seed": 0, "init": "default", key: v}
        )
        for v in values
    ]
    describe = results.namer([results.axes_of(s) for s in conditions])
    assert [describe(results.axes_of(s)) for s in conditions] == names


def test_conditions_sort_by_depth_then_the_old_keys_then_any_other_by_name():
    def condition(depth: int, lr: float, momentum: float, **more) -> report.Condition:
        config = {"activation": "relu", "hidden": [8] * depth, "lr": lr, "momentum": momentum}
        return report.condition_of({**config, "seed": 0, **more})

    expected = [
        condition(2, 0.001, 0.9),
        condition(2, 0.1, 0.0),
        condition(2, 0.1, 0.9),
        condition(2, 0.1, 0.9, norm="batch"),  # a key only some records have: still comparable
        condition(5, 0.001, 0.0),
    ]
    shuffled = [expected[i] for i in (4, 2, 0, 3, 1)]
    assert sorted(shuffled, key=results.condition_order) == expected
    # The same condition, however config.json is ordered.
    assert condition(2, 0.1, 0.9) == report.condition_of(
        {"momentum": 0.9, "seed": 1, "lr": 0.1, "hidden": [8, 8], "device": "cpu"}
    )


def test_attributes_and_markdown_tables_are_escaped(tmp_path):
    odd = tmp_path / 'a"b|c'
    write_run(odd / "relu-seed0", "relu", 0, 0.97)
    evil = '"><script>alert(1)</script>'
    built = report.build_report([odd], figures=False)
    block = FigureBlock(evil, evil, evil, b"\x89PNG", section=(evil, evil))
    page = report.render_html(dataclasses.replace(built, figures=[block]))
    markdown = report.render_markdown(built)
    assert "<script" not in page and 'id=""><' not in page
    assert 'id="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page
    assert "<code>" + str(odd).replace('"', "&#34;") + "</code>" in page
    assert "| " + str(odd).replace("|", "\\|") + "/relu-seed0 | ReLU | 0 | ok |" in markdown


def test_the_page_quotes_every_definition(tmp_path):
    write_run(tmp_path / "relu-seed0", "relu", 0, 0.97)
    built = report.build_report([tmp_path], figures=False)
    page = report.render_html(built)
    probe = records.read_metrics(tmp_path / "relu-seed0")[0]
    for name, meaning in DEFINITIONS:
        assert name in probe  # a field the probes write
        assert f"<li><code>{name}</code>: {meaning.replace(chr(39), '&#39;')}</li>" in page


def test_the_report_imports_no_training_module():
    """Presenting reads records only; and a summary table loads neither matplotlib nor jinja2."""
    code = (
        "import sys\n"
        "import vanishing.reporting.summary\n"
        "print(','.join(sorted({'matplotlib', 'jinja2'} & set(sys.modules))))\n"
        "from vanishing.reporting import render\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('vanishing.'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy, modules = done.stdout.splitlines()
    assert heavy == ""
    loaded = {name.removeprefix("vanishing.") for name in modules.split(",")}
    # Nothing that trains, runs, measures a model or fronts a command: records in, pages out.
    upstream = ("training", "executor", "jobs", "frontends", "measure.probes", "measure.watch")
    assert not [m for m in loaded if m.startswith(upstream)], loaded
    assert "reporting.verdict" in loaded  # the check sees the package's dotted names
    wanted = {"reporting.render", "reporting.plots", "reporting.summary", "records", "stats"}
    assert wanted <= loaded
