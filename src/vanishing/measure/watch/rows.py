"""A watched run's records, as a training run's (`records`): its directory, held by one writer;
config.json (the model's description and layers) at the first row; metrics.jsonl (a probe row per
measured step, an epoch row per `log`); result.json at the end."""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vanishing import records
from vanishing.errors import UsageError
from vanishing.measure import probes
from vanishing.measure.watch.capture import Captures
from vanishing.measure.watch.layers import (
    RECURRENT,
    Layers,
    joint_norm,
    model_name,
    recurrent_kind,
)

WATCH_DIR = Path("runs") / "watch"  # where watched runs go without `out`
DESCRIPTION_CHARS = 4000  # repr(model) kept in config.json: enough to recognise the model
# What a second writer into a held directory should do (every rank of a DDP job, as users write).
ADVICE = (
    "give each job its own out= (the ranks of one torch.distributed job share one: every rank "
    "calls watch() and rank 0 writes)"
)


class Settings:
    """A watched run's config.json values (`records.open_run` takes anything with to_dict)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def to_dict(self) -> dict[str, Any]:
        return self.values


def logged_value(key: str, value: Any) -> float:
    """A logged value as a float (a 0-d tensor is read once, here); a UsageError otherwise."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise UsageError(
                f"log: {key} must be one number, got a tensor of shape {tuple(value.shape)}"
            )
        value = value.detach().item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"log: {key} must be a number, got {value!r}")
    return float(value)


def unique_dir(parent: Path, stem: str) -> Path:
    """parent/stem, else stem-2, stem-3, ...: the first one this call creates. mkdir is atomic,
    so two processes choosing at once never get the same directory."""
    parent.mkdir(parents=True, exist_ok=True)
    count = 1
    while True:
        path = parent / (stem if count == 1 else f"{stem}-{count}")
        try:
            path.mkdir()
        except FileExistsError:
            count += 1
            continue
        return path


def hold(out: Path | str | None, model: nn.Module) -> tuple[Path, int]:
    """The run directory (`out`, else a new runs/watch/<model class>-<date>-<time>) and the fd
    of its lock, held until the watch ends: a run directory has one writer, so a second watch
    into it, in another process or in this one, is refused with what to do."""
    run_dir = WATCH_DIR if out is None else Path(out)
    try:
        if out is None:
            stem = f"{model_name(model).lower()}-{time.strftime('%Y%m%d-%H%M%S')}"
            run_dir = unique_dir(WATCH_DIR, stem)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
        lock = records.hold_run(run_dir, ADVICE)
    except OSError as e:
        raise UsageError(f"watch: cannot write to {run_dir}: {e.strerror or e}") from None
    except UsageError as refused:
        if records.lock_holder(run_dir) == os.getpid():
            raise UsageError(
                f"watch: {run_dir} is being written by another watch in this process; "
                "close that watch first, or give each model its own out="
            ) from None
        raise UsageError(f"watch: {refused}") from None
    try:
        check_writable(run_dir)
    except BaseException:
        os.close(lock)
        raise
    return run_dir, lock


def check_writable(run_dir: Path) -> None:
    """Refuse, before the first step, a run directory the records cannot be written into: one
    where no file can be created, or whose record files are in the way (a directory, a file
    opened read-only), so that the user's optimizer.step() never meets the OSError."""
    where = run_dir
    try:
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-"):
            pass
        for name in (records.CONFIG, records.METRICS, records.RESULT):
            where = run_dir / name
            if os.path.exists(where):  # opened as the writer will, but not truncated yet
                os.close(os.open(where, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK))
    except OSError as e:
        raise UsageError(f"watch: cannot write to {where}: {e.strerror or e}") from None


class RunWriter:
    """Writes a watched run's rows as they come, and its result at the end. Without a lock
    (another rank's copy of a distributed job's run) it writes nothing but keeps the rows and
    the result as the writing rank does."""

    def __init__(
        self,
        run_dir: Path,
        lock: int | None,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        every: int,
        probe: tuple[Tensor, Tensor] | None,
        extra: dict[str, Any],
        layers: Layers,
        captures: Captures,
    ) -> None:
        self.run_dir, self.lock = run_dir, lock
        self.model, self.optimizer, self.every, self.probe = model, optimizer, every, probe
        self.extra = extra
        self.layers, self.captures = layers, captures
        self.config: dict[str, Any] | None = None
        self.writer: records.MetricsWriter | None = None
        self.first_row: dict[str, Any] | None = None
        self.last_row: dict[str, Any] | None = None
        self.epochs: list[dict[str, Any]] = []
        self.diverged_step: int | None = None
        self.lrs: list[float] = []  # the optimizer's lr at each measured step (a schedule moves it)
        self.started = time.perf_counter()
        self.closed = False

    def describe(self) -> dict[str, Any]:
        """config.json: the model's description, its layers and the watch's settings."""
        layers = self.layers
        acts = layers.fixed_activations
        kinds = [layers.activations[name][1].name for name in acts]
        recurrent = {
            name: recurrent_kind(module)
            for name, module in layers.weighted.items()
            if isinstance(module, RECURRENT) and name in layers.fixed_layers
        }
        # A recurrent layer's output passes its tanh (or nn.RNN's relu): never "linear".
        seen = kinds or list(recurrent.values())
        common = max(dict.fromkeys(seen), key=seen.count) if seen else "linear"
        optimizer = self.optimizer
        return {
            "source": "watch",
            "model": model_name(self.model),
            "description": repr(self.model)[:DESCRIPTION_CHARS],
            "parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            "layers": layers.fixed_layers,
            "activation_layers": acts,
            "activation_kinds": kinds,
            "layer_labels": layers.labels(),
            "tied": layers.tied,  # layer -> the layers whose weight is its own (lm_head: wte)
            "residual": layers.residual,  # a forward added a layer's input to a later output
            "recurrent_layers": list(recurrent),
            # activation layers that see every position of a sequence (a pooler sees one)
            "sequence_layers": [name for name in acts if name in layers.sequences],
            "activation": common,
            "hidden": [layers.widths.get(name, 0) for name in acts],
            "every": self.every,
            "probe_size": len(self.probe[0]) if self.probe is not None else None,
            "optimizer": type(optimizer).__name__.lower() if optimizer else None,
            # SGD's momentum, which changes what its step is (a running sum of gradients)
            "momentum": float(self.group("momentum") or 0.0),
            "lr": self.lrs[0] if self.lrs else self.lr(),
            "seed": None,
            "device": str(next(self.model.parameters()).device),
            **self.extra,
        }

    def group(self, key: str) -> Any:
        """A hyper-parameter of the optimizer's first group; None without one."""
        return self.optimizer.param_groups[0].get(key) if self.optimizer is not None else None

    def lr(self) -> float | None:
        """The optimizer's learning rate now (its first group's), None without one."""
        lr = self.optimizer.param_groups[0].get("lr") if self.optimizer is not None else None
        return float(lr) if isinstance(lr, (int, float)) else None

    def row(
        self, step: int, loss: Tensor | None, captures: Captures | None = None
    ) -> dict[str, Any]:
        """A probe row of the step's captures (this writer's own, else `captures`: a
        distributed job's combined ones), read back from the device at once."""
        layers = self.layers
        captures = captures if captures is not None else self.captures
        lr = self.lr()
        if lr is not None:
            self.lrs.append(lr)
        layers.fix()
        device = next(self.model.parameters()).device
        nan = torch.tensor(math.nan, device=device)
        width = probes.STATS + 2 * probes.HISTOGRAM_BINS + 1
        missing = torch.cat(  # an activation that did not run: no numbers, an empty histogram
            [
                torch.full((width - probes.HISTOGRAM_BINS,), math.nan),
                torch.zeros(probes.HISTOGRAM_BINS),
            ]
        ).to(device)
        present = [name for name in layers.fixed_layers if name in captures.grads]
        with torch.no_grad():
            layer_rows = []
            for name in layers.fixed_activations:
                block = captures.blocks.get(name)
                if block is None:
                    layer_rows.append(missing)
                    continue
                block = block.float()
                block[0] = captures.signals.get(name, nan)  # if backward reached it
                layer_rows.append(block)
            scalars = torch.stack(
                [captures.grads[name].float() for name in present]
                + [
                    captures.weight_norms.get(name, joint_norm(layers.weights[name]))
                    for name in layers.fixed_layers
                ]
                + [(loss if loss is not None else nan).float().reshape(())]
            )
            values = scalars.tolist()
            per_layer = torch.stack(layer_rows).tolist() if layer_rows else []
        # A layer no gradient reached (unused at this step) has none: null, not a number.
        profile = captures.time_profile()  # the recurrent modules' time profile, if any
        got = dict(zip(present, values, strict=False))
        grad_norms = [got.get(name) for name in layers.fixed_layers]
        weight_norms = values[len(present) : len(present) + len(layers.fixed_layers)]
        captures.clear()
        measured = probes.probe_row(
            values[-1] if loss is not None else None, grad_norms, per_layer, weight_norms
        )
        # the epoch under way, as training counts (from 1)
        return {"kind": "probe", "step": step, "epoch": len(self.epochs) + 1, **measured, **profile}

    def open(self) -> records.MetricsWriter | None:
        """config.json and metrics.jsonl, at the first row (the layers are known by then);
        None where this process writes nothing."""
        if self.config is None:
            self.layers.fix()
            self.config = self.describe()
            if self.lock is not None:
                self.writer = records.open_run(Settings(self.config), self.run_dir)
        return self.writer

    def write(self, row: dict[str, Any]) -> None:
        writer = self.open()
        if writer is not None:
            writer.write(row)
        if row["kind"] == "probe":
            self.first_row = self.first_row or row
            self.last_row = row
            numbers = [v for v in (*row["grad_norms"], row["loss"]) if v is not None]
            if self.diverged_step is None and not all(math.isfinite(v) for v in numbers):
                self.diverged_step = row["step"]

    def log(self, step: int, epoch: int | None, values: dict[str, Any]) -> dict[str, Any]:
        """Write an epoch row of the logged numbers (see `Watch.log`)."""
        if epoch is None:
            epoch = len(self.epochs) + 1
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise UsageError(f"log: epoch must be a whole number >= 0, got {epoch!r}")
        row: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": step}
        row.update({key: logged_value(key, value) for key, value in values.items()})
        accuracy = row.get("test_accuracy")
        if accuracy is not None and not 0 <= accuracy <= 1:
            raise UsageError(f"log: test_accuracy is a fraction in [0, 1], got {accuracy!r}")
        if self.diverged_step is None and any(
            not math.isfinite(row[key]) for key in ("train_loss", "test_loss") if key in row
        ):
            self.diverged_step = step
        self.write(row)
        self.epochs.append(row)
        return row

    def finish(self, steps: int, probe_seconds: float) -> records.RunResult:
        """result.json, written last (config.json too when no row came), then the lock let go."""
        self.open()
        first, last = self.first_row or {}, self.last_row or {}
        tested = [row for row in self.epochs if "test_accuracy" in row]
        losses = [row["test_loss"] for row in self.epochs if "test_loss" in row]
        if self.config is not None and len(set(self.lrs)) > 1:  # a schedule: say its range
            self.config["lr_range"] = [min(self.lrs), max(self.lrs)]
            if self.lock is not None:
                records.write_json(self.run_dir / records.CONFIG, self.config)
        elapsed = time.perf_counter() - self.started
        from vanishing.training.loop import versions  # torch's and numpy's versions, as runs record

        result = records.RunResult(
            status="diverged" if self.diverged_step is not None else "ok",
            test_accuracy=tested[-1]["test_accuracy"] if tested else math.nan,
            test_loss=losses[-1] if losses else math.nan,
            history=self.epochs,
            grad_norms_init=first.get("grad_norms", []),
            vanishing_ratio_init=first.get("vanishing_ratio", math.nan),
            signal_norms_init=first.get("signal_norms", []),
            grad_norms_final=last.get("grad_norms", []),
            saturated_fraction=last.get("saturated_fraction", []),
            dead_fraction=last.get("dead_fraction", []),
            steps=steps,
            train_seconds=max(0.0, elapsed - probe_seconds),
            eval_seconds=0.0,
            probe_seconds=probe_seconds,
            device=str(next(self.model.parameters()).device),
            versions=versions(),
            config=self.config or {},
            diverged_step=self.diverged_step,
            time_signal_norms_init=first.get("time_signal_norms", []),
            time_signal_norms_final=last.get("time_signal_norms", []),
            time_layers=last.get("time_layers", first.get("time_layers", [])),
            gates_init=first.get("gates", []),
            gates_final=last.get("gates", []),
        )
        try:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            if self.lock is None:
                result.run_dir = str(self.run_dir)
                return result
            return records.close_run(result, self.run_dir)
        finally:
            self.close()

    def close(self) -> None:
        """Close metrics.jsonl and let go of the run directory (once; the watch is over)."""
        if self.closed:
            return
        self.closed = True
        if self.writer is not None:
            self.writer.close()
        if self.lock is not None:
            os.close(self.lock)
