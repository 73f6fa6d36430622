"""The page's figures: what each one asks, its caption, how it is drawn from points (`plots`),
and which are drawn for a compare (one condition) or a sweep (many)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from vanishing.model.recurrent import ARCHS
from vanishing.reporting import plots
from vanishing.reporting.diagnosis import attenuation_table, cure_table, spoken, stop_rules
from vanishing.reporting.formats import Table, number, percent2
from vanishing.reporting.results import (
    Point,
    axes_of,
    by_condition,
    depth_series,
    representative_conditions,
    value_order,
)
from vanishing.reporting.verdict import (
    SATURATED,
    THRESHOLDS,
    Thresholds,
    profile,
    setting_value,
)
from vanishing.reporting.verdict.time_profile import has_time
from vanishing.settings import naming
from vanishing.settings.config import cure_keys, field_named, words_of
from vanishing.settings.naming import namer


@dataclass(frozen=True)
class FigureBlock:
    """One figure of the page: the question it answers, its caption and its PNG."""

    anchor: str
    question: str
    caption: str
    image: bytes
    table: Table | None = None  # the figure's numbers, drawn below it
    section: tuple[str, str] = ("", "")  # (heading, note) of the figures for one condition


class FigureSpec(NamedTuple):
    """A figure of the page: its anchor, the question it answers, its caption, how to draw it
    from points, and for some a table of its numbers drawn under it."""

    anchor: str
    question: str
    caption: str
    draw: Callable[[Sequence[Point]], Any]
    table: Callable[[Sequence[Point]], Table] | None = None


def measured_on(points: Sequence[Point]) -> str:
    """The batch the probes measured: the trainer's fixed probe batch, or for watched models
    without `probe=` the training batch of each measured step."""
    if points and all(g.watched and not g.runs[0].config.get("probe_size") for g in points):
        return "the training batch of each measured step"
    return "the fixed probe batch"


def signal_spec(points: Sequence[Point]) -> FigureSpec:
    """The per-layer signal a watched model's headline reads, at step 0."""
    return FigureSpec(
        "signal",
        "How much back-propagated signal reaches each layer?",
        "Norm of the back-propagated signal dLoss/dh at each activation layer's output, over "
        f"{measured_on(points)} at step 0, log scale: the numbers the headline's factor reads "
        "(its first layer over its last). Layers of every shape compare by it: a weight's "
        "gradient sums its signal over the positions of a map or a sequence.",
        lambda chosen: plots.layer_profiles(
            [(g.label, profile(g).signal) for g in chosen],
            "‖dLoss/dh‖ (log)",
            chosen[0].names,
        ),
    )


UPDATE_RATIO_CAPTION = (
    "Update ratio ‖W after − W before‖ / ‖W before‖ of each layer's weights over one optimizer "
    "step, at the first probe (left) and the last (right), log scale; geometric mean over "
    "seeds, band from the smallest to the largest seed. It says how fast a layer learns, which "
    "the gradient alone does not: under SGD a step is the learning rate times the gradient, so "
    "the ratio falls towards layer 1 with a vanishing gradient and the first layers learn the "
    "slowest; Adam and RMSprop divide each weight's step by its own gradient's running size, so "
    "the line stays level even where the gradient vanishes. A ratio near 1 (grey line) is a "
    "step as large as the weights themselves: the learning rate is too large. The legend gives "
    "layer 1 / output at the first probe."
)


def layer_specs(batch: str = "the fixed probe batch") -> list[FigureSpec]:
    """(anchor, question, caption, draw) of the figures drawn per condition, in reading order;
    `batch` is what the probes measured (`measured_on`)."""
    dead_where = (
        "for every sample of the last 8 batches measured, on the training batch of each "
        "measured step"
        if "measured step" in batch
        else "on every image; lines on the probe batch, dots on the whole training set at each "
        "epoch end"
    )
    return [
        FigureSpec(
            "gradient-flow",
            "How much gradient reaches each layer?",
            f"L2 norm of each layer's weight gradient on {batch}, at step 0 (left) "
            "and at the last probe (right), log scale; geometric mean over seeds, band from the "
            "smallest to the largest seed. A line falling towards layer 1 is the vanishing "
            "gradient; the legend gives layer 1 / output at initialisation.",
            plots.gradient_flow,
        ),
        FigureSpec(
            "update-ratio",
            "How far does each step move each layer's weights?",
            UPDATE_RATIO_CAPTION,
            plots.update_ratios,
        ),
        FigureSpec(
            "heatmaps",
            "Where and when is the gradient small during training?",
            "Weight-gradient norm by layer (rows, input side at the bottom) and training step "
            "(columns), one shared log colour scale for every activation: darker means less "
            "gradient. Grey: zero or not recorded.",
            plots.gradient_heatmaps,
        ),
        FigureSpec(
            "learning",
            "Does the network learn, and how fast?",
            "Test accuracy and loss after each epoch; the band is mean ± standard deviation over "
            "seeds (absent with one seed).",
            plots.learning_curves,
        ),
        FigureSpec(
            "units",
            "Do units saturate or die?",
            "Sigmoid, tanh and the smooth activations: share of (sample, unit) pairs whose slope "
            f"is below {SATURATED} of its maximum. Rectifiers: share of units with zero output "
            f"{dead_where}.",
            plots.unit_health,
        ),
        FigureSpec(
            "histograms",
            "How are each layer's activations distributed?",
            "Histogram of the first, a middle and the last hidden layer's output h over "
            f"{batch.removeprefix('the fixed ')}, at step 0 (dotted) and at the last probe "
            "(solid), first seed only; density "
            "on a log scale, so that layers of any scale compare. A spike at 0 is dead rectifier "
            "units, peaks at a bounded activation's ends saturation, a spread growing or shrinking "
            "with depth a forward blow-up or collapse.",
            plots.activation_histograms,
        ),
        *time_specs(batch),
        FigureSpec(
            "prelu",
            "Which negative slope does PReLU learn?",
            "Learned slope a of max(z, a z) per layer over training (mean over seeds); "
            "0 would be ReLU, 1 a linear layer.",
            plots.prelu_slopes,
        ),
    ]


def time_specs(batch: str = "the fixed probe batch") -> list[FigureSpec]:
    """The figures through time, drawn only for points with a time profile (recurrent layers):
    the gradient per step of the sequence, its map over training, the gates."""
    return [
        FigureSpec(
            "through-time",
            "How much gradient reaches each step of the sequence?",
            f"Norm of the gradient dLoss/dh_t of each recurrent layer's hidden state at step t "
            f"of the sequence (1 = the first), on {batch}: at the first probe (left) and the "
            "last (right), log scale, geometric mean over seeds. A line falling towards step 1 "
            "is the gradient vanishing through time; where it ends, float32 underflowed to 0. "
            "Dotted, for a plain RNN: the slope bound (max f' · ‖W_hh‖)^(T − t), scaled to the "
            "measured norm at step T, where ‖W_hh‖ is the recurrent weight's largest singular "
            "value; an LSTM or a GRU has no such simple line.",
            plots.time_profiles,
        ),
        FigureSpec(
            "time-heatmaps",
            "When in training does the gradient reach the first steps?",
            "‖dLoss/dh_t‖ by training step (rows) and step of the sequence (columns), per "
            "recurrent layer, one shared log colour scale: darker means less gradient. Grey: "
            "zero (underflow) or not recorded.",
            plots.time_heatmaps,
        ),
        FigureSpec(
            "gates",
            "How open are the gates?",
            "Mean activation of each gate over the probe batch, the steps and the units, per "
            "recurrent layer, at the first probe (light) and after training (dark). An LSTM's "
            "forget gate and a GRU's update gate are the share of the memory kept per step: "
            "over T steps the cell keeps that share to the power T. Dotted: 0.5, a sigmoid at 0 "
            "(PyTorch's forget gates at init).",
            plots.gate_means,
        ),
    ]


SHAPES_SPEC = FigureSpec(
    "activations",
    "What does each activation do to the gradient?",
    "Each activation f(z) and its slope f'(z) over [-6, 6] (PReLU at its initial slope "
    "0.25). Back-propagation multiplies the gradient by f'(z) once per layer; sigmoid's "
    "slope never exceeds 1/4 (dotted line).",
    plots.activation_shapes,
)
ATTENUATION_SPEC = FigureSpec(
    "attenuation",
    "Does the slope bound predict the measured attenuation?",
    "Measured layer-1 / output gradient ratio at initialisation next to (max f')^L, the "
    "most that L hidden layers' slopes let through. The weights also scale the gradient, "
    "so the bound sets the order of magnitude, not the exact value.",
    plots.attenuation,
    table=attenuation_table,
)


def draw(
    spec: FigureSpec,
    points: Sequence[Point],
    suffix: str = "",
    note: str = "",
    section: tuple[str, str] = ("", ""),
) -> list[FigureBlock]:
    """The spec's figure as a one-element list of FigureBlock, or [] when it has nothing to show;
    `suffix` names the condition in the question, `note` ends the caption."""
    anchor, question, caption, draw_figure, table = spec
    figure = draw_figure(points)
    if figure is None:
        return []
    rows = table(points) if table is not None else None
    question += f" ({suffix})" if suffix else ""
    anchor += f"-{suffix.replace(' ', '-').replace(',', '')}" if suffix else ""
    return [FigureBlock(anchor, question, caption + note, plots.png(figure), rows, section)]


def depth_figures(
    points: Sequence[Point], thresholds: Thresholds = THRESHOLDS
) -> list[FigureBlock]:
    """Accuracy, gradient ratio and unit health against depth, one line per activation and
    condition of the other axes; [] unless the points span more than one depth."""
    if len({g.depth for g in points}) < 2:
        return []
    series = depth_series(points)
    rules = stop_rules(points, thresholds)
    references = [
        (rule.chance, f"always answering 1, {number(rule.chance)}", ":")
        if rule.regression
        else (rule.chance, f"chance, {percent2(rule.chance)}", ":")
        for rule in rules
    ]
    references += [
        (rule.threshold, f"stops learning {'above' if rule.regression else 'below'} "
         f"{rule.shown(rule.threshold)}", "--")
        for rule in rules
    ]  # fmt: skip
    lines = "one line per activation" + (
        " and setting of the other axes" if len({s.style for s in series}) > 1 else ""
    )
    specs = [
        FigureSpec(
            "depth-accuracy",
            "At which depth does each activation stop learning?",
            f"Test accuracy after training against depth (the number of hidden layers), {lines}: "
            "mean over seeds, the band mean ± standard deviation (absent with one seed). Dotted: "
            "chance; dashed: the stop threshold (see Diagnosis). Right: the test error on a log "
            "scale, which tells apart the activations that still learn.",
            lambda _: plots.accuracy_by_depth(series, references),
        ),
        FigureSpec(
            "depth-ratio",
            "How much gradient reaches layer 1 as the network gets deeper?",
            f"Layer 1 / output weight-gradient norm at initialisation (step 0) against depth, "
            f"{lines}, geometric mean over seeds, log scale. Below "
            f"{number(thresholds.vanishing_ratio)} (grey dashed line) the gradient vanishes; "
            "at 1 (grey solid line) layer 1 gets as much as the output layer. "
            "Dotted, for activations whose slope stays below 1: (max f')^L, the most that L "
            "hidden layers' slopes let through.",
            lambda _: plots.ratio_by_depth(series, thresholds.vanishing_ratio),
        ),
        FigureSpec(
            "depth-units",
            "Do more units die or saturate as the network gets deeper?",
            "After training, against depth: rectifiers, the share of all hidden units with zero "
            "output on every training image (last epoch end); the other families, the share of "
            f"(sample, unit) pairs in all hidden layers with slope below {SATURATED} of the "
            "maximum (last probe). Mean over seeds, band ± standard deviation.",
            lambda _: plots.units_by_depth(series),
        ),
    ]
    return [block for spec in specs for block in draw(spec, points)]


# The settings that change how the gradient flows: what the cure section sets side by side.


def cure_words(points: Sequence[Point] = ()) -> str:
    """The cure settings as prose names them: 'normalisation, residual connections, ...'; with
    `points`, those that differ among them, each with its values ('architecture: RNN, LSTM
    (gated cells); forget-gate bias: none, 1')."""
    if not points:
        return ", ".join(words_of(field_named(key)) for key in cure_keys())
    said = []
    for key in cure_keys():
        values = sorted(
            dict.fromkeys(setting_value(g.runs[0].config, key) for g in points), key=cure_order
        )
        if len(values) < 2:
            continue
        shown = ", ".join(cure_value(key, value) for value in values)
        gated = " (gated cells against a plain RNN)" if key == "arch" else ""
        said.append(f"{words_of(field_named(key))}: {shown}{gated}")
    return "; ".join(said)


def cure_order(value: Any) -> tuple[int, Any, str]:
    """Sort key of a cure setting's values: none first, then numbers by size, the networks in
    the registry's order (the MLP, a plain RNN, the gated cells), other text by name."""
    if value is None:
        return (0, 0, "")
    if isinstance(value, str) and value in ARCHS:
        return (1, ARCHS.index(value), "")
    return (2, *value_order(value)[1:]) if not isinstance(value, str) else (3, 0, value)


def cure_value(key: str, value: Any) -> str:
    """A cure setting's value as the cure section names it: 'LSTM', 'none', '1'."""
    if key == "arch" and isinstance(value, str):
        return {"mlp": "MLP", "rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}.get(value, value)
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def cure_points(points: Sequence[Point]) -> list[Point]:
    """The points the cure section compares: those of the deepest depth whose points differ in
    a cure setting (`config.cure_keys`; records without a key read as its old default); [] when
    none do."""
    for depth in sorted({g.depth for g in points}, reverse=True):
        members = [g for g in points if g.depth == depth]
        cures = {tuple(setting_value(g.runs[0].config, k) for k in cure_keys()) for g in members}
        if len(cures) > 1:
            return members
    return []


def cure_figures(points: Sequence[Point], thresholds: Thresholds = THRESHOLDS) -> list[FigureBlock]:
    """The cure section: the signal and the activations' scale per layer at initialisation,
    one line per point, and the table of factors and verdicts; [] unless cure settings vary."""
    members = cure_points(points)
    if not members:
        return []
    profiles = [(g.label, profile(g)) for g in members]
    names = members[0].names  # one depth: the points share their layers
    words = "one line per setting, geometric mean over seeds, log scale"
    specs = [
        FigureSpec(
            "cure-signal",
            "Which cure restores the gradient?",
            "Norm of the back-propagated signal dLoss/dh at each hidden layer's output on the "
            f"probe batch at initialisation (step 0), {words}. A line falling towards layer 1 "
            "is a vanishing gradient, one rising towards it an exploding one; a flat line is "
            "what a cure restores.",
            lambda _: plots.layer_profiles(
                [(label, p.signal) for label, p in profiles], "‖dLoss/dh‖ (log)", names
            ),
        ),
        FigureSpec(
            "cure-scale",
            "Which cure keeps the activations' scale?",
            "Standard deviation of each hidden layer's output at initialisation (step 0), "
            f"{words}. A line falling with depth is forward collapse (the output no longer "
            "depends on the input), one rising is forward blow-up.",
            lambda _: plots.layer_profiles(
                [(label, p.scale) for label, p in profiles],
                "std of the layer's output (log)",
                names,
            ),
        ),
    ]
    timed = any(has_time(g) for g in members)
    if timed:
        time = FigureSpec(
            "cure-time",
            "Which cure restores the gradient through time?",
            "Norm of the gradient dLoss/dh_t of each recurrent layer at step t of the "
            f"sequence, at the first probe (left) and after training (right), {words}. A line "
            "falling towards step 1 is the gradient vanishing through time; a flat one is "
            "what a cure restores.",
            plots.time_profiles,
        )
        # one recurrent layer: no layer to compare with another, only its steps
        specs = [time] if all(g.depth < 2 for g in members) else [*specs, time]
    caption = (
        " Below: the score after training, both factors across layers at initialisation (the "
        "signal at layer 1 over the last hidden layer's, the scale at the last hidden layer "
        "over layer 1's), the gradient through time (step 1 over step T, after training) and "
        "the verdict."
        if timed
        else " Below: test accuracy after training, both factors (the signal at layer 1 over "
        "the last hidden layer's, the scale at the last hidden layer over layer 1's) and the "
        "verdict."
    )
    last = specs[-1]
    specs[-1] = last._replace(
        caption=last.caption.split(" Below:")[0] + caption,
        table=lambda chosen: cure_table(chosen, thresholds),
    )
    depth = members[0].depth
    section = (
        "Which cure restores the gradient?",
        f"The settings of this report that change how the gradient flows, and differ here "
        f"({cure_words(members)}), at depth {depth}, side by side.",
    )
    return [block for spec in specs for block in draw(spec, members, section=section)]


def short_label(point: Point) -> str:
    """A point's label within its condition's section: its activation ('ReLU'), a recurrent
    network's cells ('LSTM', 'RNN (Tanh)')."""
    config = point.runs[0].config
    return naming.title(config) if naming.recurrent(config) else point.activation.label


def draw_figures(points: Sequence[Point], thresholds: Thresholds = THRESHOLDS) -> list[FigureBlock]:
    """The page's figures, in reading order; some only when their runs exist.

    One condition (a compare): every figure over all points. Several (a sweep): the depth figures
    over all points, then the per-layer figures for the shallowest and the deepest condition only,
    so that the page does not grow with the grid.
    """
    conditions = by_condition(points)
    if len(conditions) <= 1:
        watched = [signal_spec(points)] if points and all(g.watched for g in points) else []
        specs = [*watched, *layer_specs(measured_on(points)), SHAPES_SPEC, ATTENUATION_SPEC]
        return [block for spec in specs for block in draw(spec, points)]
    blocks = depth_figures(points, thresholds)
    shapes: dict[str, Point] = {}  # one per activation: its shape does not depend on the condition
    for point in points:
        shapes.setdefault(
            point.activation.name, dataclasses.replace(point, label=point.activation.label)
        )
    blocks += draw(SHAPES_SPEC, list(shapes.values()))
    blocks += cure_figures(points, thresholds)
    chosen = representative_conditions(list(conditions))
    describe = namer([axes_of(s) for s in conditions])
    names = [describe(axes_of(s)) for s in chosen]
    deeper = len(chosen) == 2 and chosen[0].depth < chosen[1].depth
    roles = ["the shallowest", "the deepest"] if deeper else ["the first", "the last"]
    for condition, name, role in zip(chosen, names, roles, strict=False):
        section = (
            f"Layer by layer at {name}",
            f"The per-layer figures are drawn for {spoken(names)} ({' and '.join(roles)} "
            f"setting), not for each of the {len(conditions)} settings; the summary table and the "
            "figures above cover them all.",
        )
        note = f" {name[:1].upper()}{name[1:]} only ({role} setting)."
        members = [dataclasses.replace(g, label=short_label(g)) for g in conditions[condition]]
        for spec in [*layer_specs(measured_on(members)), ATTENUATION_SPEC]:
            blocks += draw(spec, members, name, note, section)
    return blocks
