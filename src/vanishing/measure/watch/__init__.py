"""`watch(model, optimizer)`: the probes' measurements on any PyTorch model, as a run's records.

    with vanishing.watch(model, optimizer) as w:
        ...  # the training loop, unchanged
        w.log(epoch=1, test_accuracy=0.97)  # optional: an epoch row, as training writes

Layers are the model's own `named_modules()` names. Every module with a trainable weight of its
own (Linear, Conv, Embedding, norm layers; attention's `in_proj_weight`: its weights taken as one
vector) is a watched *layer*: its weight-gradient norm, weight norm and update ratio, in the order
the model runs them (a module whose forward never runs, as attention's out_proj, after its
parent). A recurrent module's layers are each a layer ("lstm.l0": weight_ih_l0 and weight_hh_l0),
and its output passes tanh (config.json's activation, never "linear"). A weight two modules share
(a tied embedding and output layer) is the one's that ran last, the module computing the output
(config.json's `tied`). Every module the activation registry knows (nn.Sigmoid, nn.ReLU, nn.GELU,
...; Hugging Face's GELU modules by their class names, `layers.ACTIVATION_CLASSES`) is an
*activation layer*, and each further call of
one in a forward another ("act#2"): the back-propagated signal ||dLoss/da|| at its output, its
output's mean, std and histogram, its saturated share (judged on its input) and its dead units,
with the same code as the trainer's probes (`probes.layer_block`), in float32 whatever the
model's precision. A unit is one index of dim 1 (a feature, or a conv's channel), or of the
last dim of a (batch, time, features) sequence; it is dead when zero for every sample of the
last DEAD_WINDOW measured batches. An activation a forward calls as a function (F.relu,
torch.sigmoid, x.tanh(): the registry's `twins`) is one too, seen by a torch function mode
during measured forwards only and named by its order ("relu#2"), unless an activation module's
forward calls it (gelu_new's tanh); a sentence names any activation layer by the weighted layer
that ran before it ("conv2"). The function mode also sees a residual connection: a layer's input
added to a later output (config.json's `residual`).

Every nn.RNN, nn.LSTM and nn.GRU with a watched layer gets its time profile at each measured
step (`vanishing.measure.time`): its first call in a measured forward is computed again by a copy
unrolled step by step with the module's own parameters, in a graph of its own (the module's
output, and so the training, stay bit for bit as unwatched; the copy draws no random number:
it runs without the dropout between stacked layers), and the gradients the loss gives the
module's own returns are passed back through the copy. Per stacked layer ("lstm.l0", "lstm.l1";
a one-layer module its own name) the probe row gets ||dLoss/dh_t|| at every step, its gates'
means and saturated shares and its W_hh's spectral norm (`time_signal_norms`, `time_layers`,
`gates`, `gates_saturated`, `recurrent_norms`). A packed sequence, a bidirectional module or an
LSTM with proj_size has none (its weights are watched as any).

At every `every`-th optimizer step (step 0 first):
- without a probe batch, the training step itself is measured: forward hooks on the activation
  modules, registered for that forward only, take the statistics of the step's last forward
  with gradients on (an evaluation under torch.no_grad is not measured), tensor hooks on
  their outputs take the signal as backward passes it (full backward hooks would break on
  in-place ReLU), per-weight post-accumulate hooks (during a measured step only) read the
  gradients as backward leaves them, before the loop's clip_grad_norm_, and an optimizer step
  pre-hook ends the step, so only real steps count (a step a GradScaler skips is not one); its
  scale is divided out (`scaler=`, or seen as a power-of-2 change by the step: `step_grads`).
  Without an optimizer each backward pass that reaches the weights is a step: per-parameter
  post-accumulate hooks read the gradients as backward leaves them, and a callback queued on
  autograd's engine ends the step when the pass is done (two backward() calls are two steps).
- with `probe=(x, y)`, a fixed batch is measured before the step, as the trainer does: the model
  in eval mode but batch norm on the batch's own statistics, no state changed (buffers are put
  back), gradients by `torch.autograd.grad` of `loss(model(x), y)`; it needs the optimizer.
A layer no gradient reached at a step (unused) has none: null in its row. The update ratio
||W_after - W_before|| / ||W_before|| of a measured step needs the optimizer. Between measured
steps the hooks return at once: no `.item()`, nothing read from the device.

Records are a training run's (`records`): config.json (the model's description, its layers),
metrics.jsonl (a probe row per measured step, an epoch row per `log`) and result.json at
`close()`, so `vanishing report DIR`, `vanishing live DIR` and `vanishing export DIR` read them.
While watched, the model's `__getstate__` leaves the watch out: torch.save(model) and
copy.deepcopy(model) work, and give a model that is not watched.
An exception inside the `with` block closes the hooks but writes no result: the run did not
finish (its rows stay). A run directory has one writer: the watch holds its lock until it ends,
and a second watch into it (another process, or another model in this one) is refused.

A step is an optimizer step. Under gradient accumulation (k forward and backward passes, then
one optimizer.step(); under DDP the first k - 1 inside no_sync()) that is one step: its
weight gradient is the accumulated one, as the optimizer receives it, and its activations and
signals are those of the step's last forward and backward.

Under torch.distributed (an initialised process group of world size W > 1), every rank calls
watch() as one process would, given the model as it trains: the DistributedDataParallel
wrapper (or its `.module`) or an FSDP2 `fully_shard` model; FSDP1's FullyShardedDataParallel
is refused, and so are probe= and a watch without its optimizer. Layers are named as the
model's own (no "module." prefix). `ranks="one"` (the default): one run, written by rank 0 into
its `out` (without `out`, one that rank 0 chooses), which every rank is told; the other ranks
write nothing but run the hooks and, at measured steps only, take part in the collectives of
the optimizer's step pre-hook (`distributed`: three; under FSDP2 four, and one after the step
for the update ratios of the shards). `ranks="all"`: that run and out/rank{r}, each rank's own.
config.json says `world_size` and `ranks` (a rank's directory its `rank` too). In the run:
- weight-gradient norms: the averaged gradient (DDP's all-reduce, FSDP2's reduce-scatter)
  before the loop's clip_grad_norm_: the same on every rank, and in every rank's directory.
  DDP's backward leaves each rank's own gradient, so at a measured step a copy of the last
  one backward accumulates is kept in one flat buffer and averaged at the step.
- weight norms and update ratios: the model's, the same on every rank (FSDP2: the shards'
  squares summed over the ranks).
- signals ||dLoss/da||: over the global batch, for the job's loss (the mean of the ranks'):
  sqrt(sum_r s_r^2) / W of each rank's own s_r; a rank's directory has its s_r.
- unit statistics: over the global batch: means weighted by counts, std pooled, the spread
  across samples pooled per unit (nan where the ranks' sequences differ in length),
  histograms summed on edges common to every rank, the saturated share of every value, a
  unit dead when dead on every rank (the activation layers' outputs are kept until the step
  for this); a rank's directory has its own.
- a recurrent module's time profile: rank 0's own (a rank's directory has its own);
  epoch rows (`log`): rank 0's in the run, each rank's in its directory.
`Watch.config` and `Watch.last_row` are the run's (the same numbers on every rank, but the
time profile); `close()` gives every rank the run's result.

The package, by job: `layers` (which layers, their names), `hooks` (the hooks and the steps
they count), `capture` (a measured step's numbers), `probe` (the probe batch), `rows` (the run
directory and its records), `distributed` (the ranks of a torch.distributed job).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vanishing import records
from vanishing.errors import UsageError
from vanishing.measure.watch import distributed
from vanishing.measure.watch.capture import Captures
from vanishing.measure.watch.hooks import MARK, Hooks
from vanishing.measure.watch.layers import Layers
from vanishing.measure.watch.rows import RunWriter, hold


def watched_by(model: nn.Module) -> Watch | None:
    """The open Watch on `model`, None when it has none."""
    ref = model.__dict__.get(MARK)
    found = ref() if ref is not None else None
    return found if found is not None and not found.closed else None


def check(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    every: int,
    probe: tuple[Tensor, Tensor] | None,
    scaler: Any,
) -> None:
    """`watch`'s arguments, each wrong one a UsageError that says what it needs."""
    if not isinstance(model, nn.Module):
        raise UsageError(f"watch: model must be a torch.nn.Module, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise UsageError(
            f"watch: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise UsageError(f"watch: every must be a whole number of steps >= 1, got {every!r}")
    meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise UsageError(
            f"watch: the model's {meta[0]} is on the meta device (a shape without values); "
            "watch it once its weights are real (model.to_empty(device=...) and an init, or "
            "load_state_dict(..., assign=True))"
        )
    other = watched_by(model) or watched_by(distributed.unwrap(model))
    if other is not None:
        raise UsageError(
            f"watch: this {type(model).__name__} is already watched (writing to "
            f"{other.run_dir}); close that watch first "
            "(vanishing.measure.watch.watched_by(model).close())"
        )
    if scaler is not None and optimizer is None:
        raise UsageError(
            "watch: scaler= needs the optimizer: its scale is read at the optimizer's step"
        )
    if probe is not None:
        if optimizer is None:
            raise UsageError(
                "watch: probe= needs the optimizer: the probe batch is measured before "
                "each watched optimizer step"
            )
        if not (
            isinstance(probe, (tuple, list))
            and len(probe) == 2
            and all(isinstance(t, Tensor) for t in probe)
        ):
            raise UsageError("watch: probe must be a pair of tensors (inputs, targets)")
        if len(probe[0]) != len(probe[1]) or len(probe[0]) < 2:
            raise UsageError(
                f"watch: probe inputs and targets must hold the same number (>= 2) of "
                f"samples, got {len(probe[0])} and {len(probe[1])}"
            )


class Watch:
    """Hooks on a model (and its optimizer) that write its per-layer measurements as a run's
    records; a context manager. `close()` removes every hook and writes result.json."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        every: int = 100,
        probe: tuple[Tensor, Tensor] | None = None,
        out: Path | str | None = None,
        layers: Iterable[str] | None = None,
        loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        settings: dict[str, Any] | None = None,
        scaler: Any = None,
        ranks: str = "one",
    ) -> None:
        check(model, optimizer, every, probe, scaler)
        self.world = distributed.check(model, ranks, optimizer, probe)
        self.model = model
        own = distributed.unwrap(model)  # DDP's `.module`: the layers' names are its own
        self.every = every
        self.layers = Layers(own, distributed.own_names(layers, model))
        self.captures = Captures()
        self.captures.keep_parts = self.world is not None
        # under torch.distributed the run's blocks are the global batch's (`combine`): a
        # rank's own are computed only for its own directory
        self.captures.own_blocks = self.world is None or ranks == "all"
        extra = dict(settings or {})
        rank_lock: int | None = None
        self.rank_dir: Path | None = None  # this rank's own run (ranks="all")
        lock: int | None
        if self.world is None:
            self.run_dir, lock = hold(out, own)  # the last check: nothing to undo before it
        else:
            self.run_dir, lock, self.rank_dir, rank_lock = distributed.hold_runs(
                self.world, out, own
            )
            extra.update(self.world.settings())

        def writer(run_dir: Path, lock: int | None, extra: dict[str, Any]) -> RunWriter:
            return RunWriter(
                run_dir, lock, own, optimizer, every, probe, extra, self.layers, self.captures
            )

        # rank 0 writes the run; another rank keeps the same rows without writing them
        self.writer = writer(self.run_dir, lock, extra)
        self.rank_writer = None
        if self.world is not None and self.rank_dir is not None:
            self.rank_writer = writer(
                self.rank_dir, rank_lock, {**(settings or {}), **self.world.rank_settings()}
            )
        self.closed = False
        self.result: records.RunResult | None = None
        try:
            self.hooks = Hooks(
                own,
                optimizer,
                every,
                probe,
                loss or F.cross_entropy,
                scaler,
                self.layers,
                self.captures,
                self.writer,
                self.world,
                self.rank_writer,
            )
        except BaseException:
            self.close_writers()
            raise
        for marked in {id(model): model, id(own): own}.values():
            marked.__dict__[MARK] = weakref.ref(self)

    @property
    def step(self) -> int:
        """The optimizer step under way (from 0): its forward, backward and step."""
        return self.hooks.step

    @property
    def config(self) -> dict[str, Any] | None:
        """The run's config.json as written (None before the first row)."""
        return self.writer.config

    @property
    def last_row(self) -> dict[str, Any] | None:
        """The last probe row written (None before the first): what a logger is sent."""
        return self.writer.last_row

    def labels(self) -> list[str]:
        """Per activation layer, its name in sentences (`Layers.labels`)."""
        return self.layers.labels()

    def forward_starts(self) -> None:
        """A forward that the model's own call does not show begins (a LightningModule's
        training_step calls its submodules): at a measured step it is measured as the model's
        forward is, until `forward_ends` or the end of a call of the model inside it."""
        self.hooks._forward_starts(self.model, ())

    def forward_ends(self) -> None:
        """The forward `forward_starts` began has ended (its backward may follow)."""
        self.hooks._forward_ends(self.model, (), None)

    def log(self, epoch: int | None = None, **values: Any) -> dict[str, Any]:
        """Record an epoch row (`train_loss`, `test_loss`, `test_accuracy` as a fraction, or
        any other numbers): the report reads accuracy and losses from these rows."""
        if self.closed:
            raise UsageError("watch: log after close")
        row = self.writer.log(self.hooks.step, epoch, values)
        if self.rank_writer is not None:
            self.rank_writer.log(self.hooks.step, epoch, values)
        return row

    def close_writers(self) -> None:
        self.writer.close()
        if self.rank_writer is not None:
            self.rank_writer.close()

    def detach(self) -> None:
        """Remove every hook, close metrics.jsonl and let go of the run directory; the model
        is no longer watched."""
        self.hooks.remove()
        self.close_writers()
        self.closed = True
        for marked in (self.model, distributed.unwrap(self.model)):
            marked.__dict__.pop(MARK, None)

    def close(self) -> records.RunResult:
        """Remove every hook and write result.json (once; later calls return the result)."""
        if self.result is not None:
            return self.result
        if self.closed:
            raise UsageError("watch: closed after an error; its run has no result")
        try:
            self.hooks.remove()
            if self.rank_writer is not None:
                self.rank_writer.finish(self.hooks.step, self.hooks.probe_seconds)
            self.result = self.writer.finish(self.hooks.step, self.hooks.probe_seconds)
        finally:
            self.detach()
        return self.result

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.detach()  # the run did not finish: its rows stay, no result.json

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"step {self.step}"
        return f"Watch({type(self.model).__name__}, every={self.every}, {state}, {self.run_dir})"


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    every: int = 100,
    probe: tuple[Tensor, Tensor] | None = None,
    out: Path | str | None = None,
    layers: Iterable[str] | None = None,
    loss: Callable[[Tensor, Tensor], Tensor] | None = None,
    settings: dict[str, Any] | None = None,
    scaler: Any = None,
    ranks: str = "one",
) -> Watch:
    """Watch `model`'s gradients and units as it trains (see the package's docstring); a handle
    that is also a context manager. `out` is the run directory (default
    runs/watch/<model>-<date>-<time>), held by this watch alone until it ends; `layers` a
    subset of `named_modules()` names, `loss` the probe's loss (cross-entropy by default),
    `settings` extra config.json values and `scaler` a torch.amp.GradScaler, whose scale the
    signals are divided by (the weight gradients are read after its unscaling either way).
    Under torch.distributed, `ranks` is "one" (one run, written by rank 0) or "all" (that run
    and out/rank{r}, each rank's own measurements)."""
    return Watch(model, optimizer, every, probe, out, layers, loss, settings, scaler, ranks)
