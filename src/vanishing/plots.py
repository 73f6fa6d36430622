"""The report's figures, drawn from run records only: each function takes groups, returns a Figure.

Figures are built with `matplotlib.figure.Figure` directly, never pyplot, so nothing here touches
a global backend or state; `png` renders one with Agg.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from vanishing.activations import ActivationOptions, derivative, make_activation

if TYPE_CHECKING:
    from vanishing.report import Group

DPI = 100  # screen resolution: sharp in a browser, and the whole page stays well under 1 MB
WIDTH = 10.0  # inches: 1000 px, the page's column width
Z_RANGE = (-6.0, 6.0)  # where every activation's shape and slope are visible
DASHES = ("-", (0, (6, 2)), (0, (2, 1.5)), (0, (6, 2, 1.5, 2)))  # told apart where lines coincide


def number(value: float) -> str:
    """A ratio or norm for a label or sentence: 3 digits in [0.01, 1000), else scientific."""
    if not math.isfinite(value):
        return "not finite"
    return f"{value:.3g}" if 0.01 <= abs(value) < 1000 else f"{value:.1e}"


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes (Agg), without the timestamp metadata, so output is reproducible."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def colors(groups: Sequence[Group]) -> dict[str, str]:
    """One colour per activation, the same in every figure."""
    return {g.label: f"C{i % 10}" for i, g in enumerate(groups)}


def layer_colors(count: int) -> list[tuple[float, float, float, float]]:
    """One colour per layer, dark (input side) to light (output side), within one activation."""
    cmap = colormaps["viridis"]
    return [cmap(0.85 * i / max(count - 1, 1)) for i in range(count)]


def layer_ticks(count: int) -> list[str]:
    """Tick labels of the Linear layers: 1 .. L, then 'out'."""
    return [str(i) for i in range(1, count)] + ["out"]


def learning_curves(groups: Sequence[Group]) -> Figure:
    """Test accuracy and train/test loss per epoch, one line per activation, mean ± std band."""
    figure = Figure(figsize=(WIDTH, 3.8), layout="constrained")
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    color = colors(groups)
    for group in groups:
        c = color[group.label]
        epochs, mean, std = group.epoch_series("test_accuracy")
        accuracy_axes.plot(epochs, 100 * mean, "o-", color=c, markersize=3, label=group.label)
        band = (100 * (mean - std), 100 * (mean + std))
        accuracy_axes.fill_between(epochs, *band, color=c, alpha=0.2)
        for key, style in (("test_loss", "o-"), ("train_loss", "s--")):
            epochs, mean, std = group.epoch_series(key)
            loss_axes.plot(epochs, mean, style, color=c, markersize=3)
            loss_axes.fill_between(epochs, mean - std, mean + std, color=c, alpha=0.2)
    accuracy_axes.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy", title="Loss (solid: test, dashed: train)")
    loss_axes.set_yscale("log")  # losses fall by orders of magnitude; the log keeps the end visible
    last = max((len(g.ok[0].result.get("history", [])) for g in groups if g.ok), default=1)
    for axes in (accuracy_axes, loss_axes):
        axes.grid(alpha=0.3)
        axes.set_xlim(0.5, last + 0.5)
        axes.xaxis.get_major_locator().set_params(integer=True)
    figure.legend(loc="outside lower center", ncols=min(len(groups), 6), frameon=False)
    return figure


def gradient_flow(groups: Sequence[Group]) -> Figure:
    """Weight-gradient norm per layer at initialisation and after training, log scale."""
    figure = Figure(figsize=(WIDTH, 4.0), layout="constrained")
    init_axes, final_axes = figure.subplots(1, 2, sharey=True)
    color = colors(groups)
    for group in groups:
        c = color[group.label]
        for axes, key, runs in (
            (init_axes, "grad_norms_init", group.runs),  # before training: diverged runs count too
            (final_axes, "grad_norms_final", group.ok),
        ):
            mean, low, high = group.result_layers(key, runs, geometric=True)
            if not np.isfinite(mean).any():
                continue
            layers = np.arange(1, len(mean) + 1)
            label = None
            if axes is init_axes:
                label = f"{group.label}: {mean[0] / mean[-1]:.1e}"
            axes.plot(layers, mean, "o-", color=c, label=label)
            axes.fill_between(layers, low, high, color=c, alpha=0.2)
    depth = max(len(g.hidden) for g in groups) + 1
    for axes, title in (
        (init_axes, "At initialisation (step 0)"),
        (final_axes, "After training (last probe)"),
    ):
        axes.set_yscale("log")
        axes.set_xticks(range(1, depth + 1), layer_ticks(depth))
        axes.set(title=title, xlabel="layer (input side first)")
        axes.grid(alpha=0.3, which="both")
    init_axes.set_ylabel("‖dLoss/dW‖ (log)")
    figure.legend(
        loc="outside lower center",
        ncols=min(len(groups), 5),
        frameon=False,
        title="layer 1 / output gradient at initialisation",
        title_fontsize=9,
    )
    return figure


def step_edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges around probe steps (which need not be evenly spaced), for pcolormesh."""
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    middle = (steps[1:] + steps[:-1]) / 2
    return np.concatenate(
        [[steps[0] - (middle[0] - steps[0])], middle, [steps[-1] + (steps[-1] - middle[-1])]]
    )


def gradient_heatmaps(groups: Sequence[Group]) -> Figure:
    """Per activation, gradient norm by layer and training step, on one shared log colour scale."""
    series = [group.probe_series("grad_norms", geometric=True) for group in groups]
    positive = np.concatenate([np.zeros(0)] + [values[values > 0].ravel() for _, values in series])
    # One scale for all, so a darker row means less gradient whichever activation it belongs to.
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else LogNorm(1e-6, 1)
    figure = Figure(figsize=(WIDTH, 0.6 + 1.5 * len(groups)), layout="constrained")
    axes_list = np.atleast_1d(figure.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0])
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")  # grey: zero or not recorded
    mesh = None
    for axes, group, (steps, values) in zip(axes_list, groups, series, strict=True):
        axes.set_title(group.label, loc="left", fontsize=10)
        if not values.size:
            axes.text(0.5, 0.5, "no probes recorded", ha="center", transform=axes.transAxes)
            continue
        layers = values.shape[1]
        masked = np.ma.masked_invalid(np.where(values > 0, values, np.nan))
        mesh = axes.pcolormesh(
            step_edges(steps), np.arange(layers + 1) + 0.5, masked.T, norm=norm, cmap=cmap
        )
        axes.set_yticks(range(1, layers + 1), layer_ticks(layers))
        axes.set_ylabel("layer")
    axes_list[-1].set_xlabel("training step")
    if mesh is not None:
        figure.colorbar(mesh, ax=list(axes_list), label="‖dLoss/dW‖ (log)", shrink=0.9)
    return figure


def unit_health(groups: Sequence[Group]) -> Figure | None:
    """Per layer over training: saturated share (sigmoid, tanh, smooth), dead share (rectifiers)."""
    shown = [g for g in groups if g.health_key is not None]
    if not shown:
        return None
    columns = min(len(shown), 4)
    rows = math.ceil(len(shown) / columns)
    figure = Figure(figsize=(WIDTH, 0.5 + 2.8 * rows), layout="constrained")
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    for axes in axes_grid.ravel()[len(shown) :]:
        axes.set_visible(False)
    for axes, group in zip(axes_grid.ravel(), shown, strict=False):
        key = group.health_key
        steps, values = group.probe_series(key)
        layers = values.shape[1] if values.size else 0
        shades = layer_colors(layers)
        for i in range(layers):
            axes.plot(steps, 100 * values[:, i], color=shades[i], label=f"layer {i + 1}")
        top = float(np.nanmax(values)) if values.size and np.isfinite(values).any() else 0.0
        if key == "dead_fraction":
            # The epoch-end count over the whole training set: fewer units are dead on every one
            # of 60 000 images than on every one of the probe batch's few hundred.
            steps, values = group.epoch_layers("dead_fraction")
            for i in range(min(layers, values.shape[1] if values.size else 0)):
                axes.plot(steps, 100 * values[:, i], "o", color=shades[i], markersize=4)
        what = "dead units (%)" if key == "dead_fraction" else "saturated pairs (%)"
        axes.set_title(group.label, fontsize=10)
        axes.set(xlabel="training step", ylabel=what)
        axes.set_ylim(0, max(5.0, 110 * top))  # at least 0-5 %, so "none" looks like none
        axes.grid(alpha=0.3)
    # The deepest panel's layers name every colour.
    handles, labels = max(
        (axes.get_legend_handles_labels() for axes in axes_grid.ravel()), key=lambda h: len(h[1])
    )
    if labels:
        figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)
    return figure


def prelu_slopes(groups: Sequence[Group]) -> Figure | None:
    """The learned PReLU slope of each layer over training; None when no run learned slopes."""
    shown = [(g, g.probe_series("prelu_slopes")) for g in groups]
    shown = [(g, s) for g, s in shown if s[1].size]
    if not shown:
        return None
    figure = Figure(figsize=(WIDTH, 3.4), layout="constrained")
    axes_list = figure.subplots(1, len(shown), squeeze=False)[0]
    for axes, (group, (steps, values)) in zip(axes_list, shown, strict=True):
        shades = layer_colors(values.shape[1])
        for i in range(values.shape[1]):
            axes.plot(steps, values[:, i], color=shades[i], label=f"layer {i + 1}")
        axes.axhline(0, color="black", linewidth=0.8)  # slope 0: ReLU
        axes.axhline(1, color="grey", linewidth=0.8, linestyle=":")  # slope 1: linear
        axes.set(
            title=f"{group.label}: learned slope for z < 0",
            xlabel="training step",
            ylabel="slope a in max(z, a z)",
        )
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, frameon=False)
    return figure


def activation_shapes(groups: Sequence[Group]) -> Figure:
    """Each activation and its derivative over [-6, 6], with sigmoid's 1/4 bound marked."""
    figure = Figure(figsize=(WIDTH, 3.8), layout="constrained")
    value_axes, slope_axes = figure.subplots(1, 2)
    z = torch.linspace(*Z_RANGE, 601, dtype=torch.float64).unsqueeze(1)  # (601, 1)
    color = colors(groups)
    for index, group in enumerate(groups):
        config = group.runs[0].config
        options = ActivationOptions(
            negative_slope=config.get("negative_slope", 0.01),
            prelu_mode=config.get("prelu_mode", "layer"),
        )
        module = make_activation(group.activation.name, 1, options).double().eval()
        with torch.no_grad():
            value = module(z)
        slope = derivative(module, z)
        # Rectifiers coincide for z > 0: dashes of their own keep every line visible.
        style = {"color": color[group.label], "linestyle": DASHES[index % len(DASHES)]}
        value_axes.plot(z[:, 0], value[:, 0], label=group.label, linewidth=1.8, **style)
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
    figure.legend(loc="outside lower center", ncols=min(len(groups), 6), frameon=False)
    return figure


def attenuation(groups: Sequence[Group]) -> Figure:
    """Measured first/output gradient ratio at init next to the slope bound (max f')^L."""
    figure = Figure(figsize=(WIDTH, 3.4), layout="constrained")
    axes = figure.subplots()
    x = np.arange(len(groups))
    measured = np.array([g.vanishing_ratio_init for g in groups])
    bound = np.array([g.activation.derivative_bound ** len(g.hidden) for g in groups])
    for offset, values, label, c in (
        (-0.2, measured, "measured: layer 1 / output gradient at init", "C0"),
        (0.2, bound, "bound from the slopes alone: (max f')^L", "C7"),
    ):
        bars = axes.bar(x + offset, np.nan_to_num(values, nan=0.0), 0.38, label=label, color=c)
        axes.bar_label(bars, [number(v) for v in values], fontsize=8, padding=2)
    axes.set_yscale("log")
    axes.set_xticks(x, [g.label for g in groups])
    axes.axhline(1, color="black", linewidth=0.8)  # ratio 1: every layer gets as much as the last
    axes.set_ylabel("ratio (log)")
    axes.margins(y=0.25)
    axes.grid(alpha=0.3, axis="y", which="both")
    axes.legend(fontsize=8, frameon=False, loc="upper left")
    return figure
