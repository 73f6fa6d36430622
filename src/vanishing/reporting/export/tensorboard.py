"""Run records as TensorBoard event files: one event directory per run (`TensorBoardTarget`).

The scalars are the tags of `tags.scalars`; besides them, per run:

    activation/LAYER (histogram)              probe rows' activation_histogram
    time/heatmap (image)                      probe rows: ||dL/dh_t||, a row of cells per
                                              recurrent layer, a column per step t, log colour
    time/heatmap_legend (text), config (text) the heatmap's scale; config.json

TensorBoard's Scalars tab gives each tag a chart of its own, in a section per prefix; the
custom-scalars layout written with them (`LAYOUT`, the "Custom Scalars" tab) draws every tag of a
prefix as the lines of one chart, so one chart shows the gradient norm of every layer.

The gradient through time is an image per probe, not a histogram: TensorBoard draws a histogram's
counts on a linear axis and its dashboards rebin it into about 30 buckets, so a gradient that
falls by decades over 784 steps would show as a flat line with a spike at the last steps; an
image keeps every step, its log colour shows the decades, and the Images tab's slider steps
through the probes on one colour scale (the run's, `TimeScale`).

The summaries come from tensorboardX, an optional extra imported only here when an export is
written; the event file is written here, synchronously and atomically (`EventFile`), not by
tensorboardX's writer thread: on a full disk that thread died and the export waited for it forever.
"""

from __future__ import annotations

import json
import math
import shlex
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

from vanishing import records
from vanishing.errors import UsageError
from vanishing.reporting.export.tags import number, row_step, scalars, time_profiles
from vanishing.reporting.export.target import Run
from vanishing.settings.naming import LayerNames

LOGDIR = "tensorboard"  # the default log directory, inside the first directory given

# Custom-scalars charts: {category: {chart title: tag regex}}; each regex (matched from the tag's
# start, as TensorBoard does) gathers a prefix's tags into one chart, a line per layer.
LAYOUT: dict[str, dict[str, str]] = {
    "vanishing: per layer": {
        "gradient norm ||dLoss/dW|| per layer": r"grad_norm/",
        "signal norm ||dLoss/dh|| per layer": r"signal_norm/",
        "dead fraction per layer (probe batch)": r"dead_fraction/",
        "dead fraction per layer (training set, epoch ends)": r"dead_fraction_epoch/",
        "saturated fraction per layer": r"saturated_fraction/",
        "weight norm per layer": r"weight_norm/",
        "update ratio per layer": r"update_ratio/",
    },
    "vanishing: training": {
        "loss": r"loss/",
        "test accuracy": r"accuracy/",
        "vanishing ratio (first layer / last layer)": r"vanishing_ratio$",
    },
    "vanishing: through time": {
        "gradient at the first step / at the last, ||dL/dh_1|| / ||dL/dh_T||": (
            r"time/.*/first_over_last$"
        ),
        "factor per step, (||dL/dh_1|| / ||dL/dh_T||) ** (1 / (T - 1))": r"time/.*/per_step$",
        "spectral norm of the recurrent weight W_hh": r"recurrent_norm/",
        "gate mean activation": r"gate/",
        "gate saturated share (below 0.05 or above 0.95)": r"gate_saturated/",
    },
}

# The time heatmap: each step at least this many pixels' share of the width, each recurrent
# layer a band this tall, a white gap between bands; grey where a step has no finite norm.
HEATMAP_WIDTH = 640
BAND_HEIGHT = 24
BAND_GAP = 2
NO_VALUE = (200, 200, 200)


@dataclass(frozen=True)
class Histogram:
    """One layer's activation histogram as TensorBoard's HistogramProto holds it."""

    min: float
    max: float
    num: int
    sum: float
    sum_squares: float
    bucket_limits: list[float]  # each bucket's right edge
    bucket_counts: list[int]


@dataclass(frozen=True)
class TimeScale:
    """The time heatmap's colour scale, one for all of a run's probes so that they compare:
    log10 of ||dL/dh_t|| from whole decade `low` (viridis' dark end) to `high` (its yellow)."""

    low: int
    high: int

    @classmethod
    def of(cls, rows: Sequence[dict[str, Any]]) -> TimeScale | None:
        """The decades every positive norm of the rows' time profiles lies in; None: none."""
        logs = [
            math.log10(v)
            for row in rows
            for steps in time_profiles(row)
            for v in steps
            if v is not None and v > 0
        ]
        if not logs:
            return None
        low = math.floor(min(logs))
        return cls(low, max(low + 1, math.ceil(max(logs))))

    def index(self, value: float) -> int:
        """The colour of a norm > 0: its place on the scale, 0 .. 255."""
        place = (math.log10(value) - self.low) / (self.high - self.low)
        return round(min(1.0, max(0.0, place)) * 255)


def viridis() -> Any:
    """matplotlib's viridis as 256 RGB colours, (256, 3) uint8: the live page's colours."""
    import matplotlib
    import numpy as np

    colours = matplotlib.colormaps["viridis"](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.round(colours * 255).astype(np.uint8)


def time_heatmap(profiles: Sequence[Sequence[float | None]], scale: TimeScale) -> Any:
    """The image of one probe's time profiles, (height, width, 3) uint8: a band of
    BAND_HEIGHT pixels per recurrent layer (the first on top), a column of cells per step t
    (t = 1 on the left), each coloured by `scale`; grey where a norm is missing or 0."""
    import numpy as np

    steps = max(len(p) for p in profiles)
    cell = max(1, math.ceil(HEATMAP_WIDTH / steps))  # pixels per step
    colours = viridis()
    height = len(profiles) * (BAND_HEIGHT + BAND_GAP) - BAND_GAP
    image = np.full((height, steps * cell, 3), 255, dtype=np.uint8)
    for layer, values in enumerate(profiles):
        band = np.array([NO_VALUE] * steps, dtype=np.uint8)
        for t, v in enumerate(values):
            if v is not None and v > 0:
                band[t] = colours[scale.index(v)]
        top = layer * (BAND_HEIGHT + BAND_GAP)
        image[top : top + BAND_HEIGHT] = np.repeat(band, cell, axis=0)[None]
    return image


def heatmap_legend(rows: Sequence[dict[str, Any]], scale: TimeScale) -> str:
    """How to read the time heatmap (TensorBoard's Text tab): rows, columns and colours."""
    first = next(row for row in rows if time_profiles(row))
    profiles = time_profiles(first)
    names = first.get("time_layers")
    layers = (
        ", ".join(map(str, names))
        if isinstance(names, list) and len(names) == len(profiles)
        else f"{len(profiles)} recurrent layer(s)"
    )
    steps = max(len(p) for p in profiles)
    return (
        f"time/heatmap: the gradient ||dL/dh_t|| reaching each time step, one band per recurrent "
        f"layer (top to bottom: {layers}), one column per step (t = 1 to {steps}, left to "
        f"right). Colour: log10 of the norm, viridis from 1e{scale.low} (dark purple) to "
        f"1e{scale.high} (yellow), the same scale at every probe; grey: no finite value. A "
        "band that darkens towards the left is a gradient vanishing through time."
    )


def histogram(record: Any, mean: Any = None, std: Any = None) -> Histogram | None:
    """TensorBoard's form of one recorded histogram ({"edges": bins + 1, "counts": bins}), None
    when it holds no value.

    min and max are the outer edges of the outermost non-empty bins: the probes' edges run from
    the smallest value to the largest, so these are exact (TensorBoard draws its first and last
    bucket from them). sum and sum_squares come from the row's activation mean and std (torch's,
    with Bessel's correction) over the same values when they are finite; otherwise they are
    estimated with every value at its bin's centre.
    """
    if not isinstance(record, dict):
        return None
    edges, counts = record.get("edges"), record.get("counts")
    if not isinstance(edges, list) or not isinstance(counts, list):
        return None
    if len(edges) != len(counts) + 1 or not counts:
        return None
    values = [number(e) for e in edges]
    if any(e is None for e in values) or not all(isinstance(c, int) for c in counts):
        return None
    edge = [float(e) for e in values if e is not None]
    num = sum(counts)
    if num <= 0:
        return None
    filled = [i for i, c in enumerate(counts) if c > 0]
    first, last = filled[0], filled[-1]
    mean_value, std_value = number(mean), number(std)
    if mean_value is not None and std_value is not None:
        total = mean_value * num
        squares = (num - 1) * std_value**2 + num * mean_value**2
    else:
        centres = [(edge[i] + edge[i + 1]) / 2 for i in range(len(counts))]
        total = sum(c * x for c, x in zip(counts, centres, strict=True))
        squares = sum(c * x * x for c, x in zip(counts, centres, strict=True))
    return Histogram(
        min=edge[first],
        max=edge[last + 1],
        num=num,
        sum=total,
        sum_squares=squares,
        bucket_limits=edge[1:],
        bucket_counts=list(counts),
    )


def histograms(config: dict[str, Any], row: dict[str, Any]) -> list[tuple[str, Histogram]]:
    """(activation/LAYER, histogram) for each activation layer of a probe row."""
    recorded = row.get("activation_histogram")
    if row.get("kind") != "probe" or not isinstance(recorded, list):
        return []
    means, stds = row.get("activation_mean"), row.get("activation_std")
    found = []
    for i, name in enumerate(LayerNames.of(config).tags("activation", len(recorded))):
        mean = means[i] if isinstance(means, list) and len(means) == len(recorded) else None
        std = stds[i] if isinstance(stds, list) and len(stds) == len(recorded) else None
        if (h := histogram(recorded[i], mean, std)) is not None:
            found.append((f"activation/{name}", h))
    return found


def layout() -> dict[str, dict[str, list]]:
    """The custom-scalars layout in tensorboardX's form: a Multiline chart per LAYOUT entry."""
    return {
        category: {title: ["Multiline", [regex]] for title, regex in charts.items()}
        for category, charts in LAYOUT.items()
    }


def config_text(config: Any) -> str:
    """config.json as a Markdown code block, for TensorBoard's Text tab."""
    body = json.dumps(config, indent=2).replace("\n", "\n    ")
    return "    " + body  # indented: Markdown's code block, whatever the text holds


@dataclass(frozen=True)
class TensorBoard:
    """What an export takes from tensorboardX: its summaries and the event records' checksum."""

    summary: ModuleType  # tensorboardX.summary: scalar, text, custom_scalars, histogram_raw, image
    event: Any  # tensorboardX.proto.event_pb2.Event
    masked_crc32c: Any  # the TFRecord framing's checksum


def import_writer() -> TensorBoard:
    """tensorboardX's summaries; a UsageError saying how to install it when it is missing."""
    try:
        from tensorboardX import summary
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.record_writer import masked_crc32c
    except ImportError:
        raise UsageError(
            "tensorboard export needs tensorboardX: pip install 'vanishing[tensorboard]'"
        ) from None
    return TensorBoard(summary, Event, masked_crc32c)


class EventFile:
    """A TensorBoard event file written to `f` as tensorboardX's writer lays it out (a version
    event, then one TFRecord per event), in the caller's thread: a failed write (a full disk)
    raises here, where the caller hears it."""

    def __init__(self, tb: TensorBoard, f: BinaryIO) -> None:
        self.tb, self.f = tb, f
        self.write(tb.event(wall_time=time.time(), file_version="brain.Event:2"))

    def write(self, event: Any) -> None:
        data = event.SerializeToString()
        header = struct.pack("Q", len(data))
        crc = self.tb.masked_crc32c
        self.f.write(header + struct.pack("I", crc(header)) + data + struct.pack("I", crc(data)))

    def add(self, summary: Any, step: int | None = None) -> None:
        event = self.tb.event(summary=summary, wall_time=time.time())
        if step is not None:
            event.step = step
        self.write(event)


def event_file_name() -> str:
    """An event file's name as tensorboardX gives it (TensorBoard reads `events.out.tfevents.*`)."""
    return f"events.out.tfevents.{str(time.time())[:10]}.{socket.gethostname()}"


def write_events(tb: TensorBoard, config: dict[str, Any], rows: list[dict], f: BinaryIO) -> None:
    """One run's events: the custom-scalars layout, config.json as text (and how to read the
    time heatmap), then every row's scalars, histograms and time heatmap in record order
    (steps never go back within a tag)."""
    events = EventFile(tb, f)
    events.add(tb.summary.custom_scalars(layout()))
    events.add(tb.summary.text("config", config_text(config)), step=0)
    scale = TimeScale.of(rows)
    if scale is not None:
        events.add(tb.summary.text("time/heatmap_legend", heatmap_legend(rows, scale)), step=0)
    for row in rows:
        step = row_step(row)
        if step is None:
            continue
        for tag, value in scalars(config, row):
            events.add(tb.summary.scalar(tag, value), step=step)
        profiles = time_profiles(row)
        if scale is not None and any(profiles):
            image = time_heatmap(profiles, scale)
            events.add(tb.summary.image("time/heatmap", image, dataformats="HWC"), step=step)
        for tag, h in histograms(config, row):
            summary = tb.summary.histogram_raw(
                tag,
                min=h.min,
                max=h.max,
                num=h.num,
                sum=h.sum,
                sum_squares=h.sum_squares,
                bucket_limits=h.bucket_limits,
                bucket_counts=h.bucket_counts,
            )
            events.add(summary, step=step)


def write_run(tb: TensorBoard, config: dict[str, Any], rows: list[dict], out: Path) -> None:
    """One run's event file in `out`, written atomically (`records.write_atomic`: a full disk is
    a WriteError naming the file, and leaves no part of it), then an earlier export's removed
    (TensorBoard would read both and draw every point twice)."""
    path = out / event_file_name()
    records.write_atomic(path, lambda f: write_events(tb, config, rows, f))
    for old in out.glob("events.out.tfevents.*"):
        if old.name != path.name:
            old.unlink()


class TensorBoardTarget:
    """Event files under `where`, a directory per run named by its path below the directory
    given; a run exported again replaces its earlier event file."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.tb = import_writer()

    def write(self, run: Run) -> Path:
        out = self.where / run.name
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_run(self.tb, run.records.recorded, run.records.metrics, out)
        except records.WriteError:
            raise  # the file it could not write, and why (a full disk): one line
        except OSError as e:
            raise UsageError(
                f"cannot write to the TensorBoard log directory {self.where}: {e.strerror or e}"
            ) from None
        return out

    def close(self) -> None:
        pass

    def written(self, count: int) -> str:
        return f"{count} run(s) written as TensorBoard event files to {self.where}"

    def open_with(self) -> str:
        return f"open them with: tensorboard --logdir {shlex.quote(str(self.where))}"
