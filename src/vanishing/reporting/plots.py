"""The report's figures, drawn from run records only: each takes points (or the report's lines
over depth, `results.DepthSeries`) and returns a Figure.

Figures are built with `matplotlib.figure.Figure` directly, never pyplot, so nothing here touches
a global backend or state; `png` renders one with Agg.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from vanishing.model.activations import ActivationOptions, derivative, make_activation
from vanishing.reporting.formats import number
from vanishing.reporting.results import DepthSeries, Point, numbers
from vanishing.reporting.verdict.time_profile import TimeProfile, time_profile, time_series
from vanishing.settings.naming import NUMBERED, LayerNames

if TYPE_CHECKING:
    from matplotlib.axes import Axes

DPI = 100  # screen resolution: sharp in a browser; a compare's page < 1 MB, a sweep's < 3 MB
WIDTH = 10.0  # inches: 1000 px, the page's column width
Z_RANGE = (-6.0, 6.0)  # where every activation's shape and slope are visible
DASHES = ("-", (0, (6, 2)), (0, (2, 1.5)), (0, (6, 2, 1.5, 2)))  # told apart where lines coincide
MARKERS = ("o", "s", "^", "D", "v")  # with DASHES: one look per condition of the other axes
LEGEND_LAYERS = 8  # at most this many layers named in a legend; deeper nets name a spread of them


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes (Agg), without the timestamp metadata, so output is reproducible."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def colors(points: Sequence[Point]) -> dict[str, str]:
    """One colour per activation (the report picks it), the same in every figure."""
    return {g.label: g.color for g in points}


def layer_colors(count: int) -> list[tuple[float, float, float, float]]:
    """One colour per layer, dark (input side) to light (output side), within one activation."""
    cmap = colormaps["viridis"]
    return [cmap(0.85 * i / max(count - 1, 1)) for i in range(count)]


def spread(count: int, most: int) -> list[int]:
    """Indices 0 .. count-1, or `most` of them evenly spread, first and last included."""
    if count <= most:
        return list(range(count))
    return sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})


def tick_marks(labels: Sequence[str], most: int) -> tuple[list[int], list[str]]:
    """(positions from 1, labels) for one tick per layer (`LayerNames.hidden_ticks` or
    `weighted_ticks`): every layer, or for deep nets every k-th layer and the last, at most
    about `most` so that labels never touch."""
    count = len(labels)
    if count <= most:
        return list(range(1, count + 1)), list(labels)
    step = math.ceil(count / most)
    keep = [i for i in range(1, count, step) if count - i >= 0.6 * step] + [count]
    return keep, [labels[i - 1] for i in keep]


def set_layer_ticks(axes: Axes, which: str, labels: Sequence[str], most: int) -> None:
    """Tick the x or y axis (`which`) at the layers, labelled `tick_marks(labels, most)`; module
    names longer than a number read upright on an x axis, so that they never touch."""
    positions, shown = tick_marks(labels, most)
    upright = which == "x" and max(map(len, shown), default=0) > 3
    style: dict[str, Any] = {"rotation": 90, "fontsize": 8} if upright else {}
    (axes.set_xticks if which == "x" else axes.set_yticks)(positions, shown, **style)


def legend_below(
    figure: Figure,
    most: int,
    handles: Sequence | None = None,
    labels: Sequence[str] | None = None,
    **options: object,
) -> None:
    """A legend under the figure in at most `most` columns, read row by row like text
    (matplotlib fills columns first); by default every labelled line of the figure, once."""
    if handles is None:
        found: dict[str, object] = {}
        for axes in figure.axes:
            for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
                found.setdefault(label, handle)
        labels, handles = list(found), list(found.values())
    if not labels:
        return
    columns = max(1, min(len(labels), most))
    order = [
        i
        for column in range(columns)
        for i in range(column, len(labels), columns)  # column c holds items c, c + columns, ...
    ]
    figure.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc="outside lower center",
        ncols=columns,
        frameon=False,
        **options,
    )


def legend_columns(labels: Sequence[str]) -> int:
    """Legend columns for one entry per activation: one row for up to 8 short names."""
    return 8 if max((len(label) for label in labels), default=0) <= 12 else 4


def layer_legend(axes_list: Iterable[Axes], figure: Figure) -> None:
    """One legend under the figure naming the deepest panel's layers (a spread of them if many)."""
    handles, labels = max(
        (axes.get_legend_handles_labels() for axes in axes_list), key=lambda h: len(h[1])
    )
    if labels:
        keep = spread(len(labels), LEGEND_LAYERS)
        handles, labels = [handles[i] for i in keep], [labels[i] for i in keep]
        legend_below(figure, len(labels), handles, labels)


def learning_curves(points: Sequence[Point]) -> Figure | None:
    """Test accuracy (a regression's test MSE, its baseline dotted) and train/test loss per
    epoch, one line per activation, mean ± std band; None when every run diverged (no epoch to
    draw)."""
    if not any(g.ok for g in points):
        return None
    figure = Figure(figsize=(WIDTH, 3.8), layout="constrained")
    score_axes, loss_axes = figure.subplots(1, 2)
    color = colors(points)
    regression = all(g.regression for g in points)
    for point in points:
        c = color[point.label]
        if point.regression == regression:  # a mixed report: accuracy on the left, losses right
            key, scale = ("test_loss", 1) if regression else ("test_accuracy", 100)
            epochs, mean, std = point.epoch_series(key)
            score_axes.plot(epochs, scale * mean, "o-", color=c, markersize=3, label=point.label)
            band = (scale * (mean - std), scale * (mean + std))
            score_axes.fill_between(epochs, *band, color=c, alpha=0.2)
            if regression:
                score_axes.axhline(point.baseline, color=c, linestyle=":", linewidth=1)
        for key, style in (("test_loss", "o-"), ("train_loss", "s--")):
            epochs, mean, std = point.epoch_series(key)
            loss_axes.plot(epochs, mean, style, color=c, markersize=3)
            loss_axes.fill_between(epochs, mean - std, mean + std, color=c, alpha=0.2)
    if regression:
        score_axes.set(
            xlabel="epoch", ylabel="test MSE", title="Test MSE (dotted: always answering 1)"
        )
    else:
        score_axes.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    tasks = {g.regression for g in points}
    loss_name = {
        frozenset({False}): "cross-entropy",
        frozenset({True}): "mean squared error",
    }.get(frozenset(tasks), "cross-entropy; MSE")
    loss_axes.set(xlabel="epoch", ylabel=loss_name, title="Loss (solid: test, dashed: train)")
    losses = [line.get_ydata() for line in loss_axes.get_lines()]
    if any((np.asarray(y, dtype=float) > 0).any() for y in losses):
        loss_axes.set_yscale("log")  # losses fall by orders of magnitude; the log keeps the end
    last = max((len(g.ok[0].finished.get("history", [])) for g in points if g.ok), default=1)
    for axes in (score_axes, loss_axes):
        axes.grid(alpha=0.3)
        axes.set_xlim(0.5, max(last, 1) + 0.5)  # no epoch recorded: still a span
        axes.xaxis.get_major_locator().set_params(integer=True)
    legend_below(figure, 6 if len(points) <= 6 else legend_columns([g.label for g in points]))
    return figure


Spread = tuple[np.ndarray, np.ndarray, np.ndarray]  # per layer: mean, min and max over seeds


def gradient_flow(points: Sequence[Point]) -> Figure:
    """Weight-gradient norm per layer at initialisation and after training, log scale."""

    def label(point: Point, mean: np.ndarray) -> str:
        ratio = mean[0] / mean[-1]
        if np.isfinite(ratio):
            return f"{point.label}: {ratio:.1e}"
        # a layer-1 gradient of 0 (float32 underflow) has no geometric mean
        return f"{point.label}: {'0' if point.ratio_underflow else '–'}"

    return layer_panels(
        points,
        [gradient_ends(point) for point in points],
        label,
        ("At initialisation (step 0)", "After training (last probe)"),
        "‖dLoss/dW‖ (log)",
        "layer 1 / output gradient at initialisation",
    )


def gradient_ends(point: Point) -> tuple[Spread, Spread]:
    """The weight-gradient norm per layer at initialisation (every run: diverged ones too, step 0
    comes before any step) and after training (the runs that finished), over seeds."""
    return (
        point.result_layers("grad_norms_init", point.runs, geometric=True),
        point.result_layers("grad_norms_final", point.ok, geometric=True),
    )


def update_ratio_ends(point: Point) -> tuple[Spread, Spread]:
    """The update ratio ||dW|| / ||W|| per weighted layer at the first probe and at the last,
    geometric mean (and smallest, largest) over seeds: what `update_ratios` draws."""
    return (
        point.probe_layers("update_ratio", geometric=True),
        point.probe_layers("update_ratio", last=True, geometric=True),
    )


def update_ratios(points: Sequence[Point]) -> Figure | None:
    """The update ratio per layer at the first and the last probe, log scale, with 1 (a step as
    large as the weights) marked; None when no run recorded one (older records, a model watched
    without its optimizer)."""
    ends = [update_ratio_ends(point) for point in points]
    if not any(np.isfinite(spread[0]).any() for pair in ends for spread in pair):
        return None

    def label(point: Point, mean: np.ndarray) -> str:
        ratio = mean[0] / mean[-1]
        return f"{point.label}: {number(ratio) if np.isfinite(ratio) else '–'}"

    return layer_panels(
        points,
        ends,
        label,
        ("At the first probe", "At the last probe"),
        "‖ΔW‖ / ‖W‖ per step (log)",
        "layer 1 / output update ratio at the first probe",
        reference=1.0,  # a step as large as the weights: named in the caption
    )


def layer_panels(
    points: Sequence[Point],
    ends: Sequence[tuple[Spread, Spread]],
    label: Callable[[Point, np.ndarray], str],
    titles: tuple[str, str],
    ylabel: str,
    legend_title: str,
    reference: float | None = None,
) -> Figure:
    """Two panels of one value per weighted layer, log scale, one line per point with a band
    from the smallest to the largest seed: `ends[i]` is point i's (left, right) spread; the
    legend labels each line `label(point, left mean)`; a grey line at `reference` if given."""
    figure = Figure(figsize=(WIDTH, 4.0), layout="constrained")
    left_axes, right_axes = figure.subplots(1, 2, sharey=True)
    color = colors(points)
    ticks: list[str] = []  # the deepest point's layers name the ticks
    for point, pair in zip(points, ends, strict=True):
        c = color[point.label]
        for axes, (mean, low, high) in zip((left_axes, right_axes), pair, strict=True):
            if not np.isfinite(mean).any():
                continue
            layers = np.arange(1, len(mean) + 1)
            if len(mean) > len(ticks):
                ticks = point.names.weighted_ticks(len(mean))
            line_label = label(point, mean) if axes is left_axes else None
            axes.plot(layers, mean, "o-", color=c, label=line_label)
            axes.fill_between(layers, low, high, color=c, alpha=0.2)
    for axes, title in zip((left_axes, right_axes), titles, strict=True):
        if reference is not None:
            reference_line(axes, reference, "", "-")
        axes.set_yscale("log")
        set_layer_ticks(axes, "x", ticks, 16)
        axes.set(title=title, xlabel="layer (input side first)")
        axes.grid(alpha=0.3, which="both")
    left_axes.set_ylabel(ylabel)
    legend_below(figure, 5 if len(points) <= 5 else 4, title=legend_title, title_fontsize=9)
    return figure


def layer_profiles(
    lines: Sequence[tuple[str, np.ndarray]], ylabel: str, names: LayerNames = NUMBERED
) -> Figure | None:
    """One value per hidden layer (input side first, ticked as `names` names them), one line
    per (label, values), log scale; None when no line has a positive value."""
    shown = [(label, values) for label, values in lines if (values > 0).any()]
    if not shown:
        return None
    figure = Figure(figsize=(WIDTH, 4.0), layout="constrained")
    axes = figure.subplots()
    for index, (label, values) in enumerate(shown):
        layers = np.arange(1, len(values) + 1)
        axes.plot(
            layers,
            np.where(values > 0, values, np.nan),  # a zero (underflow) has no place on a log axis
            color=f"C{index % 10}",
            linestyle=DASHES[index % len(DASHES)],  # lines that coincide stay visible
            marker=MARKERS[index % len(MARKERS)],
            markersize=3,
            label=label,
        )
    depth = max(len(values) for _, values in shown)
    set_layer_ticks(axes, "x", names.hidden_ticks(depth), 16)
    axes.set_yscale("log")
    axes.set(xlabel="hidden layer (input side first)", ylabel=ylabel)
    axes.grid(alpha=0.3, which="both")
    legend_below(figure, 3 if max(len(label) for label, _ in shown) > 24 else 4)
    return figure


def step_edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges around probe steps (which need not be evenly spaced), for pcolormesh."""
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    middle = (steps[1:] + steps[:-1]) / 2
    return np.concatenate(
        [[steps[0] - (middle[0] - steps[0])], middle, [steps[-1] + (steps[-1] - middle[-1])]]
    )


def gradient_heatmaps(points: Sequence[Point]) -> Figure:
    """Per activation, gradient norm by layer and training step, on one shared log colour scale."""
    series = [point.probe_series("grad_norms", geometric=True) for point in points]
    positive = np.concatenate([np.zeros(0)] + [values[values > 0].ravel() for _, values in series])
    # One scale for all, so a darker row means less gradient whichever activation it belongs to.
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else LogNorm(1e-6, 1)
    columns = 1 if len(points) <= 4 else 2  # many activations: two columns keep the page short
    rows = math.ceil(len(points) / columns)
    deep = max((values.shape[1] for _, values in series if values.size), default=0) > 8
    height = 2.0 if deep else 1.5  # a deep net's layers need rows tall enough to see
    figure = Figure(figsize=(WIDTH, 0.6 + height * rows), layout="constrained")
    grid = figure.subplots(rows, columns, sharex=True, squeeze=False)
    axes_list = grid.ravel()[: len(points)]
    for axes in grid.ravel()[len(points) :]:
        axes.set_visible(False)
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")  # grey: zero or not recorded
    mesh = None
    for axes, point, (steps, values) in zip(axes_list, points, series, strict=True):
        axes.set_title(point.label, loc="left", fontsize=10)
        if not values.size:
            axes.text(0.5, 0.5, "no probes recorded", ha="center", transform=axes.transAxes)
            continue
        layers = values.shape[1]
        masked = np.ma.masked_invalid(np.where(values > 0, values, np.nan))
        mesh = axes.pcolormesh(
            step_edges(steps), np.arange(layers + 1) + 0.5, masked.T, norm=norm, cmap=cmap
        )
        set_layer_ticks(axes, "y", point.names.weighted_ticks(layers), 8 if deep else 12)
        axes.set_ylabel("layer")
    for axes in axes_list[-columns:]:
        axes.set_xlabel("training step")
        axes.xaxis.set_tick_params(labelbottom=True)  # shared x: the bottom row of each column
    if mesh is not None:
        figure.colorbar(mesh, ax=list(axes_list), label="‖dLoss/dW‖ (log)", shrink=0.9)
    return figure


def unit_health(points: Sequence[Point]) -> Figure | None:
    """Per layer over training: saturated share (sigmoid, tanh, smooth), dead share (rectifiers)."""
    shown = [(g, key) for g in points if (key := g.health_key) is not None]
    if not shown:
        return None
    columns = min(len(shown), 4)
    rows = math.ceil(len(shown) / columns)
    figure = Figure(figsize=(WIDTH, 0.5 + 2.8 * rows), layout="constrained")
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    for axes in axes_grid.ravel()[len(shown) :]:
        axes.set_visible(False)
    for axes, (point, key) in zip(axes_grid.ravel(), shown, strict=False):
        steps, values = point.probe_series(key)
        layers = values.shape[1] if values.size else 0
        shades = layer_colors(layers)
        for i in range(layers):
            label = point.names.hidden(i + 1)
            axes.plot(steps, 100 * values[:, i], color=shades[i], label=label)
        top = float(np.nanmax(values)) if values.size and np.isfinite(values).any() else 0.0
        if key == "dead_fraction":
            # The epoch-end count over the whole training set: fewer units are dead on every one
            # of 60 000 images than on every one of the probe batch's few hundred.
            steps, values = point.epoch_layers("dead_fraction")
            for i in range(min(layers, values.shape[1] if values.size else 0)):
                axes.plot(steps, 100 * values[:, i], "o", color=shades[i], markersize=4)
        what = "dead units (%)" if key == "dead_fraction" else "saturated pairs (%)"
        axes.set_title(point.label, fontsize=10)
        axes.set(xlabel="training step", ylabel=what)
        axes.set_ylim(0, max(5.0, 110 * top))  # at least 0-5 %, so "none" looks like none
        axes.grid(alpha=0.3)
    layer_legend(axes_grid.ravel(), figure)  # the deepest panel's layers name every colour
    return figure


def prelu_slopes(points: Sequence[Point]) -> Figure | None:
    """The learned PReLU slope of each layer over training; None when no run learned slopes."""
    shown = [(g, g.probe_series("prelu_slopes")) for g in points]
    shown = [(g, s) for g, s in shown if s[1].size]
    if not shown:
        return None
    figure = Figure(figsize=(WIDTH, 3.4), layout="constrained")
    axes_list = figure.subplots(1, len(shown), squeeze=False)[0]
    for axes, (point, (steps, values)) in zip(axes_list, shown, strict=True):
        shades = layer_colors(values.shape[1])
        for i in range(values.shape[1]):
            axes.plot(steps, values[:, i], color=shades[i], label=point.names.hidden(i + 1))
        axes.axhline(0, color="black", linewidth=0.8)  # slope 0: ReLU
        axes.axhline(1, color="grey", linewidth=0.8, linestyle=":")  # slope 1: linear
        axes.set(
            title=f"{point.label}: learned slope for z < 0",
            xlabel="training step",
            ylabel="slope a in max(z, a z)",
        )
        axes.grid(alpha=0.3)
        handles, labels = axes.get_legend_handles_labels()
        keep = spread(len(labels), LEGEND_LAYERS)
        axes.legend(
            [handles[i] for i in keep], [labels[i] for i in keep], fontsize=8, frameon=False
        )
    return figure


def activation_histograms(points: Sequence[Point]) -> Figure | None:
    """Each point's first run: a few layers' activation histograms at the first and the last
    probe, as densities on their recorded edges; None when no run recorded them (older runs)."""
    shown = []
    for point in points[:4]:
        probes = [r for r in point.runs[0].rows("probe") if r.get("activation_histogram")]
        if probes:
            shown.append((point, probes[0], probes[-1]))
    if not shown:
        return None
    figure = Figure(figsize=(WIDTH, 3.4), layout="constrained")
    axes_list = figure.subplots(1, len(shown), squeeze=False)[0]
    for axes, (point, first, last) in zip(axes_list, shown, strict=True):
        layers = len(first["activation_histogram"])
        shades = layer_colors(layers)
        for i in spread(layers, 3):
            for row, style in ((first, ":"), (last, "-")):
                layer = row["activation_histogram"][i]
                edges, counts = numbers(layer["edges"]), np.asarray(layer["counts"], dtype=float)
                if not np.isfinite(edges).all() or counts.sum() == 0:
                    continue  # a diverged layer: nothing finite to draw
                density = counts / (counts.sum() * np.diff(edges))
                label = f"{point.names.hidden(i + 1)}, step {row['step']}"
                axes.stairs(density, edges, color=shades[i], linestyle=style, label=label)
        axes.set(title=point.label, xlabel="layer output h", ylabel="density (log)", yscale="log")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, frameon=False)
    return figure


def activation_shapes(points: Sequence[Point]) -> Figure:
    """Each activation and its derivative over [-6, 6], with sigmoid's 1/4 bound marked."""
    figure = Figure(figsize=(WIDTH, 3.8), layout="constrained")
    value_axes, slope_axes = figure.subplots(1, 2)
    z = torch.linspace(*Z_RANGE, 601, dtype=torch.float64).unsqueeze(1)  # (601, 1)
    color = colors(points)
    for index, point in enumerate(points):
        config = point.runs[0].config
        options = ActivationOptions(  # records without a field mean its default
            **{k: config[k] for k in ("negative_slope", "prelu_mode") if k in config}
        )
        module = make_activation(point.activation.name, 1, options).double().eval()
        with torch.no_grad():
            value = module(z)
        slope = derivative(module, z)
        # Rectifiers coincide for z > 0: dashes of their own keep every line visible.
        style = {"color": color[point.label], "linestyle": DASHES[index % len(DASHES)]}
        value_axes.plot(z[:, 0], value[:, 0], label=point.label, linewidth=1.8, **style)
        slope_axes.plot(z[:, 0], slope[:, 0], linewidth=1.8, **style)
    slope_axes.axhline(0.25, color="black", linestyle=":", linewidth=1)
    slope_axes.annotate(
        "sigmoid's maximum slope: 1/4",
        (Z_RANGE[1], 0.25),
        (0, 4),
        textcoords="offset points",
        ha="right",
        fontsize=8,  # small enough to clear the rectifiers' step at z = 0
    )
    value_axes.set(title="f(z)", xlabel="z (pre-activation)")
    slope_axes.set(title="f'(z): the factor each layer multiplies the gradient by", xlabel="z")
    for axes in (value_axes, slope_axes):
        axes.grid(alpha=0.3)
        axes.axhline(0, color="grey", linewidth=0.6)
    legend_below(figure, 6 if len(points) <= 6 else legend_columns([g.label for g in points]))
    return figure


def attenuation(points: Sequence[Point]) -> Figure:
    """Measured first/output gradient ratio at init next to the slope bound (max f')^L."""
    figure = Figure(figsize=(WIDTH, 3.4), layout="constrained")
    axes = figure.subplots()
    x = np.arange(len(points))
    measured = np.array([g.vanishing_ratio_init for g in points])
    bound = np.array([g.activation.derivative_bound ** len(g.hidden) for g in points])
    for offset, values, label, c in (
        (-0.2, measured, "measured: layer 1 / output gradient at init", "C0"),
        (0.2, bound, "bound from the slopes alone: (max f')^L", "C7"),
    ):
        bars = axes.bar(x + offset, np.nan_to_num(values, nan=0.0), 0.38, label=label, color=c)
        axes.bar_label(bars, [number(v) for v in values], fontsize=8, padding=2)
    axes.set_yscale("log")
    axes.set_xticks(x, [g.label for g in points])
    axes.axhline(1, color="black", linewidth=0.8)  # ratio 1: every layer gets as much as the last
    axes.set_ylabel("ratio (log)")
    axes.margins(y=0.25)
    axes.grid(alpha=0.3, axis="y", which="both")
    axes.legend(fontsize=8, frameon=False, loc="upper left")
    return figure


def series_style(series: DepthSeries) -> dict[str, Any]:
    """Colour by activation; line style and marker by the condition of the other axes."""
    return {
        "color": series.color,
        "linestyle": DASHES[series.style % len(DASHES)],
        "marker": MARKERS[series.style % len(MARKERS)],
        "markersize": 4,
    }


def depth_axes(axes: Axes, series: Sequence[DepthSeries]) -> None:
    """x: depth, ticked at every depth the runs have; grid."""
    depths = sorted({int(d) for s in series for d in s.depths})
    axes.set_xticks(depths)
    axes.set_xlabel("depth (hidden layers)")
    axes.grid(alpha=0.3, which="both")


def series_legend(figure: Figure, series: Sequence[DepthSeries]) -> None:
    """One legend under the figure, lines in series order; fewer columns for long labels."""
    found: dict[str, object] = {}
    for axes in figure.axes:
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            found.setdefault(label, handle)
    rank = {line.label: i for i, line in enumerate(series)}
    labels = sorted(found, key=lambda label: rank.get(label, len(rank)))  # bounds last
    legend_below(figure, legend_columns(labels), [found[label] for label in labels], labels)


def reference_line(axes: Axes, value: float, text: str, linestyle: str) -> None:
    """A horizontal line (chance, a threshold) across the axes, labelled at its left end."""
    axes.axhline(value, color="grey", linestyle=linestyle, linewidth=1)
    if text:
        axes.text(
            0.01,
            value,
            text,
            transform=axes.get_yaxis_transform(),
            ha="left",
            va="bottom",
            fontsize=8,
            color="dimgrey",
        )


def accuracy_by_depth(
    series: Sequence[DepthSeries], references: Sequence[tuple[float, str, str]] = ()
) -> Figure:
    """Test accuracy against depth (left) and test error on a log scale (right), one line per
    series, band mean ± std over seeds; (value, text, line style) references such as chance.
    Regressions: their test MSE (left) and the same on a log scale (right)."""
    figure = Figure(figsize=(WIDTH, 4.2), layout="constrained")
    accuracy_axes, error_axes = figure.subplots(1, 2)
    regression = bool(series) and all(line.regression for line in series)
    scale = 1 if regression else 100

    def error(values: np.ndarray) -> np.ndarray:
        return values if regression else 1 - values

    for line in series:
        mean, std = line.accuracy()
        style = series_style(line)
        accuracy_axes.plot(line.depths, scale * mean, label=line.label, **style)
        accuracy_axes.fill_between(
            line.depths, scale * (mean - std), scale * (mean + std), color=line.color, alpha=0.15
        )
        # Errors of 3 % and 5 % lie far apart on a log scale, where accuracies of 97 % and 95 %
        # would touch; the band is clipped at 0.1 % error, which a log axis cannot show.
        error_axes.plot(line.depths, scale * error(mean), **style)
        error_axes.fill_between(
            line.depths,
            np.maximum(scale * (error(mean) - std), 0.1 * scale / 100),
            scale * (error(mean) + std),
            color=line.color,
            alpha=0.15,
        )
    for value, text, linestyle in references:
        reference_line(accuracy_axes, scale * value, text, linestyle)
        reference_line(error_axes, scale * (value if regression else 1 - value), "", linestyle)
    if regression:
        accuracy_axes.set(ylabel="test MSE", ylim=(0, None), title="Test MSE")
    else:
        accuracy_axes.set(ylabel="test accuracy (%)", ylim=(0, 100), title="Test accuracy")
    error_axes.set_yscale("log")
    if not regression:
        error_axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20
        error_axes.yaxis.set_major_formatter(ScalarFormatter())
        error_axes.yaxis.set_minor_formatter(NullFormatter())
        error_axes.set(ylabel="test error (%), log scale", title="Test error = 100 % − accuracy")
        top = 100 * max((1 - value for value, _, _ in references), default=0.9)
        error_axes.set_ylim(top=min(100.0, 1.2 * top))
    else:
        error_axes.set(ylabel="test MSE, log scale", title="Test MSE, log scale")
    for axes in (accuracy_axes, error_axes):
        depth_axes(axes, series)
    series_legend(figure, series)
    return figure


def ratio_by_depth(series: Sequence[DepthSeries], vanishing: float) -> Figure:
    """Layer-1 / output gradient ratio at init against depth (log), with the slope bound
    (max f')^L dotted for activations whose slope stays below 1; a ratio that underflowed to 0
    is a triangle on the bottom edge."""
    figure = Figure(figsize=(WIDTH, 4.2), layout="constrained")
    axes = figure.subplots()
    bounded = {}
    underflow = []
    for line in series:
        ratio = line.ratio()
        axes.plot(
            line.depths, np.where(ratio > 0, ratio, np.nan), label=line.label, **series_style(line)
        )
        underflow += [(depth, line.color) for depth in line.depths[ratio == 0]]
        if line.activation.derivative_bound < 1:
            bounded[line.activation.name] = line
    depths = np.array(sorted({int(d) for s in series for d in s.depths}), dtype=float)
    for line in bounded.values():
        axes.plot(
            depths,
            line.activation.derivative_bound**depths,
            color=line.color,
            linestyle=":",
            linewidth=1.2,
            label=f"({line.activation.derivative_bound:g})^L: {line.activation.label}'s bound",
        )
    reference_line(axes, 1.0, "", "-")  # labelled in the caption: text here would hide lines
    reference_line(axes, vanishing, "", "--")
    axes.set_yscale("log")
    axes.set(ylabel="layer 1 / output gradient at init (log)", title="Gradient reaching layer 1")
    if underflow:
        edge = axes.get_ylim()[0]
        for depth, color in underflow:
            axes.plot([depth], [edge], "v", color=color, markersize=9, clip_on=False)
        axes.annotate(
            "▼ 0: underflowed in float32",
            (underflow[0][0], edge),
            (-6, 8),
            textcoords="offset points",
            ha="right",
            fontsize=8,
        )
        axes.set_ylim(bottom=edge)
    depth_axes(axes, series)
    series_legend(figure, series)
    return figure


def units_by_depth(series: Sequence[DepthSeries]) -> Figure | None:
    """Dead share (rectifiers) and saturated share (the others) after training against depth."""
    panels = [
        ("dead_fraction", "Rectifiers: dead units", "dead hidden units (%)"),
        (
            "saturated_fraction",
            "Saturating and smooth: saturated",
            "saturated (sample, unit) pairs (%)",
        ),
    ]
    panels = [p for p in panels if any(s.health_key == p[0] for s in series)]
    if not panels:
        return None
    figure = Figure(figsize=(WIDTH, 3.8), layout="constrained")
    axes_list = figure.subplots(1, len(panels), squeeze=False, sharex=True)[0]
    for axes, (key, title, ylabel) in zip(axes_list, panels, strict=True):
        shown = [s for s in series if s.health_key == key]
        top = 0.0
        for line in shown:
            mean, std = line.units()  # percents
            axes.plot(line.depths, mean, label=line.label, **series_style(line))
            axes.fill_between(line.depths, mean - std, mean + std, color=line.color, alpha=0.15)
            if np.isfinite(mean).any():
                top = max(top, float(np.nanmax(mean + np.nan_to_num(std))))
        axes.set(title=title, ylabel=ylabel)
        axes.set_ylim(0, max(5.0, 1.1 * top))  # at least 0-5 %, so "none" looks like none
        depth_axes(axes, series)  # every depth, so that both panels share the x axis
    series_legend(figure, series)
    return figure


def time_ends(point: Point) -> tuple[TimeProfile | None, TimeProfile | None]:
    """The point's layers through time at the first probe and after training."""
    return time_profile(point), time_profile(point, final=True)


def time_bound(point: Point) -> float:
    """The largest slope of the activation of a plain RNN's steps: nn.RNN's tanh and relu
    both 1 (a watched model's), the registry's for a training run's LoopRNN."""
    return 1.0 if point.watched else point.activation.derivative_bound


def time_profiles(points: Sequence[Point]) -> Figure | None:
    """||dLoss/dh_t|| against the step t of the sequence, at the first probe (left) and after
    training (right), log scale, one line per recurrent layer (and point), with the slope
    bound's line dotted where there is one (a plain RNN's); None where no point has a time
    profile."""
    shown = [(point, time_ends(point)) for point in points]
    shown = [(point, ends) for point, ends in shown if ends[0] is not None]
    if not shown:
        return None
    figure = Figure(figsize=(WIDTH, 4.2), layout="constrained")
    left_axes, right_axes = figure.subplots(1, 2, sharey=True)
    several = len(shown) > 1
    index = 0
    longest = 1
    bound_named = False  # the legend names the slope bound once
    for point, ends in shown:
        first = ends[0]
        count = len(first.layers) if first else 0
        for layer_index in range(count):
            color, dash = f"C{index % 10}", DASHES[index % len(DASHES)]
            index += 1
            for axes, found in zip((left_axes, right_axes), ends, strict=True):
                if found is None or layer_index >= len(found.layers):
                    continue
                layer = found.layers[layer_index]
                steps = np.arange(1, layer.steps + 1)
                longest = max(longest, layer.steps)
                name = layer.name if count > 1 or point.watched else ""
                label = ", ".join(x for x in (point.label if several else "", name) if x)
                norms = np.where(layer.norms > 0, layer.norms, np.nan)  # 0: underflow
                axes.plot(
                    steps,
                    norms,
                    color=color,
                    linestyle=dash,
                    label=(label or "measured") if axes is left_axes else None,
                )
                theory = layer.theory(time_bound(point))
                if theory is not None:
                    axes.plot(
                        steps,
                        np.where(theory > 0, theory, np.nan),
                        color=color,
                        linestyle=":",
                        linewidth=1.2,
                        label=None if bound_named else "slope bound (dotted)",
                    )
                    bound_named = True
    for axes, title in zip(
        (left_axes, right_axes), ("At the first probe", "After training (last probe)"), strict=True
    ):
        axes.set_yscale("log")
        axes.set(
            title=title, xlabel="step t of the sequence (1 = first)", xlim=(0.5, longest + 0.5)
        )
        axes.grid(alpha=0.3, which="both")
    left_axes.set_ylabel("‖dLoss/dh_t‖ (log)")
    legend_below(figure, 4)
    return figure


def time_heatmaps(points: Sequence[Point]) -> Figure | None:
    """Per point and recurrent layer, ||dLoss/dh_t|| by training step (rows) and step of the
    sequence (columns), one shared log colour scale; None where no point has a time profile."""
    panels = []
    for point in points:
        first = time_profile(point)
        layers = first.layers if first else ()
        for index, layer in enumerate(layers):
            steps, values = time_series(point, index)
            if values.size:
                name = layer.name if len(layers) > 1 or point.watched else ""
                panels.append((", ".join(x for x in (point.label, name) if x), steps, values))
    if not panels:
        return None
    panels = panels[:8]
    positive = np.concatenate([values[values > 0].ravel() for _, _, values in panels])
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else LogNorm(1e-6, 1)
    columns = 1 if len(panels) <= 3 else 2
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(WIDTH, 0.6 + 2.0 * rows), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    axes_list = grid.ravel()[: len(panels)]
    for axes in grid.ravel()[len(panels) :]:
        axes.set_visible(False)
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")  # grey: zero or not recorded
    mesh = None
    for axes, (title, steps, values) in zip(axes_list, panels, strict=True):
        masked = np.ma.masked_invalid(np.where(values > 0, values, np.nan))
        columns_edges = np.arange(values.shape[1] + 1) + 0.5
        mesh = axes.pcolormesh(columns_edges, step_edges(steps), masked, norm=norm, cmap=cmap)
        axes.set_title(title, loc="left", fontsize=10)
        axes.set(xlabel="step t of the sequence", ylabel="training step")
    if mesh is not None:
        figure.colorbar(mesh, ax=list(axes_list), label="‖dLoss/dh_t‖ (log)", shrink=0.9)
    return figure


def gate_means(points: Sequence[Point]) -> Figure | None:
    """Per point, each recurrent layer's gates' mean activation at the first probe (light) and
    after training (dark); None where no point recorded gates (plain RNNs, MLPs)."""
    shown = []
    for point in points:
        first, last = time_ends(point)
        if first is not None and any(layer.gates for layer in first.layers):
            shown.append((point, first, last))
    if not shown:
        return None
    shown = shown[:4]
    figure = Figure(figsize=(WIDTH, 3.6), layout="constrained")
    axes_list = figure.subplots(1, len(shown), squeeze=False, sharey=True)[0]
    for axes, (point, first, last) in zip(axes_list, shown, strict=True):
        bars = [
            (f"{layer.name}\n{gate}" if len(first.layers) > 1 else gate, layer_index, gate)
            for layer_index, layer in enumerate(first.layers)
            for gate in layer.gates
        ]
        x = np.arange(len(bars))
        for offset, found, label, alpha in (
            (-0.2, first, "first probe", 0.45),
            (0.2, last, "after training", 1.0),
        ):
            if found is None:
                continue
            heights = [
                found.layers[i].gates.get(gate, math.nan) if i < len(found.layers) else math.nan
                for _, i, gate in bars
            ]
            axes.bar(x + offset, heights, 0.38, color="C0", alpha=alpha, label=label)
        axes.set_xticks(x, [name for name, _, _ in bars], fontsize=8)
        axes.set(title=point.label, ylim=(0, 1), ylabel="mean gate value")
        axes.axhline(0.5, color="grey", linestyle=":", linewidth=1)  # a sigmoid at 0
        axes.grid(alpha=0.3, axis="y")
    legend_below(figure, 2)
    return figure
