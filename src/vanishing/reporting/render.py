"""The page in HTML and Markdown, from jinja2 templates (`templates/`): HTML with autoescape on,
so every record string is escaped wherever it appears; Markdown with every value escaped for
Markdown unless it is marked safe (our own prose, tables laid out by `formats`)."""

from __future__ import annotations

import base64
import math
import os
import re
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import jinja2
from markupsafe import Markup

from vanishing import records
from vanishing.errors import UsageError
from vanishing.measure.definitions import DEFINITIONS
from vanishing.model.activations import ACTIVATIONS
from vanishing.reporting.diagnosis import ATTENUATION_HEADER, Gap, attenuation_cells, p_text
from vanishing.reporting.figures import FigureBlock
from vanishing.reporting.formats import MISSING, fixed, markdown, markdown_table
from vanishing.reporting.page import Report, build_report
from vanishing.reporting.ranks import rank_table, ranks_note
from vanishing.reporting.results import (
    REGRESSION,
    Point,
    RunRecords,
    condition_order,
    model_setup,
    task_of,
)
from vanishing.reporting.summary import TABLE_HEADER, is_mixed, summary_cells, summary_header
from vanishing.reporting.verdict import SATURATED, THRESHOLDS, Thresholds, judge
from vanishing.reporting.verdict.time_profile import has_time
from vanishing.settings import naming
from vanishing.settings.config import shown
from vanishing.settings.naming import watched

SUMMARY_HEADER = (TABLE_HEADER[0], "runs", *TABLE_HEADER[1:])
RUN_HEADER = ("directory", "activation", "seed", "status", "test acc (%)", "device")
# Under the summary table, where a row is a regression's.
REGRESSION_NOTE = (
    "Test MSE: the mean squared error on the test set (the adding problem's), mean ± standard "
    "deviation over seeds. Baseline: the test MSE of always answering 1, the targets' mean "
    f"(about 1/6); beaten where the MSE is under {1 - THRESHOLDS.baseline_margin:g} of it."
)
# A recurrent network's steps, as the page explains them where a run has a time profile.
THROUGH_TIME = (
    "Through time it is the same product, step by step: a recurrent layer computes h_t = "
    "f(W_ih x_t + W_hh h_{t-1} + b), so the gradient that reaches step 1 from the loss at step "
    "T is multiplied, once per step, by W_hh and by the slope f'(z_t). Over T steps that is T "
    "factors: a tanh RNN whose W_hh shrinks a vector to 0.57 (PyTorch's init, typically) keeps "
    "0.57^27 = 3e-7 of it over the 28 rows of an image, and nothing measurable over its 784 "
    "pixels (Hochreiter 1991; Bengio, Simard and Frasconi 1994). Where W_hh stretches instead, "
    "the gradient explodes; clipping its norm (Pascanu, Mikolov and Bengio 2013) bounds the step.",
    "An LSTM carries a cell c_t = f_t c_{t-1} + i_t g_t alongside h_t: on the cell's path the "
    "gradient is multiplied by the forget gate f_t alone, which the network can hold near 1, so "
    "it crosses many steps unchanged. PyTorch starts the forget gates at 0.5 (bias 0), which "
    "halves the cell every step; a forget-gate bias of 1 starts them at 0.73 (Jozefowicz et "
    "al. 2015). A GRU's update gate plays the same part. Other cures keep W_hh's scale: an "
    "orthogonal W_hh, or the identity with ReLU (IRNN: Le, Jaitly and Hinton 2015); and a "
    "shorter sequence has fewer steps to cross.",
)
GAP_HEADER = ("setting", "better", "worse", "gap (points)", "test", "seeds", "p")

EXPLANATION = (
    "Back-propagation applies the chain rule: the gradient that reaches layer 1 is the output "
    "layer's gradient multiplied, once per hidden layer, by that layer's weights and by the slope "
    "f'(z) of its activation. With L hidden layers the activations contribute a product of L "
    "slopes, so whatever each slope is, it is raised to the power L.",
    "Sigmoid's slope σ(z)(1 − σ(z)) is at most 1/4 (at z = 0) and almost 0 once |z| > 4, so L "
    "sigmoid layers multiply the gradient by at most (1/4)^L (1/256 for L = 4) unless the weights "
    "make up for it: the first layers receive the least gradient. Tanh reaches slope 1 only at "
    "z = 0 and saturates too.",
    "Whether a small gradient slows learning is the optimizer's part. SGD's step is the learning "
    "rate times the gradient (with momentum, a running sum of them), so a layer whose gradient is "
    "1,000 times smaller moves 1,000 times slower: the first layers learn the slowest. Adam and "
    "RMSprop divide each weight's step by the running size of that weight's own gradient, so "
    "every layer moves by about the learning rate per step whatever its gradient's size, as long "
    "as the gradient stays well above the optimizer's eps (1e-8): the gradient still vanishes, "
    "but the first layers learn. Far deeper, the gradient falls below eps and the steps shrink "
    "with it under Adam too. Each layer's update ratio "
    "||ΔW||/||W||, the size of a step against the weights it moves, shows which holds for a run; "
    "a ratio near 1 means steps that replace the weights instead of adjusting them.",
    "ReLU's slope is exactly 1 wherever a unit is active (z > 0): an active path passes the "
    "gradient on unchanged, so depth costs nothing. For z < 0 its slope is 0, and a unit whose "
    "input is negative for every example gets no gradient ever again: it is dead.",
    "Leaky ReLU keeps a small fixed slope (0.01 by default) for z < 0, so no unit is ever cut off "
    "completely; PReLU learns that slope, per layer or per unit, along with the weights.",
    "A linear activation has slope 1 everywhere, so it takes nothing from the gradient, but a "
    "stack of linear "
    "layers is a single linear map: the network can only draw straight boundaries between "
    "classes, and depth buys nothing. Depth needs a nonlinearity; the point is one whose slope "
    "stays near 1 where the signal is.",
)


def title(report: Report) -> str:
    """'Vanishing gradients: Sigmoid, ReLU on mnist', with the depths when they vary; a
    watched model by its points' labels ('Net (ReLU)'), and its data set only if it said; a
    recurrent network by its cells ('LSTM, RNN (tanh) on adding')."""
    if report.runs and all(watched(r.config) for r in report.runs):
        labels = ", ".join(dict.fromkeys(g.label for g in report.points))
        datasets = sorted({str(r.config["dataset"]) for r in report.runs if "dataset" in r.config})
        where = f" on {', '.join(datasets)}" if datasets else ""
        return f"Vanishing gradients: {labels or 'no finished runs'}{where}"
    labels = ", ".join(dict.fromkeys(naming.title(g.runs[0].config) for g in report.points))
    datasets = sorted({str(r.config.get("dataset", "?")) for r in report.runs})
    depths = sorted({g.depth for g in report.points})
    span = f", {depths[0]} to {depths[-1]} hidden layers" if len(depths) > 1 else ""
    return f"Vanishing gradients: {labels or 'no finished runs'} on {', '.join(datasets)}{span}"


def setup_line(report: Report) -> str:
    """The training setup: the first run's config, or each axis's values for a sweep (and
    those of any other key that varies)."""
    if not report.runs:
        return "No readable runs."
    config = report.runs[0].config
    if watched(config):  # a user's own model: no MLP, no probe settings
        return model_setup(config)
    seeds = sorted({r.config.get("seed") for r in report.runs if r.result is not None}, key=str)
    probes_text = (
        f"seeds {', '.join(map(str, seeds)) or MISSING}; probes every {config.get('probe_every')} "
        f"steps on {config.get('probe_size')} training images."
    )
    if report.conditions <= 1:
        return (
            f"{network(config)}, init {config.get('init')}, {config.get('optimizer')} lr "
            f"{config.get('lr')}, batch {config.get('batch_size')}, epochs "
            f"{config.get('epochs')}, {probes_text}"
        )
    conditions = sorted({g.condition for g in report.points}, key=condition_order)

    def values(key: str) -> str:
        return "/".join(dict.fromkeys(shown(s.get(key)) for s in conditions))

    hiddens = list(dict.fromkeys(s.hidden for s in conditions))
    layer_widths = {w for hidden in hiddens for w in hidden}
    configs = [g.runs[0].config for g in report.points]
    recurrent = any(naming.recurrent(config) for config in configs)
    if recurrent:
        shape = "; ".join(dict.fromkeys(network(config) for config in configs))
    elif len(layer_widths) == 1 and all(len(set(h)) == 1 for h in hiddens):
        depths = ", ".join(str(len(h)) for h in hiddens)
        shape = f"MLPs 784-{layer_widths.pop()}×L-10 with L = {depths} hidden layers"
    else:
        shape = "MLPs " + ", ".join("-".join(map(str, [784, *h, 10])) for h in hiddens)
    # Said above, or in the title (the data set); any other key that varies is named after.
    said: tuple[str, ...] = ("hidden", "dataset", "init", "optimizer", "lr", "batch_size")
    said += ("epochs", *(("arch", "sequence", "length") if recurrent else ()))  # network() says
    others = "".join(
        f", {key.replace('_', ' ')} {values(key)}"
        for key in dict.fromkeys(key for s in conditions for key, _ in s.pairs)
        if key not in said and len({s.get(key) for s in conditions}) > 1
    )
    return (
        f"{shape}; init {values('init')}, {values('optimizer')} lr {values('lr')}, batch "
        f"{values('batch_size')}, epochs {values('epochs')}{others}; {probes_text}"
    )


def network(config: dict[str, Any]) -> str:
    """The network in one phrase: 'MLP 784-520-320-10', 'LSTM 128 over 28 rows of 28 pixels',
    'RNN (tanh) 128-128 on the adding problem, T = 100'."""
    hidden = config.get("hidden") or []
    if not naming.recurrent(config):
        return "MLP " + "-".join(str(w) for w in [784, *hidden, 10])
    widths = "-".join(map(str, hidden))
    length = config.get("length")
    sequences = {
        "rows": "28 rows of 28 pixels",
        "pixels": "784 pixels, one at a time",
        "permuted": "784 pixels in a fixed random order",
    }
    read = (
        f"on the adding problem, T = {length}"
        if length is not None
        else f"over {sequences.get(str(config.get('sequence')), config.get('sequence'))}"
    )
    return f"{naming.title(config)} {widths} {read}"


def sources(report: Report) -> list[str]:
    """The directories given, or for many (a compare passes each run) their common parent."""
    if len(report.sources) <= 3:
        return report.sources
    try:
        parent = os.path.commonpath(report.sources)
    except ValueError:  # relative and absolute mixed
        return report.sources
    return [f"{len(report.sources)} directories under {parent or '.'}"]


def point_cells(point: Point, row: dict[str, Any], mixed: bool = False) -> list[str]:
    """One row of the page's summary table: the point's label, its run count, then the cells
    `vanishing compare` prints (`mixed`: classifications and regressions in one table)."""
    label, *cells = summary_cells(row, point.label, mixed)
    return [label, str(row["runs"]), *cells]


def run_cells(run: RunRecords) -> list[str]:
    """One line of the run list."""
    config = run.config
    epochs = len(run.rows("epoch"))
    if run.result is None:
        status = f"unfinished ({epochs} of {config.get('epochs', '?')} epochs recorded)"
        accuracy = MISSING
    elif task_of(config, run.result) == REGRESSION:
        status = run.status
        loss = run.result.get("test_loss")
        accuracy = "MSE " + fixed(loss if isinstance(loss, (int, float)) else None, 4)
    else:
        status = run.status
        value = run.result.get("test_accuracy")
        accuracy = fixed(100 * value, 2) if value is not None else MISSING
    return [
        str(run.path),
        ACTIVATIONS[config["activation"]].label,
        str(config.get("seed", "?")),
        status,
        accuracy,
        str(run.result.get("device", "?") if run.result else MISSING),
    ]


def gap_cells(gap: Gap) -> list[str]:
    """One row of the table of gaps between activations at one condition."""
    return [
        gap.better.condition_label or MISSING,
        gap.better.activation.label,
        gap.worse.activation.label,
        f"{gap.difference:.3g}" if gap.better.regression else f"{100 * gap.difference:.2f}",
        gap.test_name,
        gap.seeds.removesuffix(" seeds"),
        p_text(gap.p).removeprefix("p = ").removeprefix("p ") if math.isfinite(gap.p) else MISSING,
    ]


def all_gap_cells(gap: Gap) -> list[str]:
    """A gap's row with its verdict."""
    judged = gap.test and math.isfinite(gap.p)
    return [*gap_cells(gap), ("yes" if gap.significant else "no") if judged else "cannot judge"]


def figure_items(report: Report) -> list[tuple[FigureBlock, tuple[str, str] | None]]:
    """Per figure: the block and the (heading, note) of the section it opens (None if it opens
    none)."""
    items: list[tuple[FigureBlock, tuple[str, str] | None]] = []
    section = ("", "")
    for block in report.figures:
        opens = None
        if block.section != section and block.section[0]:
            section = opens = block.section
        items.append((block, opens))
    return items


def context(report: Report) -> dict[str, Any]:
    """What both templates show, as text and table cells."""
    mixed = is_mixed(report.rows)
    header = summary_header(report.rows)
    regression = [task_of(r.config, r.result) == REGRESSION for r in report.runs]
    run_header = RUN_HEADER
    if any(regression):
        score = "test MSE" if all(regression) else "test acc (%) / MSE"
        run_header = (*RUN_HEADER[:4], score, *RUN_HEADER[5:])
    timed = any(has_time(g) for g in report.points)
    gap_header = GAP_HEADER
    if any(g.better.regression for g in report.gaps):  # a regression's gap is in its MSE
        unit = "MSE" if all(g.better.regression for g in report.gaps) else "points or MSE"
        gap_header = (*GAP_HEADER[:3], f"gap ({unit})", *GAP_HEADER[4:])
    return {
        "report": report,
        "title": title(report),
        "setup": setup_line(report),
        "sources": sources(report),
        "sweep": report.conditions > 1,
        "summary": [
            point_cells(g, r, mixed) for g, r in zip(report.points, report.rows, strict=True)
        ],
        "findings": list(zip(report.points, report.diagnoses, strict=True)),
        "significant_gaps": [gap_cells(g) for g in report.gaps if g.significant],
        "all_gaps": [all_gap_cells(g) for g in report.gaps],
        "attenuation": [attenuation_cells(r) for r in report.attenuation],
        "figures": figure_items(report),
        "runs": [run_cells(r) for r in report.runs],
        "ranks": [
            {"label": str(r.path), "table": table, "note": ranks_note(r)}
            for r in report.runs
            if (table := rank_table(r)) is not None
        ],
        "unfinished": sum(r.result is None for r in report.runs),
        "explanation": (*EXPLANATION, *(THROUGH_TIME if timed else ())),
        "regression_note": REGRESSION_NOTE if any(r.get("regression") for r in report.rows) else "",
        "definitions": DEFINITIONS,
        "saturated": SATURATED,
        "headers": {
            "summary": (header[0], "runs", *header[1:]),
            "runs": run_header,
            "gaps": gap_header,
            "all_gaps": (*gap_header, "significant"),
            "attenuation": ATTENUATION_HEADER,
        },
    }


def environment(autoescape: bool) -> jinja2.Environment:
    """The templates' environment: HTML autoescaped, Markdown escaped for Markdown."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("vanishing.reporting", "templates"),
        autoescape=autoescape,  # noqa: S701 - without it (Markdown), `markdown_value` escapes
        finalize=None if autoescape else markdown_value,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,  # a misspelt name is an error, not an empty string
    )


def markdown_value(value: Any) -> Any:
    """Every value printed into Markdown, escaped unless marked safe (Markup)."""
    return value if isinstance(value, Markup) else markdown(value)


def png_data(image: bytes) -> str:
    """A PNG as the address of an <img> that needs nothing outside the page."""
    return "data:image/png;base64," + base64.b64encode(image).decode("ascii")


def render_html(report: Report) -> str:
    """The whole report as one self-contained HTML page."""
    template = environment(autoescape=True).get_template("report.html.j2")
    return template.render(context(report), png_data=png_data)


def render_markdown(report: Report, html_name: str = "report.html") -> str:
    """The table, diagnosis and explanation in Markdown; the figures are in the HTML page."""

    def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> Markup:
        return Markup(markdown_table(header, rows))  # noqa: S704 - its cells are escaped

    template = environment(autoescape=False).get_template("report.md.j2")
    return template.render(context(report), html_name=html_name, table=table)


class WrittenReport(NamedTuple):
    """The files `write_report` wrote; in a notebook, the page itself, its figures inline."""

    html_path: Path
    markdown_path: Path

    @property
    def path(self) -> Path:
        return self.html_path

    def _repr_html_(self) -> str:
        return notebook_page(self.html_path.read_text(encoding="utf-8"))


def write_report(
    paths: Sequence[Path | str],
    out: Path | str | None = None,
    thresholds: Thresholds = THRESHOLDS,
    note: Callable[[str], object] | None = None,
) -> WrittenReport:
    """Write report.html (default: in the first directory given) and report.md beside it, each
    atomically (a full disk leaves the old files, or none, never a torn one); `note` is given
    each of the report's notes (a run skipped, and why) as one line."""
    if not paths:
        raise UsageError("give at least one run or sweep directory")
    report = build_report(paths, thresholds)
    if note is not None:
        for line in report.notes:
            note(line)
    html_path = Path(out) if out is not None else Path(paths[0]) / "report.html"
    md_path = html_path.with_suffix(".md")
    try:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        records.write_bytes(html_path, render_html(report).encode("utf-8"))
        records.write_bytes(md_path, render_markdown(report, html_path.name).encode("utf-8"))
    except records.WriteError as e:
        raise UsageError(f"cannot write the report to {html_path}: {e.reason}") from None
    except OSError as e:
        raise UsageError(f"cannot write the report to {html_path}: {e.strerror or e}") from None
    return WrittenReport(html_path, md_path)


# A notebook cell shows HTML inside the notebook's own page: the report's style is scoped to the
# cell's output (a `<div class="vanishing-report">`), so that it restyles nothing around it.
SCOPE = "vanishing-report"

NOTEBOOK_SUMMARY = """\
<div class="{{ scope }}"><style>{{ css }}</style>
<h3>{{ title }}</h3>
{% if rows %}
<table class="summary">
<thead><tr>{% for cell in header %}<th>{{ cell }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in rows %}
<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{% else %}<p>No run has finished yet: nothing to summarise.</p>{% endif %}
<ul>
{% for label, line in headlines %}<li><b>{{ label }}</b>: {{ line }}</li>{% endfor %}
{% for line in verdicts %}<li class="verdict">{{ line }}</li>{% endfor %}
</ul>
{{ figure }}
{% if html_path %}<p class="meta">The whole report: <code>{{ html_path }}</code></p>{% endif %}
</div>
"""


def scoped_css(css: str, scope: str = SCOPE) -> str:
    """The report's style with every selector inside `.scope` (`body`: the scope itself); the
    style sheet is plain rules, no @-blocks."""

    def prefix(match: re.Match[str]) -> str:
        selectors = [s.strip() for s in match.group(1).split(",")]
        return ", ".join(f".{scope}" + ("" if s == "body" else f" {s}") for s in selectors) + " {"

    return re.sub(r"([^{}]+?)\s*\{", prefix, css)


def report_css() -> str:
    """The page's style sheet, scoped for a notebook cell."""
    css = resources.files("vanishing.reporting") / "templates" / "report.css"
    return scoped_css(css.read_text(encoding="utf-8"))


def notebook_page(page: str) -> str:
    """A written report page as a notebook cell shows it: its body, in its scoped style, the
    figures inline (the page fetches nothing)."""
    body = re.search(r"<body>(.*)</body>", page, re.S)
    content = body.group(1) if body else page
    return f'<div class="{SCOPE}"><style>{report_css()}</style>{content}</div>'


def notebook_summary(
    paths: Sequence[Path | str], html_path: Path | None = None, thresholds: Thresholds = THRESHOLDS
) -> str:
    """A compare or a sweep in a notebook cell: the summary table, each activation's headline
    verdict (up to 8), the accuracy-gap verdicts and the page's first figure (read from the page
    at `html_path`, not drawn again)."""
    report = build_report(paths, thresholds, figures=False)
    figure = ""
    if html_path is not None and Path(html_path).is_file():
        found = re.search(r"<figure .*?</figure>", Path(html_path).read_text("utf-8"), re.S)
        figure = found.group(0) if found else ""
    headlines = [(g.label, judge(g, thresholds).headline) for g in report.points]
    template = environment(autoescape=True).from_string(NOTEBOOK_SUMMARY)
    return template.render(
        scope=SCOPE,
        css=Markup(report_css()),  # noqa: S704 - our own style sheet
        title=title(report),
        header=(summary_header(report.rows)[0], "runs", *summary_header(report.rows)[1:]),
        rows=[
            point_cells(g, r, is_mixed(report.rows))
            for g, r in zip(report.points, report.rows, strict=True)
        ],
        headlines=headlines if len(headlines) <= 8 else [],
        verdicts=[*report.stops, *report.verdicts],
        figure=Markup(figure),  # noqa: S704 - our own page's markup, escaped when written
        html_path=html_path,
    )
