"""Run records as TensorBoard event files: `export_runs(dirs, logdir)`, one event directory per run.

Reads records only (config.json, metrics.jsonl), from a training run or a watch run alike. The
tags, per run:

    loss/train, loss/test, accuracy/test      epoch rows (step: the row's step)
    loss/probe, vanishing_ratio               probe rows
    grad_norm/LAYER, weight_norm/LAYER,       probe rows, per weighted layer (config "layers",
    update_ratio/LAYER                        else layer1..layerN and output)
    signal_norm/LAYER, saturated_fraction/    probe rows, per activation layer (config
    LAYER, dead_fraction/LAYER                "layer_labels", else layer1..layerN)
    dead_fraction_epoch/LAYER                 epoch rows: dead units over the training set
    logged/KEY                                any other number of an epoch row (a watch run's log)
    activation/LAYER (histogram)              probe rows' activation_histogram
    config (text)                             config.json

TensorBoard's Scalars tab gives each tag a chart of its own, in a section per prefix; the
custom-scalars layout written with them (`LAYOUT`, the "Custom Scalars" tab) draws every tag of a
prefix as the lines of one chart, so one chart shows the gradient norm of every layer.

The summaries come from tensorboardX, an optional extra imported only here when an export is
written; the event file is written here, synchronously and atomically (`EventFile`), not by
tensorboardX's writer thread: on a full disk that thread died and the export waited for it forever.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

from vanishing import records
from vanishing.errors import UsageError, choices_error
from vanishing.reporting.loading import read_run, run_dirs_under
from vanishing.reporting.results import RunRecords
from vanishing.settings.naming import LayerNames, clean_tag

FORMATS = ("tensorboard",)
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
}

# Per-layer lists of a probe row: (record key, tag prefix, names: weighted or activation layers).
PER_LAYER = (
    ("grad_norms", "grad_norm", "weighted"),
    ("weight_norms", "weight_norm", "weighted"),
    ("update_ratio", "update_ratio", "weighted"),
    ("signal_norms", "signal_norm", "activation"),
    ("saturated_fraction", "saturated_fraction", "activation"),
    ("dead_fraction", "dead_fraction", "activation"),
)
EPOCH_SCALARS = {
    "train_loss": "loss/train",
    "test_loss": "loss/test",
    "test_accuracy": "accuracy/test",
}
# Epoch-row keys that are not measurements of the model (where and how long), left out.
NOT_LOGGED = {"kind", "epoch", "step"}


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


@dataclass
class Exported:
    """What `export_runs` wrote: the log directory, each run's event directory, and notes on
    the runs it skipped."""

    logdir: Path
    runs: list[tuple[Path, Path]] = field(default_factory=list)  # (run directory, event dir)
    notes: list[str] = field(default_factory=list)


def number(value: Any) -> float | None:
    """A record's value as a finite float, None for null (non-finite), a bool or a non-number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def row_step(row: dict[str, Any]) -> int | None:
    """The step a row is drawn at: its own, else (a row logged without one) its epoch."""
    for key in ("step", "epoch"):
        value = row.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def per_layer(
    config: dict[str, Any], values: Any, prefix: str, kind: str
) -> Iterator[tuple[str, float]]:
    """(prefix/LAYER, value) for each finite value of a per-layer list."""
    if not isinstance(values, list):
        return
    for name, value in zip(LayerNames.of(config).tags(kind, len(values)), values, strict=True):
        if (v := number(value)) is not None:
            yield f"{prefix}/{name}", v


def scalars(config: dict[str, Any], row: dict[str, Any]) -> list[tuple[str, float]]:
    """(tag, value) of every scalar one metrics row holds; nulls (non-finite values) left out."""
    found: list[tuple[str, float]] = []
    if row.get("kind") == "probe":
        for key, tag in (("loss", "loss/probe"), ("vanishing_ratio", "vanishing_ratio")):
            if (v := number(row.get(key))) is not None:
                found.append((tag, v))
        for key, prefix, kind in PER_LAYER:
            found.extend(per_layer(config, row.get(key), prefix, kind))
    elif row.get("kind") == "epoch":
        for key, value in row.items():
            if key in EPOCH_SCALARS:
                tag = EPOCH_SCALARS[key]
            elif key in NOT_LOGGED or key.endswith("_seconds") or key == "dead_fraction":
                continue
            else:
                tag = f"logged/{clean_tag(key)}"
            if (v := number(value)) is not None:
                found.append((tag, v))
        found.extend(
            per_layer(config, row.get("dead_fraction"), "dead_fraction_epoch", "activation")
        )
    return found


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


def event_names(dirs: Sequence[Path], found: list[list[Path]]) -> list[str]:
    """Each run's event directory, relative to the log directory: its path below the directory
    given (a run given itself: its name), below that directory's name when several are given;
    a name taken twice is numbered."""
    names = []
    for given, run_dirs in zip(dirs, found, strict=True):
        base = given.resolve().name or "run"
        for run_dir in run_dirs:
            relative = run_dir.relative_to(given).as_posix() if run_dir != given else base
            names.append(relative if len(dirs) == 1 or run_dir == given else f"{base}/{relative}")
    taken: dict[str, int] = {}
    result = []
    for name in names:
        taken[name] = taken.get(name, 0) + 1
        result.append(name if taken[name] == 1 else f"{name}-{taken[name]}")
    return result


def find_runs(paths: Sequence[Path | str]) -> tuple[list[Path], list[str]]:
    """Every run directory under the given directories (each once), with its event name."""
    found = run_dirs_under(paths)
    return [run for runs in found for run in runs], event_names([Path(p) for p in paths], found)


@dataclass(frozen=True)
class TensorBoard:
    """What an export takes from tensorboardX: its summaries and the event records' checksum."""

    summary: ModuleType  # tensorboardX.summary: scalar, text, custom_scalars, histogram_raw
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
    """One run's events: the custom-scalars layout, config.json as text, then every row's scalars
    and histograms in record order (steps never go back within a tag)."""
    events = EventFile(tb, f)
    events.add(tb.summary.custom_scalars(layout()))
    events.add(tb.summary.text("config", config_text(config)), step=0)
    for row in rows:
        step = row_step(row)
        if step is None:
            continue
        for tag, value in scalars(config, row):
            events.add(tb.summary.scalar(tag, value), step=step)
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


def export_runs(
    dirs: Sequence[Path | str], to: str = "tensorboard", logdir: Path | str | None = None
) -> Exported:
    """Write the records of every run under `dirs` (a run, a compare, a sweep) as TensorBoard
    event files: one directory per run under `logdir` (default: DIR/tensorboard of the first
    DIR), named by the run directory's path below DIR."""
    if to not in FORMATS:
        raise choices_error("export format", to, FORMATS)
    if not dirs:
        raise UsageError("give at least one directory of runs")
    run_dirs, names = find_runs(dirs)
    tb = import_writer()
    exported = Exported(Path(logdir) if logdir is not None else Path(dirs[0]) / LOGDIR)
    for run_dir, name in zip(run_dirs, names, strict=True):
        run = read_run(run_dir, failed=True)  # the report's reader; a failed run's rows too
        if not isinstance(run, RunRecords):
            exported.notes.append(run)
            continue
        out = exported.logdir / name
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_run(tb, run.recorded, run.metrics, out)
        except records.WriteError:
            raise  # the file it could not write, and why (a full disk): one line
        except OSError as e:
            raise UsageError(
                f"cannot write to the TensorBoard log directory {exported.logdir}: "
                f"{e.strerror or e}"
            ) from None
        exported.runs.append((run_dir, out))
    return exported
