"""Train one MLP and measure it: `train(config) -> RunResult`, the core everything else calls."""

from __future__ import annotations

import contextlib
import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn import functional as F

import vanishing
from vanishing import records
from vanishing.data import sequences
from vanishing.data.datasets import Dataset, load_dataset
from vanishing.data.sequences import to_inputs  # noqa: F401 - re-exported (bench)
from vanishing.devices import resolve_device, sync
from vanishing.errors import UsageError
from vanishing.measure import probes
from vanishing.model.activations import get_activation
from vanishing.model.mlp import (
    MLP,
    build_model,
    make_optimizer,
)
from vanishing.model.recurrent import RECURRENT, RecurrentNet, build_recurrent, weights_of
from vanishing.records import RunResult
from vanishing.settings.config import TrainConfig

EVAL_CHUNK = 10000  # test rows per evaluation pass: a few layers' outputs at a time
# Values of one layer's output per evaluation pass (64 MB): a recurrent layer's output holds T
# steps per row, so a pixel sequence's pass takes a few hundred rows, not EVAL_CHUNK.
EVAL_VALUES = 2**24
Model = MLP | RecurrentNet
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def versions() -> dict[str, str]:
    """Library versions, for the record."""
    return {
        "vanishing": vanishing.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def make_model(config: TrainConfig) -> Model:
    """The config's model, initialised from its seed (on the CPU)."""
    if config.arch in RECURRENT:
        return build_recurrent(
            config.arch,
            config.hidden,
            config.activation,
            sequences.input_size(config),
            sequences.outputs(config.dataset),
            config.init,
            config.options,
            seed=config.seed,
            init_gain=config.init_gain,
            forget_bias=config.forget_bias,
        )
    return build_model(
        config.hidden,
        config.activation,
        config.init,
        config.options,
        seed=config.seed,
        norm=config.norm,
        residual=config.residual,
        init_gain=config.init_gain,
    )


def clip_gradients(model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the gradient norm over all the model's parameters to `max_norm` (clip_grad_norm_);
    whether it clipped (the norm was above it), a bool tensor left on the device."""
    total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return total > max_norm


def check_batch_norm(config: TrainConfig, samples: int) -> None:
    """Batch norm needs two samples or more in every batch it normalises with its statistics:
    the last batch of an epoch too (the config itself refuses batches and probe batches of one)."""
    if config.norm == "batch" and samples % config.batch_size == 1:
        raise UsageError(
            f"batch norm needs 2 samples or more per batch: --batch-size {config.batch_size} "
            f"leaves a batch of 1 of the {samples} training samples; choose another"
        )


def squared_error(
    output: torch.Tensor, target: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """A regression's loss: output (batch, 1), target (batch,)."""
    return F.mse_loss(output.squeeze(-1), target, reduction=reduction)


def loss_function(task: str) -> LossFunction:
    """Cross-entropy for a classification, the squared error for a regression (`sequences.task`)."""
    return squared_error if task == "regression" else F.cross_entropy


def eval_chunk(model: Model, x: torch.Tensor) -> int:
    """Rows per evaluation pass: EVAL_CHUNK, fewer where one row's layer output is T steps."""
    if not isinstance(model, RecurrentNet):
        return EVAL_CHUNK
    return sequence_rows(x.shape[1], max(weights_of(layer)[1].shape[1] for layer in model.layers))


def sequence_rows(steps: int, widest: int) -> int:
    """Rows of T = `steps` per evaluation pass of a recurrent network whose widest layer has
    `widest` units: as many as hold EVAL_VALUES values of its output, at most EVAL_CHUNK (the
    memory estimate counts the same)."""
    return max(1, min(EVAL_CHUNK, EVAL_VALUES // (steps * widest)))


@torch.no_grad()
def evaluate(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    chunk: int | None = None,
    task: str = "classification",
) -> tuple[float, float | None]:
    """Mean per-sample loss and accuracy over a whole split (batch norm: running statistics);
    a regression's accuracy is None."""
    was_training = model.training
    model.eval()
    chunk = chunk or eval_chunk(model, x)
    loss = loss_function(task)
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, len(x), chunk):
        output = model(x[start : start + chunk])
        target = y[start : start + chunk]
        loss_sum += loss(output, target, reduction="sum")  # type: ignore[call-arg]
        if task != "regression":
            correct += (output.argmax(dim=1) == target).sum()
    model.train(was_training)
    total, right = torch.stack([loss_sum, correct.to(loss_sum.dtype)]).tolist()
    return total / len(x), None if task == "regression" else right / len(x)


EpochCallback = Callable[[dict[str, Any]], None]
StepCallback = Callable[[int], None]


@contextlib.contextmanager
def denormals_flushed() -> Iterator[None]:
    """While training, compute with denormal floats as zero (where the CPU supports it).

    Under Adam, the moment estimates of dead ReLU units decay towards zero through the denormal
    range, where x86 arithmetic is many times slower: ReLU epochs took about 20 % longer than
    leaky ReLU's. Values below 1.2e-38 are far below anything the measurements resolve. The
    setting is process-wide, so it is switched back off (the default) when training ends.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def train(
    config: TrainConfig,
    *,
    dataset: Dataset | None = None,
    run_dir: Path | str | None = None,
    data_dir: Path | str | None = None,
    verify: bool = True,
    on_epoch: EpochCallback | None = None,
    on_steps: StepCallback | None = None,
    resume: bool = False,
) -> RunResult:
    """Train one model as `config` says, probing as it goes; write records when `run_dir` is set.

    Deterministic for a given config on the CPU (same thread count). A non-finite loss ends the
    run with status "diverged"; it is recorded, not raised. With `resume`, the
    run continues from its last checkpoint (an epoch end) in `run_dir`, if it has one, to the
    same result as an uninterrupted run; without, the run starts afresh.
    """
    device = resolve_device(config.device)
    checkpoint = None
    if resume and run_dir is not None:
        checkpoint = records.load_checkpoint(config, run_dir, device)
    if dataset is None:
        dataset = load_dataset(config.dataset, data_dir=data_dir, verify=verify)
    log = RunLog(config, None, on_epoch)
    if checkpoint is not None:
        log.load_state_dict(checkpoint["log"], checkpoint["path"])
    writer = records.open_run(config, run_dir, log.offset if checkpoint is not None else None)
    log.writer = writer
    try:
        # fork_rng: the run's random draws (RReLU's slopes) never leak into the caller's RNG.
        with (
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
            denormals_flushed(),
        ):
            torch.manual_seed(config.seed)
            fit(config, dataset, device, log, on_steps, run_dir=run_dir, checkpoint=checkpoint)
    finally:
        if writer is not None:
            writer.close()
    return records.close_run(log.result(device), run_dir)


@dataclass
class RunLog:
    """One run's records as they accrue (probe and epoch rows, status, timings) -> RunResult.

    Shared by the single-model loop (`fit`) and the grouped one (`group.fit_group`), so that both
    write the same rows and results.
    """

    config: TrainConfig
    writer: records.MetricsWriter | None = None
    on_epoch: EpochCallback | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    first_probe: dict[str, Any] | None = None
    last_probe: dict[str, Any] = field(default_factory=dict)
    dead: list[float] = field(default_factory=list)  # per hidden layer, at the last epoch end
    status: str = "ok"
    steps: int = 0
    diverged_step: int | None = None
    finite_probe: dict[str, Any] | None = None  # step and norms of the last all-finite probe
    train_seconds: float = 0.0  # optimisation steps only
    eval_seconds: float = 0.0
    probe_seconds: float = 0.0
    clipped_steps: int | None = None  # steps whose gradient was clipped; None: no clipping
    resumed_offset: int = 0  # metrics.jsonl bytes that the loaded checkpoint covers
    resumed_crc: int | None = None  # their CRC-32 (None: a checkpoint older than it)
    baseline_loss: float | None = None  # a regression's: the test loss of answering 1

    # What a checkpoint keeps of the log (all but config, writer and callback), and the types
    # its JSON holds them as (checked on resume: a damaged checkpoint is refused, not trained on).
    STATE: ClassVar[dict[str, tuple[type, ...]]] = {
        "history": (list,),
        "first_probe": (dict, type(None)),
        "last_probe": (dict,),
        "dead": (list,),
        "status": (str,),
        "steps": (int,),
        "diverged_step": (int, type(None)),
        "finite_probe": (dict, type(None)),
        "train_seconds": (int, float),
        "eval_seconds": (int, float),
        "probe_seconds": (int, float),
        "clipped_steps": (int, type(None)),
    }

    def __post_init__(self) -> None:
        self.dead = self.dead or [0.0] * len(self.config.hidden)
        if self.config.clip_grad_norm is not None and self.clipped_steps is None:
            self.clipped_steps = 0

    @property
    def offset(self) -> int:
        """Bytes of metrics.jsonl written so far (what a checkpoint covers)."""
        return self.writer.offset if self.writer is not None else self.resumed_offset

    @property
    def crc(self) -> int | None:
        """The CRC-32 of those bytes (`records.check_metrics` compares it on resume)."""
        return self.writer.crc if self.writer is not None else self.resumed_crc

    def state_dict(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in self.STATE}
        return {**state, "offset": self.offset, "crc": self.crc}

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        """Continue from a checkpoint's log (`records.load_checkpoint` checked its offset); one
        of other types is refused: `{source}: not a readable checkpoint (...)`."""
        for name, types in self.STATE.items():
            value = state.get(name)
            if name in state and (not isinstance(value, types) or isinstance(value, bool)):
                raise records.unreadable(source, f"log {name} is a {type(value).__name__}")
        if not all(
            isinstance(row, dict) and "test_accuracy" in row and "test_loss" in row
            for row in state.get("history", [])
        ):
            raise records.unreadable(source, "log history holds something other than epoch rows")
        for name in self.STATE:
            if name in state:  # a checkpoint older than a field keeps the field's start value
                setattr(self, name, state[name])
        self.resumed_offset = state["offset"]
        self.resumed_crc = state.get("crc")

    @property
    def running(self) -> bool:
        return self.status == "ok"

    def emit(self, row: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.write(row)

    def probe(
        self, step: int, epoch: int, measured: dict[str, Any], update_ratio: list[float]
    ) -> None:
        """Record one probe point: `probes.measure`'s row and the step's update ratios."""
        row = {"kind": "probe", "step": step, "epoch": epoch, **measured}
        row["update_ratio"] = update_ratio
        self.emit(row)
        self.first_probe = self.first_probe or row
        self.last_probe = row
        norms = [*row["grad_norms"], *row.get("weight_norms", [])]
        if all(math.isfinite(v) for v in norms):
            self.finite_probe = {
                "step": step,
                "grad_norms": row["grad_norms"],
                "weight_norms": row.get("weight_norms"),
            }

    def end_epoch(
        self,
        epoch: int,
        step: int,
        train_loss: float,
        test_loss: float,
        test_accuracy: float | None,
        train_seconds: float,
        eval_seconds: float,
        clipped_steps: int | None = None,
    ) -> None:
        """Record an epoch row (dead_fraction from `self.dead`); a non-finite test loss diverges.

        `clipped_steps`: the epoch's steps whose gradient was clipped, when clipping is on; the
        row has the key only then, and the run's total adds it up.
        """
        self.eval_seconds += eval_seconds
        row = {
            "kind": "epoch",
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            "dead_fraction": self.dead,
        }
        if self.baseline_loss is not None:
            row["baseline_loss"] = self.baseline_loss
        if clipped_steps is not None:
            row["clipped_steps"] = clipped_steps
            self.clipped_steps = (self.clipped_steps or 0) + clipped_steps
        self.history.append(row)
        self.emit(row)
        if self.on_epoch is not None:
            self.on_epoch(row)
        self.steps = step
        if not np.isfinite(test_loss):
            self.diverge(step, epoch)

    def diverge(self, step: int, epoch: int) -> None:
        """The loss became non-finite by `step`: the run ends here, recorded, not raised."""
        self.status, self.diverged_step, self.steps = "diverged", step, step
        self.emit({"kind": "diverged", "step": step, "epoch": epoch})

    def result(self, device: torch.device) -> RunResult:
        """The RunResult of what was recorded."""
        init = self.first_probe or {}
        last = self.last_probe
        regression = sequences.task(self.config.dataset) == "regression"
        return RunResult(
            status=self.status,
            test_accuracy=(
                None
                if regression
                else self.history[-1]["test_accuracy"]
                if self.history
                else float("nan")
            ),
            test_loss=self.history[-1]["test_loss"] if self.history else float("nan"),
            history=self.history,
            grad_norms_init=init.get("grad_norms", []),
            vanishing_ratio_init=init.get("vanishing_ratio", float("nan")),
            signal_norms_init=init.get("signal_norms", []),
            grad_norms_final=last.get("grad_norms", []),
            saturated_fraction=last.get("saturated_fraction", []),
            dead_fraction=self.dead,
            steps=self.steps,
            train_seconds=self.train_seconds,
            eval_seconds=self.eval_seconds,
            probe_seconds=self.probe_seconds,
            device=str(device),
            versions=versions(),
            config=self.config.to_dict(),
            diverged_step=self.diverged_step,
            norms_before_divergence=None if self.running else self.finite_probe,
            error=None if self.running else f"non-finite loss by step {self.diverged_step}",
            clipped_steps=self.clipped_steps,
            time_signal_norms_init=init.get("time_signal_norms", []),
            time_signal_norms_final=last.get("time_signal_norms", []),
            time_layers=last.get("time_layers", init.get("time_layers", [])),
            gates_init=init.get("gates", []),
            gates_final=last.get("gates", []),
            task="regression" if regression else "classification",
            baseline_loss=self.baseline_loss,
        )


def fit(
    config: TrainConfig,
    dataset: Dataset,
    device: torch.device,
    log: RunLog,
    on_steps: StepCallback | None = None,
    run_dir: Path | str | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> Model:
    """The training loop proper (see `train`): records go to `log`; returns the trained model.

    With `run_dir`, a checkpoint is saved at every epoch end; `checkpoint` continues from one.
    `on_steps` may raise (KeyboardInterrupt, to stop): it is called between steps, never during
    a write.
    """
    activation = get_activation(config.activation)
    model = make_model(config).to(device)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, config.momentum)
    task = sequences.task(config.dataset)
    loss_fn = loss_function(task)
    # (N, 784) for an MLP, (N, T, features) for a recurrent network; labels or sums (N,).
    x_train = sequences.inputs(dataset, "train", config, device)
    y_train = sequences.targets(dataset, "train", config, device)
    x_test = sequences.inputs(dataset, "test", config, device)
    y_test = sequences.targets(dataset, "test", config, device)
    if task == "regression":
        log.baseline_loss = sequences.baseline_loss(y_test)
    n = len(x_train)
    check_batch_norm(config, n)
    clip = config.clip_grad_norm
    # Data order and probe batch come from the run's own generator: reproducible per seed.
    generator = torch.Generator().manual_seed(config.seed)
    probe_index = torch.randperm(n, generator=generator)[: config.probe_size].to(device)
    x_probe, y_probe = x_train[probe_index], y_train[probe_index]

    step, first_epoch = 0, 1
    if checkpoint is not None:
        records.check_fits(checkpoint, model)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        generator.set_state(checkpoint["generator"])
        torch.set_rng_state(checkpoint["torch_rng"])
        step, first_epoch = checkpoint["step"], checkpoint["epoch"] + 1
    for epoch in range(first_epoch, config.epochs + 1):
        if not log.running:
            break
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        loss_sum = torch.zeros((), device=device)  # on the device: no host sync per step
        clipped = torch.zeros((), dtype=torch.long, device=device)  # this epoch's clipped steps
        sync(device)
        start = time.perf_counter()
        epoch_probe_seconds = 0.0
        for begin in range(0, n, config.batch_size):
            index = order[begin : begin + config.batch_size]
            x, y = x_train[index], y_train[index]  # (batch, 784), (batch,)
            probing = step % config.probe_every == 0
            if probing:
                probe_start = time.perf_counter()
                if not torch.isfinite(loss_sum):
                    log.diverge(step, epoch)
                    break
                if isinstance(model, RecurrentNet):
                    measured = probes.measure_recurrent(
                        model, activation, x_probe, y_probe, loss_fn
                    )
                else:
                    measured = probes.measure(model, activation, x_probe, y_probe)
                before = probes.snapshot(model)
                epoch_probe_seconds += time.perf_counter() - probe_start
                if not all(map(math.isfinite, measured["grad_norms"])):  # gradient overflow
                    log.diverge(step, epoch)
                    break
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                clipped += clip_gradients(model, clip)
            optimizer.step()
            loss_sum += loss.detach() * len(index)
            if probing:
                probe_start = time.perf_counter()
                log.probe(step, epoch, measured, probes.update_ratios(model, before))
                epoch_probe_seconds += time.perf_counter() - probe_start
            step += 1
            if on_steps is not None:
                on_steps(1)
        sync(device)
        epoch_train_seconds = time.perf_counter() - start - epoch_probe_seconds
        log.train_seconds += epoch_train_seconds
        log.probe_seconds += epoch_probe_seconds
        if not log.running:
            break
        train_loss = float(loss_sum) / n
        clipped_steps = int(clipped) if clip is not None else None
        if not np.isfinite(train_loss):
            log.diverge(step, epoch)
            break

        start = time.perf_counter()
        test_loss, test_accuracy = evaluate(model, x_test, y_test, task=task)
        if isinstance(model, RecurrentNet):  # the last probe's: a pass over every sequence
            log.dead = list(log.last_probe.get("dead_fraction", log.dead))  # is an epoch's work
        elif activation.family == "rectifier":  # only rectifiers output exact zeros
            log.dead = probes.dead_units(model, x_train)  # a whole-training-set pass, like eval
        eval_seconds = time.perf_counter() - start
        log.end_epoch(
            epoch,
            step,
            train_loss,
            test_loss,
            test_accuracy,
            epoch_train_seconds,
            eval_seconds,
            clipped_steps,
        )
        if not log.running:
            break
        if run_dir is not None and epoch < config.epochs:
            records.save_checkpoint(
                run_dir, config, epoch, step, model, optimizer, generator, log.state_dict()
            )
    return model
