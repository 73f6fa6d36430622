"""The report from records the tests write themselves: figures, table, diagnosis, escaping, CLI;
and a sweep over depth: figures against depth, where each activation stops learning, t-tests."""

from __future__ import annotations

import base64
import math
from html.parser import HTMLParser
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from vanishing import records, stats
from vanishing import reporting as report
from vanishing.frontends.cli import main
from vanishing.reporting import loading, summary

HIDDEN = [8, 6, 4]  # three hidden layers: four Linear layers, the output layer is layer 4
STEPS_PER_EPOCH = 15
# Layer-1 gradient per seed, times the base: geometric mean 1, so the mean ratio is the base's.
SEED_FACTORS = (1.0, 2.0, 0.5)
GRAD_NORMS_INIT = {
    "sigmoid": [3e-5, 1e-3, 1e-2, 0.1],  # layer 1 / output = 3e-4: vanishing
    "relu": [0.02, 0.018, 0.015, 0.012],  # 1.67: none
    "leaky_relu": [0.02, 0.018, 0.015, 0.012],
    "prelu": [0.02, 0.018, 0.015, 0.012],
    "tanh": [0.01, 0.02, 0.04, 0.08],
    "linear": [0.05, 0.05, 0.05, 0.05],
}
RELU_DEAD = [[0.0, 0.05, 0.2], [0.0, 0.1, 0.31]]  # whole training set after epochs 1 and 2


def write_run(
    run_dir: Path,
    activation: str,
    seed: int,
    accuracy: float,
    epochs: int = 2,
    finished: bool = True,
    diverged: bool = False,
) -> Path:
    """A run directory with plausible config.json, metrics.jsonl and (if finished) result.json."""
    run_dir.mkdir(parents=True)
    config = {
        "activation": activation,
        "hidden": HIDDEN,
        "init": "default",
        "optimizer": "adam",
        "lr": 0.001,
        "momentum": 0.0,
        "batch_size": 64,
        "epochs": epochs,
        "seed": seed,
        "dataset": "mnist",
        "negative_slope": 0.01,
        "prelu_mode": "layer",
        "probe_every": 10,
        "probe_size": 64,
        "device": "auto",
    }
    records.write_json(run_dir / records.CONFIG, config)
    relu = activation == "relu"  # the only one of our fixtures with dead units
    init = list(GRAD_NORMS_INIT[activation])
    init[0] *= SEED_FACTORS[seed % 3]
    final = [0.05, 0.04, 0.05, 0.1]
    writer = records.MetricsWriter(run_dir / records.METRICS)
    history = []
    for step in range(0, epochs * STEPS_PER_EPOCH, 10):
        progress = step / (epochs * STEPS_PER_EPOCH)
        norms = [a + (b - a) * progress for a, b in zip(init, final, strict=True)]
        if diverged and step > 0:
            norms = [math.inf] * 4  # written as null
        row = {
            "kind": "probe",
            "step": step,
            "epoch": step // STEPS_PER_EPOCH + 1,
            "loss": 2.3 - progress,
            "grad_norms": norms,
            "vanishing_ratio": norms[0] / norms[-1],
            "signal_norms": [n / 10 for n in norms[:3]],
            "activation_mean": [0.5, 0.4, 0.3],
            "activation_std": [0.1, 0.2, 0.3],
            "activation_histogram": [
                {"edges": [-w, 0.0, w], "counts": [20, 44]} for w in (1.0, 1 + progress, 2.0)
            ],
            "saturated_fraction": [0.1 * progress, 0.2 * progress, 0.4 * progress],
            "dead_fraction": [0.0, 0.1 * progress, 0.3 * progress] if relu else [0.0] * 3,
            "update_ratio": [0.01] * 4,
        }
        if activation == "prelu":
            row["prelu_slopes"] = [0.25 - 0.1 * progress, 0.25, 0.25 + 0.05 * progress]
        writer.write(row)
        if step // STEPS_PER_EPOCH != (step + 10) // STEPS_PER_EPOCH:
            epoch = step // STEPS_PER_EPOCH + 1
            dead = RELU_DEAD[epoch - 1] if relu else [0.0] * 3
            entry = {
                "epoch": epoch,
                "train_loss": 0.5 / epoch,
                "test_loss": math.nan if diverged else 0.4 / epoch,
                "test_accuracy": accuracy - 0.01 * (epochs - epoch),
                "train_seconds": 1.5,
                "eval_seconds": 0.1,
                "dead_fraction": dead,
            }
            writer.write({"kind": "epoch", "step": epoch * STEPS_PER_EPOCH, **entry})
            history.append(entry)
    writer.close()
    if not finished:
        with open(run_dir / records.METRICS, "a") as f:
            f.write('{"kind": "probe", "st')  # a run killed mid-line
        return run_dir
    records.write_json(
        run_dir / records.RESULT,
        {
            "status": "diverged" if diverged else "ok",
            "test_accuracy": math.nan if diverged else accuracy,
            "test_loss": math.nan if diverged else 0.4 / epochs,
            "history": history,
            "grad_norms_init": init,
            "vanishing_ratio_init": init[0] / init[-1],
            "signal_norms_init": [n / 10 for n in init[:3]],
            "grad_norms_final": [math.inf] * 4 if diverged else final,
            "saturated_fraction": [0.1, 0.2, 0.4],
            "dead_fraction": RELU_DEAD[-1] if relu else [0.0] * 3,
            "steps": epochs * STEPS_PER_EPOCH,
            "train_seconds": 1.5 * epochs,
            "eval_seconds": 0.2,
            "probe_seconds": 0.05,
            "device": "cpu",
            "versions": {"vanishing": "0.1.0"},
            "config": config,
            "diverged_step": 10 if diverged else None,
            "error": None,
            "run_dir": str(run_dir),
        },
    )
    return run_dir


ACCURACIES = {
    "sigmoid": [0.950, 0.951, 0.949],
    "relu": [0.980, 0.981, 0.979],
    "prelu": [0.982, 0.980, 0.984],
}


def make_sweep(root: Path, accuracies: dict[str, list[float]] = ACCURACIES) -> Path:
    """One run directory per activation and seed under `root`, as `vanishing compare` lays out."""
    for activation, values in accuracies.items():
        for seed, accuracy in enumerate(values):
            write_run(root / f"{activation}-seed{seed}", activation, seed, accuracy)
    return root


class Page(HTMLParser):
    """Collects tags with their attributes, and the text of figure captions and table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.captions: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.stack.append(tag)

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop() != tag:
            pass

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "figcaption":
            self.captions.append(data)


QUESTIONS = [
    "How much gradient reaches each layer?",
    "How far does each step move each layer's weights?",
    "Where and when is the gradient small during training?",
    "Does the network learn, and how fast?",
    "Do units saturate or die?",
    "How are each layer's activations distributed?",
    "Which negative slope does PReLU learn?",
    "What does each activation do to the gradient?",
    "Does the slope bound predict the measured attenuation?",
]


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory) -> tuple[Path, str, str]:
    """A sweep, three activations x three seeds plus the awkward cases (a diverged run beside a
    finished one, an activation whose only run diverged, a linear run), reported by the CLI."""
    root = make_sweep(tmp_path_factory.mktemp("sweep"))
    write_run(root / "leaky_relu-seed0", "leaky_relu", 0, 0.97)
    write_run(root / "leaky_relu-seed1", "leaky_relu", 1, 0.0, diverged=True)
    write_run(root / "tanh-seed0", "tanh", 0, 0.0, diverged=True)
    write_run(root / "linear-seed0", "linear", 0, 0.92)
    out = root / "site" / "page.html"
    assert main(["report", str(root), "--out", str(out)]) == 0
    return root, out.read_text(), out.with_suffix(".md").read_text()


def test_report_has_every_figure_the_table_and_nothing_remote(sweep_report):
    _, page, _ = sweep_report
    parsed = Page()
    parsed.feed(page)
    images = [attrs for tag, attrs in parsed.tags if tag == "img"]
    assert [img["alt"] for img in images] == QUESTIONS
    for img in images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        assert base64.b64decode(img["src"][len(prefix) :])[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(parsed.captions) == len(QUESTIONS)
    assert "sigmoid's slope never exceeds 1/4" in " ".join(parsed.captions)
    # Offline: no script, stylesheet link or frame, and no address in any attribute.
    assert not {tag for tag, _ in parsed.tags} & {"script", "link", "iframe", "object", "embed"}
    for tag, attrs in parsed.tags:
        for name, value in attrs.items():
            if name in ("src", "href", "srcset", "action", "data"):
                assert value.startswith(("data:", "#")), (tag, name, value[:80])
    assert "http://" not in page and "https://" not in page and "url(" not in page
    table = page[page.index('<table class="summary">') : page.index("</table>")]
    for label, accuracy in (("Sigmoid", "95.00 ± 0.10"), ("ReLU", "98.00 ± 0.10")):
        assert f"<td>{label}</td>" in table and f"<td>{accuracy}</td>" in table
    assert "<td>97.00 (1 diverged)</td>" in table
    assert "<td>Tanh</td><td>1</td><td>– (1 diverged)</td>" in table


def test_markdown_has_the_table_diagnosis_and_explanation(sweep_report):
    _, _, markdown = sweep_report
    assert "| activation | runs | test acc (%) |" in markdown
    assert "| Sigmoid | 3 | 95.00 ± 0.10 |" in markdown
    assert (
        "- Vanishing gradient: the back-propagated signal shrinks 330-fold from layer 3" in markdown
    )
    assert "## Why gradients vanish" in markdown and "page.html" in markdown


def test_vanishing_and_dead_unit_sentences_quote_the_records(tmp_path):
    built = report.build_report([make_sweep(tmp_path)], figures=False)
    by_label = {g.label: d for g, d in zip(built.points, built.diagnoses, strict=True)}
    sigmoid, relu = " ".join(by_label["Sigmoid"]), " ".join(by_label["ReLU"])
    ratio = math.exp(sum(math.log(3e-4 * f) for f in SEED_FACTORS) / 3)
    assert f"{ratio:.1e}" == "3.0e-04"
    # The signal at layer 1 over layer 3's: 3e-6 * seed factor / 1e-3, geometric mean 3e-3.
    # Over the 2 steps from layer 3 to layer 1: sqrt(3e-3) = 0.05 per layer.
    assert by_label["Sigmoid"][0] == (
        "Vanishing gradient: the back-propagated signal shrinks 330-fold from layer 3 to layer 1 "
        "(0.05 per layer)."
    )
    assert "(0.25)^3 = 0.0156" in sigmoid
    assert "40 % of layer-3 activations are saturated" in sigmoid
    assert by_label["Sigmoid"][-1].startswith(
        "Cure: batch norm, residual connections or a rectifier"
    )
    # ReLU's signal: 2e-3 at layer 1 over 1.5e-3 at layer 3; the gradient's fate heads the
    # verdict, its dead units come next.
    assert by_label["ReLU"][0].startswith(
        "Healthy gradient: the back-propagated signal keeps its size from layer 3 to layer 1 (×1.33"
    )
    assert by_label["ReLU"][1].startswith(
        "Dead units: 31 % of layer-3 units are dead after epoch 2"
    )
    assert "31 % of layer-3 units are dead after epoch 2" in relu
    assert "After epoch 1 it was 20 %." in relu
    # The table row is the compare summary's (summary.summary_rows), fed with the same records.
    row = built.rows[[g.label for g in built.points].index("Sigmoid")]
    assert row["vanishing_ratio_init"] == pytest.approx(ratio)
    assert row["test_accuracy_mean"] == pytest.approx(0.95)


def test_thresholds_decide_the_verdict(tmp_path):
    root = tmp_path / "s"
    write_run(root / "sigmoid-seed0", "sigmoid", 0, 0.9)
    lenient = report.Thresholds(signal_vanishing=1e-3)
    (point,) = report.build_report([root], figures=False).points
    assert report.diagnose(point)[0].startswith("Vanishing gradient: the back-propagated signal ")
    assert report.diagnose(point, lenient)[0] == (
        "Attenuated gradient: the back-propagated signal shrinks 330-fold from layer 3 to layer 1 "
        "(0.05 per layer)."
    )


@pytest.mark.parametrize(
    "best, other, paired, verdict",
    [
        ([0.981, 0.980, 0.979], [0.905, 0.895, 0.900], True, "is larger than the seed spread: "),
        ([0.980, 0.975, 0.985], [0.978, 0.983, 0.973], True, "is within the seed spread: not "),
        ([0.981, 0.980, 0.979], [0.900, 0.905], False, "is larger than the seed spread: "),
    ],
    ids=["clear-gap", "overlap", "other-seeds"],
)
def test_significance_pairs_shared_seeds_else_welch(tmp_path, best, other, paired, verdict):
    root = make_sweep(tmp_path, {"relu": best, "sigmoid": other})
    (sentence,) = report.build_report([root], figures=False).verdicts
    gap = 100 * (sum(best) / len(best) - sum(other) / len(other))
    if paired:  # seeds 0, 1, 2 on both sides
        p = stats.paired_test(best, other).p
        test, seeds = "paired t-test", "3 seeds"
    else:  # seeds 0, 1, 2 against 0, 1: Welch's t-test, as scipy computes it
        p = scipy_stats.ttest_ind(best, other, equal_var=False).pvalue
        test, seeds = "Welch's t-test", "3 and 2 seeds"
    assert sentence.startswith(f"The accuracy gap between ReLU and Sigmoid ({gap:.2f} points) ")
    assert verdict in sentence
    assert f"significant at {seeds} ({test}, p = {p:.2g})." in sentence
    assert (p < stats.ALPHA) == ("not significant" not in sentence)


def test_one_seed_cannot_be_judged(tmp_path):
    root = make_sweep(tmp_path, {"relu": [0.98], "sigmoid": [0.90]})
    (sentence,) = report.build_report([root], figures=False).verdicts
    assert sentence.endswith(
        "cannot be judged: one seed: no spread to compare with, run --seeds 0,1,2."
    )


def test_record_strings_are_escaped(tmp_path):
    evil = tmp_path / "<script>alert(1)</script>"
    write_run(evil / "relu-seed0", "relu", 0, 0.97)
    built = report.build_report([evil], figures=False)
    page, markdown = report.render_html(built), report.render_markdown(built)
    assert "<script" not in page and "<script" not in markdown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown


def test_unfinished_runs_are_listed_not_fatal(tmp_path):
    make_sweep(tmp_path / "sweep", {"relu": [0.98]})
    write_run(tmp_path / "sweep" / "sigmoid-seed0", "sigmoid", 0, 0.9, finished=False)
    built = report.build_report([tmp_path / "sweep"], figures=False)
    assert [g.label for g in built.points] == ["ReLU"]
    assert any("1 run(s) have not finished" in note for note in built.notes)
    assert "unfinished (2 of 2 epochs recorded)" in report.render_html(built)

    only = tmp_path / "only"
    write_run(only / "relu-seed0", "relu", 0, 0.9, finished=False)
    html_path, md_path = report.write_report([only])
    assert html_path == only / "report.html" and md_path == only / "report.md"
    assert "No run has finished yet" in html_path.read_text()


def test_the_table_rows_are_computed_from_the_records(tmp_path):
    """The page's table and compare's summary, against a hand computation from result.json."""
    root = make_sweep(tmp_path, {"relu": [0.97, 0.98, 0.96], "sigmoid": [0.9]})
    dead = [[0.0, 0.5, 0.25], [0.125, 0.0, 0.5], [0.0, 0.0, 0.0]]  # per seed, per layer
    for seed, fractions in enumerate(dead):  # each seed its own dead units, loss and time
        path = root / f"relu-seed{seed}" / records.RESULT
        result = records.read_json(path)
        changes = {"dead_fraction": fractions, "test_loss": 0.1 * (seed + 1)}
        records.write_json(path, {**result, **changes, "train_seconds": 2.0 * (seed + 1)})
    built = report.build_report([root], figures=False)
    assert [g.label for g in built.points] == ["Sigmoid", "ReLU"]  # the report's order
    sigmoid, relu = built.rows

    assert (relu["runs"], relu["diverged"]) == (3, 0)
    assert relu["test_accuracy_mean"] == pytest.approx(0.97)
    assert relu["test_accuracy_std"] == pytest.approx(0.01)  # sample std of .97, .98, .96
    assert relu["test_loss_mean"] == pytest.approx(0.2)
    assert relu["seconds_per_epoch"] == pytest.approx(2.0)  # 2, 4 and 6 s over 2 epochs
    # Layer 1 / output at init: 0.02 / 0.012 times each seed's factor; their geometric mean.
    ratios = [0.02 * factor / 0.012 for factor in SEED_FACTORS]
    assert relu["vanishing_ratio_init"] == pytest.approx(math.prod(ratios) ** (1 / 3))
    assert relu["vanishing_ratio_init"] != pytest.approx(sum(ratios) / 3)
    # Dead: per seed the share of all 8 + 6 + 4 units, then the mean over seeds.
    shares = [100 * sum(f * w for f, w in zip(fs, HIDDEN, strict=True)) / 18 for fs in dead]
    assert relu["dead_percent"] == pytest.approx(sum(shares) / 3)  # 25 %, 13.9 %, 0 %
    assert summary.summary_cells(relu) == [
        "ReLU",
        "97.00 ± 1.00",
        "0.2000",
        "2.0",
        "1.67e+00",
        f"{sum(shares) / 3:.1f}",
        "-",
    ]
    assert sigmoid["test_accuracy_mean"] == pytest.approx(0.9)
    assert math.isnan(sigmoid["test_accuracy_std"])  # one run has no spread
    assert sigmoid["vanishing_ratio_init"] == pytest.approx(3e-5 / 0.1)
    assert sigmoid["saturated_percent"] == pytest.approx(100 * (0.1 * 8 + 0.2 * 6 + 0.4 * 4) / 18)

    # compare's summary: the same points and numbers, in the order the runs come.
    runs, _ = loading.load_runs(
        [*(root / f"relu-seed{s}" for s in range(3)), root / "sigmoid-seed0"]
    )
    first, second = summary.summary_rows(runs)
    assert (first["label"], second["label"]) == ("ReLU", "Sigmoid")
    for key in ("test_accuracy_std", "test_loss_mean", "vanishing_ratio_init", "dead_percent"):
        assert first[key] == pytest.approx(relu[key]), key


def test_cli_default_out_is_the_first_directory(tmp_path, capsys):
    root = make_sweep(tmp_path / "one", {"sigmoid": [0.9]})
    assert main(["report", str(root), str(root)]) == 0
    assert (root / "report.html").is_file() and (root / "report.md").is_file()
    assert f"report in {root / 'report.html'}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "no such directory: "),
        (lambda p: p, "no run directories (with config.json) under "),
    ],
    ids=["missing", "empty"],
)
def test_cli_without_runs_exits_2_with_one_line(tmp_path, capsys, make, message):
    code = main(["report", str(make(tmp_path)), "--out", str(tmp_path / "r.html")])
    stderr = capsys.readouterr().err
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1
    assert stderr.startswith(f"vanishing report: error: {message}")
    assert not (tmp_path / "r.html").exists()


DEPTHS = (2, 5, 10)
# Test accuracy per activation, depth and seed 0, 1, 2: sigmoid collapses to the share of the
# most common digit at depth 10, tanh and relu train at every depth.
DEPTH_ACCURACIES = {
    "sigmoid": {2: [0.950, 0.952, 0.948], 5: [0.900, 0.910, 0.890], 10: [0.1135, 0.1135, 0.1135]},
    "tanh": {2: [0.960, 0.962, 0.958], 5: [0.977, 0.979, 0.975], 10: [0.930, 0.935, 0.925]},
    "relu": {2: [0.980, 0.981, 0.979], 5: [0.978, 0.976, 0.980], 10: [0.975, 0.977, 0.973]},
}
SLOPE = {"sigmoid": 0.25, "tanh": 0.8, "relu": 0.97}  # per-layer gradient factor at init


def write_depth_run(root: Path, activation: str, depth: int, seed: int, accuracy: float) -> None:
    """A finished run of a depth sweep: `depth` hidden layers of 8 units, gradients at init
    shrinking by SLOPE[activation] per layer towards the input."""
    run_dir = root / f"{activation}-d{depth}w8-s{seed}"
    run_dir.mkdir(parents=True)
    config = {
        "activation": activation,
        "hidden": [8] * depth,
        "init": "default",
        "optimizer": "adam",
        "lr": 0.001,
        "batch_size": 64,
        "epochs": 2,
        "seed": seed,
        "dataset": "mnist",
        "probe_every": 10,
        "probe_size": 64,
    }
    records.write_json(run_dir / records.CONFIG, config)
    layers = depth + 1
    init = [0.1 * SLOPE[activation] ** (layers - i) for i in range(1, layers + 1)]
    final = [0.05] * layers
    health = [min(0.9, 0.02 * depth + 0.01 * i) for i in range(depth)]
    dead = health if activation == "relu" else [0.0] * depth
    saturated = [0.0] * depth if activation == "relu" else health
    writer = records.MetricsWriter(run_dir / records.METRICS)
    history = []
    for step in (0, 10, 20):
        writer.write(
            {
                "kind": "probe",
                "step": step,
                "epoch": step // 15 + 1,
                "grad_norms": init if step == 0 else final,
                "saturated_fraction": saturated,
                "dead_fraction": dead,
            }
        )
    for epoch in (1, 2):
        entry = {
            "epoch": epoch,
            "train_loss": 0.5 / epoch,
            "test_loss": 0.4 / epoch,
            "test_accuracy": accuracy - 0.01 * (2 - epoch),
            "dead_fraction": dead,
        }
        writer.write({"kind": "epoch", "step": 15 * epoch, **entry})
        history.append(entry)
    writer.close()
    records.write_json(
        run_dir / records.RESULT,
        {
            "status": "ok",
            "test_accuracy": accuracy,
            "test_loss": 0.2,
            "history": history,
            "grad_norms_init": init,
            "vanishing_ratio_init": init[0] / init[-1],
            "signal_norms_init": init[:-1],
            "grad_norms_final": final,
            "saturated_fraction": saturated,
            "dead_fraction": dead,
            "steps": 30,
            "train_seconds": 3.0,
            "eval_seconds": 0.2,
            "probe_seconds": 0.05,
            "device": "cpu",
            "versions": {"vanishing": "0.1.0"},
            "config": config,
        },
    )


DEPTH_QUESTIONS = [
    "At which depth does each activation stop learning?",
    "How much gradient reaches layer 1 as the network gets deeper?",
    "Do more units die or saturate as the network gets deeper?",
    "What does each activation do to the gradient?",
]


@pytest.fixture(scope="module")
def depth_report(tmp_path_factory) -> tuple[report.Report, str, str]:
    """3 activations x 3 depths x 3 seeds, one run left unfinished, reported by the CLI."""
    root = tmp_path_factory.mktemp("depth")
    for activation, by_depth in DEPTH_ACCURACIES.items():
        for depth, accuracies in by_depth.items():
            for seed, accuracy in enumerate(accuracies):
                write_depth_run(root, activation, depth, seed, accuracy)
    write_run(root / "relu-d20-s0", "relu", 0, 0.9, finished=False)  # still training
    out = root / "site" / "report.html"
    assert main(["report", str(root), "--out", str(out)]) == 0
    built = report.build_report([root], figures=False)
    return built, out.read_text(), out.with_suffix(".md").read_text()


def test_depth_sweep_draws_depth_figures_and_per_layer_ones_for_two_depths(depth_report):
    _, page, _ = depth_report
    parsed = Page()
    parsed.feed(page)
    alts = [attrs["alt"] for tag, attrs in parsed.tags if tag == "img"]
    assert alts[: len(DEPTH_QUESTIONS)] == DEPTH_QUESTIONS
    per_layer = [q for q in QUESTIONS if q != "What does each activation do to the gradient?"]
    per_layer.remove("Which negative slope does PReLU learn?")  # no PReLU runs
    # write_depth_run's records are an older run's: no activation histogram, so no figure.
    per_layer.remove("How are each layer's activations distributed?")
    # Nor an update ratio: no figure of it, rather than an empty one.
    per_layer.remove("How far does each step move each layer's weights?")
    # The shallowest and the deepest condition only, not depth 5: the page does not grow with the
    # grid.
    assert alts[len(DEPTH_QUESTIONS) :] == [
        f"{question} (depth {depth})" for depth in (2, 10) for question in per_layer
    ]
    assert "Depth 10 only (the deepest setting)." in " ".join(parsed.captions)
    assert len(page) < 1_500_000  # bytes: 14 figures; a real 7 x 5 depth sweep stays < 3 MB
    assert "Vanishing gradients: Sigmoid, Tanh, ReLU on mnist, 2 to 10 hidden layers" in page
    assert "<td>Sigmoid, depth 10</td><td>3</td><td>11.35 ± 0.00</td>" in page
    assert "<details><summary>All 28 runs, 1 unfinished</summary>" in page


def test_stop_depth_sentences(depth_report):
    built, page, markdown = depth_report
    # Chance is 1/10; the best mean is ReLU's at depth 2, 98 %: half way is 54 %.
    (rule,) = built.stop_rules
    assert rule.endswith("(98.00 %, ReLU, depth 2): below 54.00 %.")
    sigmoid, tanh, relu = built.stops
    assert sigmoid == (
        "Sigmoid stops learning at depth 10: mean test accuracy 11.35 %, below 54.00 %; "
        "it trains at depths 2 and 5."
    )
    assert tanh.startswith("Tanh trains at every depth tried (2, 5 and 10): its lowest mean test")
    assert relu.startswith("ReLU trains at every depth tried")
    assert html_text(sigmoid) in page and f"- **{sigmoid}**" in markdown


def html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("'", "&#39;")


def test_paired_gaps_per_condition(depth_report):
    built, page, markdown = depth_report
    gaps = {
        (g.better.activation.name, g.worse.activation.name, g.better.depth): g for g in built.gaps
    }
    assert len(gaps) == 9  # 3 pairs of activations at each of 3 depths
    clear = gaps[("relu", "sigmoid", 10)]
    expected = stats.paired_test(DEPTH_ACCURACIES["relu"][10], DEPTH_ACCURACIES["sigmoid"][10])
    assert clear.test == "paired t-test" and clear.p == pytest.approx(expected.p)
    assert clear.significant and expected.p < stats.ALPHA
    overlap = gaps[("relu", "tanh", 5)]  # differences 0.001, -0.003, 0.005
    expected = stats.paired_test(DEPTH_ACCURACIES["relu"][5], DEPTH_ACCURACIES["tanh"][5])
    assert overlap.p == pytest.approx(expected.p) and expected.p > 0.5
    assert not overlap.significant
    row = f"<tr><td>depth 10</td><td>ReLU</td><td>Sigmoid</td><td>{100 * clear.difference:.2f}</td>"
    table = page[page.index('<table class="gaps">') :]
    table = table[: table.index("</table>")]
    assert row in table
    assert "<td>depth 5</td><td>ReLU</td><td>Tanh</td>" not in table
    significant = sum(g.significant for g in built.gaps)
    assert built.verdicts[0].startswith(f"{significant} of the 9 accuracy gaps between two ")
    assert (
        built.verdicts[1] == "Each gap is judged by a paired t-test on the shared seeds (9 pairs)."
    )
    assert f"| depth 10 | ReLU | Sigmoid | {100 * clear.difference:.2f} | paired | 3 |" in markdown


def test_representative_conditions_keep_the_other_axes():
    def condition(depth: int, init: str) -> report.Condition:
        config = {"activation": "relu", "hidden": [64] * depth, "init": init, "seed": 0}
        return report.condition_of({**config, "optimizer": "adam", "lr": 0.001, "epochs": 2})

    conditions = [condition(d, i) for d in (5, 2, 10) for i in ("kaiming", "default")]
    assert report.representative_conditions(conditions) == [
        condition(2, "default"),
        condition(10, "default"),
    ]
    # No depth axis: the first and the last in order.
    assert report.representative_conditions([condition(2, "xavier"), condition(2, "default")]) == [
        condition(2, "default"),
        condition(2, "xavier"),
    ]


def test_a_gradient_that_underflowed_to_zero_is_named(tmp_path):
    for depth in (2, 30):
        for seed in (0, 1):
            write_depth_run(tmp_path, "sigmoid", depth, seed, 0.9 if depth == 2 else 0.1135)
    for seed in (0, 1):  # float32 cannot hold 0.25^30 of the output layer's gradient
        path = tmp_path / f"sigmoid-d30w8-s{seed}" / records.RESULT
        result = records.read_json(path)
        result["grad_norms_init"][0] = 0.0
        result["vanishing_ratio_init"] = 0.0
        records.write_json(path, result)
    built = report.build_report([tmp_path], figures=False)
    deep = built.points[1]
    assert deep.ratio_underflow and not built.points[0].ratio_underflow
    assert report.summary_cells(built.rows[1])[4] == "0 (underflow)"
    assert math.isnan(built.rows[1]["vanishing_ratio_init"])  # summary.csv: no ratio to average
    assert "layer 1 is exactly 0 at every seed: it underflowed" in " ".join(built.diagnoses[1])
    (series,) = report.depth_series(built.points)
    assert series.ratio()[1] == 0.0  # drawn as a triangle on the bottom edge, not left out
