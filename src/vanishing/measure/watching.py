"""`watch(model, optimizer)`: the probes' measurements on any PyTorch model, as a run's records.

    with vanishing.watch(model, optimizer) as w:
        ...  # the training loop, unchanged
        w.log(epoch=1, test_accuracy=0.97)  # optional: an epoch row, as training writes

Layers are the model's own `named_modules()` names. Every module with a trainable weight of its
own (Linear, Conv, Embedding, norm layers; a recurrent layer's `weight_ih_l0`..., attention's
`in_proj_weight`: its weights taken as one vector) is a watched *layer*: its weight-gradient
norm, weight norm and update ratio, in the order the model runs them (a module whose forward
never runs, as attention's out_proj, after its parent). Every module the activation registry
knows (nn.Sigmoid, nn.ReLU, nn.GELU, ...) is an *activation layer*, and each further call of
one in a forward another ("act#2"): the back-propagated signal ||dLoss/da|| at its output, its
output's mean, std and histogram, its saturated share (judged on its input) and its dead units,
with the same code as the trainer's probes (`probes.layer_block`), in float32 whatever the
model's precision. A unit is one index of dim 1 (a feature, or a conv's channel), or of the
last dim of a (batch, time, features) sequence; it is dead when zero for every sample of the
last DEAD_WINDOW measured batches. An activation a forward calls as a function (F.relu,
torch.sigmoid, x.tanh(): the registry's `twins`) is one too, seen by a torch function mode
during measured forwards only and named by its order ("relu#2"); a sentence names any
activation layer by the weighted layer that ran before it ("conv2").

At every `every`-th optimizer step (step 0 first):
- without a probe batch, the training step itself is measured: forward hooks on the activation
  modules, registered for that forward only, take the statistics of the step's last forward
  with gradients on (an evaluation under torch.no_grad is not measured), tensor hooks on
  their outputs take the signal as backward passes it (full backward hooks would break on
  in-place ReLU), and an optimizer step pre-hook
  reads the weight gradients, so only real steps count and a GradScaler's unscaled gradients
  are seen (a step it skips is not one; pass `scaler=` to have the signal unscaled too).
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
An exception inside the `with` block closes the hooks but writes no result: the run did not
finish (its rows stay).
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from vanishing import records
from vanishing.errors import UsageError
from vanishing.measure import probes
from vanishing.model.activations import ACTIVATIONS, DEFAULT_OPTIONS, Activation, activation_of

WATCH_DIR = Path("runs") / "watch"  # where watched runs go without `out`
DESCRIPTION_CHARS = 4000  # repr(model) kept in config.json: enough to recognise the model
# Layers that normalise: a sentence names the layer before one (its conv), never the norm.
NORMS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
# The norms that keep running statistics: on a probe batch they use its own (`probe`).
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
MARK = "_vanishing_watch"  # the attribute on a watched model: a weak reference to its Watch


def watched_by(model: nn.Module) -> Watch | None:
    """The open Watch on `model`, None when it has none."""
    ref = model.__dict__.get(MARK)
    found = ref() if ref is not None else None
    return found if found is not None and not found.closed else None


def default_out(model: nn.Module) -> Path:
    """runs/watch/<model class>-<date>-<time>, made unique with a count."""
    stem = f"{type(model).__name__.lower()}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, count = WATCH_DIR / stem, 1
    while out.exists():
        count += 1
        out = WATCH_DIR / f"{stem}-{count}"
    return out


class Functional(TorchFunctionMode):
    """Passes every torch function a measured forward calls to `Watch._function_ran`."""

    def __init__(self, run: Callable[..., Tensor]) -> None:
        super().__init__()
        self.run = run

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        return self.run(func, args, kwargs or {})


def twin_module(
    activation: Activation, function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> nn.Module:
    """The module a functional activation call computes, for its slope (the saturation test):
    its arguments as the module's (F.leaky_relu(x, 0.2) is nn.LeakyReLU(0.2))."""
    given = dict(zip(("negative_slope", "alpha", "beta", "threshold"), args[1:], strict=False))
    given.update(kwargs)
    if activation.name == "leaky_relu":
        return nn.LeakyReLU(given.get("negative_slope", 0.01))
    if activation.name == "elu":
        return nn.ELU(given.get("alpha", 1.0))
    if activation.name == "gelu":
        return nn.GELU(approximate=given.get("approximate", "none"))
    if activation.name == "softplus":
        return nn.Softplus(given.get("beta", 1.0), given.get("threshold", 20.0))
    return activation.build(1, DEFAULT_OPTIONS)


CONVS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
# A unit is dead when zero on every sample of the last 8 measured batches: 512 samples at
# batches of 64, as many as the trainer's probe batch; one batch of 64 calls a unit that fires
# for a few percent of the images dead (a healthy ReLU net's 14 % "dead" on one batch was 1.6 %
# on 4,000 images).
DEAD_WINDOW = 8


def weights_of(module: nn.Module) -> list[nn.Parameter]:
    """A module's own trainable weights, its biases left out: `weight`, a recurrent layer's
    `weight_ih_l0`..., attention's `in_proj_weight`."""
    return [
        p for n, p in module.named_parameters(recurse=False) if "weight" in n and p.requires_grad
    ]


def joint_norm(tensors: Sequence[Tensor]) -> Tensor:
    """The L2 norm of several tensors taken as one vector (one tensor's own norm)."""
    if len(tensors) == 1:
        return tensors[0].detach().float().norm()
    return torch.stack([t.detach().float().norm() for t in tensors]).norm()


def unit_dim(output: Tensor, before: nn.Module | None) -> int:
    """Which dimension of an activation's output holds its units: dim 1 for a (batch,
    features) output and for a conv's (batch, channels, ...) maps; the last one for a
    sequence's (batch, time, features), as a Linear applied along a sequence makes."""
    if output.dim() <= 2 or isinstance(before, CONVS) or output.dim() >= 4:
        return 1
    return output.dim() - 1


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
    ) -> None:
        if not isinstance(model, nn.Module):
            raise UsageError(f"watch: model must be a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise UsageError(
                f"watch: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UsageError(f"watch: every must be a whole number of steps >= 1, got {every!r}")
        other = watched_by(model)
        if other is not None:
            raise UsageError(
                f"watch: this {type(model).__name__} is already watched (writing to "
                f"{other.run_dir}); close that watch first "
                "(vanishing.measure.watching.watched_by(model).close())"
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
        self.model = model
        self.optimizer = optimizer
        self.every = every
        self.probe = probe
        self.loss = loss or F.cross_entropy
        self.extra = dict(settings or {})
        self.weighted, self.activations = self._select(model, layers)
        # The watched weights, by their module's name; the activation modules hooked (the
        # activation layers are these and, found as the model runs, functional activations
        # and second calls of a module).
        self.weights: dict[str, list[nn.Parameter]] = {}
        seen: set[int] = set()
        for name, module in list(self.weighted.items()):
            # A weight shared by two modules (a tied embedding and classifier) is the first's.
            own = [w for w in weights_of(module) if id(w) not in seen]
            seen.update(id(w) for w in own)
            if own:
                self.weights[name] = own
            else:
                del self.weighted[name]
        self.hooked = dict(self.activations)
        self.scaler = scaler
        self.run_dir: Path = Path(out) if out is not None else default_out(model)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"watch: cannot write to {self.run_dir}: {e.strerror or e}") from None
        self.closed = False
        self.result: records.RunResult | None = None
        self.step = 0  # the optimizer step under way: its forward, backward and step
        self.order: list[str] = []  # module names in the order the first measured forward ran
        self.follows: dict[str, str] = {}  # activation layer -> the weighted layer before it
        self.last_weighted: str | None = None
        self.config: dict[str, Any] | None = None
        self.writer: records.MetricsWriter | None = None
        self.first_row: dict[str, Any] | None = None
        self.last_row: dict[str, Any] | None = None
        self.epochs: list[dict[str, Any]] = []
        self.diverged_step: int | None = None
        self.probe_seconds = 0.0
        self.started = time.perf_counter()
        # The measured step's captures, cleared after each probe row.
        self.blocks: dict[str, Tensor] = {}  # activation layer -> layer_block, signal still 0
        self.signals: dict[str, Tensor] = {}  # activation layer -> ||dLoss/da||
        self.inputs: dict[str, Tensor] = {}  # in-place activations' inputs, before they go
        self.tensors: dict[str, tuple[Tensor, Tensor]] = {}  # probe: layer -> (input, output)
        self.grads: dict[str, Tensor] = {}  # layer -> weight-gradient norm
        self.param_grads: dict[tuple[str, int], Tensor] = {}  # no optimizer: as they arrive
        self.queued = False  # no optimizer: this backward's end is queued
        self.units: dict[str, int] = {}  # activation layer -> the dim of its units
        self.alive: dict[str, list[Tensor]] = {}  # its units active in recent measured batches
        self.module_calls: dict[str, int] = {}  # activation module -> its calls in this forward
        self.last_weighted_module: nn.Module | None = None
        self.before: dict[str, list[Tensor]] | None = None  # weights before a measured step
        self.pending: dict[str, Any] | None = None  # a row waiting for the step's update
        self.widths: dict[str, int] = {}  # activation layer -> units (size of dim 1)
        self.config_layers: list[str] = []  # fixed by the first row
        self.config_activations: list[str] = []
        self.probing = False  # the probe batch's forward is running
        # A measured forward: its function mode, its functional activations so far, and how
        # many activation modules are running (their own F.relu is not another activation).
        self.functional: Functional | None = None
        self.calls, self.inside = 0, 0
        self.twins = {f: a for a in ACTIVATIONS.values() for f in a.twins}
        self.chosen = None if layers is None else set(layers)
        self.busy = False  # our own calls into a module (the saturation slope): not measured
        self.handles: list[Any] = []
        self.layer_handles: list[Any] = []  # during a measured forward only
        self._attach()
        model.__dict__[MARK] = weakref.ref(self)

    @staticmethod
    def _select(
        model: nn.Module, layers: Iterable[str] | None
    ) -> tuple[dict[str, nn.Module], dict[str, tuple[nn.Module, Activation]]]:
        """The weighted modules and the activation modules to watch, by name."""
        weighted: dict[str, nn.Module] = {}
        activations: dict[str, tuple[nn.Module, Activation]] = {}
        for full_name, module in model.named_modules():
            name = full_name.removeprefix("_orig_mod.")  # torch.compile's wrapper: not a layer
            activation = activation_of(module)
            if activation is not None:
                activations[name] = (module, activation)
            elif weights_of(module):
                weighted[name] = module
        if layers is not None:
            chosen = list(layers)
            known = {*weighted, *activations}
            unknown = [name for name in chosen if name not in known]
            if unknown:
                shown = ", ".join(sorted(known)[:20]) + (", ..." if len(known) > 20 else "")
                raise UsageError(
                    f"watch: no layer {unknown[0]!r} with a trainable weight or a known "
                    f"activation in {type(model).__name__}; choose from: {shown}"
                )
            if any(name in weighted for name in chosen):  # else every weighted one
                weighted = {n: m for n, m in weighted.items() if n in chosen}
            if any(name in activations for name in chosen):
                activations = {n: a for n, a in activations.items() if n in chosen}
        if not weighted:
            raise UsageError(
                f"watch: {type(model).__name__} has no module with a trainable weight to watch"
            )
        return weighted, activations

    def _attach(self) -> None:
        """Register the hooks that run at every step; each handle is kept for `close`. The
        layers' own hooks are there only during a measured forward (`_attach_layers`), so an
        unmeasured step runs four hooks (the model's forward and the optimizer's step, each
        begun and ended) and nothing else; without an optimizer, one per weight as well, as
        backward leaves its gradient (that is how a step's end is seen)."""
        add = self.handles.append
        add(self.model.register_forward_pre_hook(self._forward_starts))
        add(self.model.register_forward_hook(self._forward_ends, always_call=True))
        if self.optimizer is not None:
            add(self.optimizer.register_step_pre_hook(self._before_step))
            add(self.optimizer.register_step_post_hook(self._after_step))
        else:
            for name, weights in self.weights.items():
                for index, weight in enumerate(weights):
                    add(weight.register_post_accumulate_grad_hook(self._grad_ready(name, index)))

    def _attach_layers(self) -> None:
        """The layers' hooks, for one measured forward (`_forward_ends` removes them)."""
        add = self.layer_handles.append
        if not self.config_layers:  # the order the layers run in is not known yet
            for name, module in self.weighted.items():
                add(module.register_forward_hook(self._weighted_ran(name)))
        for name, (module, activation) in self.hooked.items():
            add(module.register_forward_pre_hook(self._activation_starts(name)))
            add(module.register_forward_hook(self._activation_ran(name, activation)))

    def _detach_layers(self) -> None:
        for handle in self.layer_handles:
            handle.remove()
        self.layer_handles.clear()

    # -- which forwards are measured ---------------------------------------------------------

    def measuring(self) -> bool:
        """Whether the forward running now is measured: the probe's, or (without a probe) a
        forward with gradients on (evaluation under torch.no_grad is not), at a watched step."""
        if self.busy:
            return False
        if self.probing:
            return True
        return self.probe is None and self.step % self.every == 0 and torch.is_grad_enabled()

    def _seen(self, name: str) -> None:
        if not self.config_layers and name not in self.order:  # fixed by the first row
            self.order.append(name)

    def _weighted_ran(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.functional is not None and not self.busy:  # a measured forward
                self._seen(name)
                if not isinstance(module, NORMS):
                    self.last_weighted, self.last_weighted_module = name, module

        return hook

    def _activation_starts(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            if self.functional is None or self.busy:  # not a measured forward, or our own call
                return
            self.inside += 1  # its own F.relu is not a second activation
            if getattr(module, "inplace", False) and args and isinstance(args[0], Tensor):
                self.inputs[name] = args[0].detach().clone()  # gone once the module has run

        return hook

    def _activation_ran(self, name: str, activation: Activation) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.functional is None or self.busy:
                return
            self.inside -= 1
            z = self.inputs.pop(name, None)
            calls = self.module_calls[name] = self.module_calls.get(name, 0) + 1
            layer = name if calls == 1 else f"{name}#{calls}"  # a module called again: a layer
            if layer not in self.activations and self._may_add(layer):
                self.activations[layer] = (module, activation)
            if layer in self.activations:
                self._capture(layer, activation, module, z if z is not None else args[0], output)

        return hook

    def _may_add(self, layer: str) -> bool:
        """Whether an activation layer found as the model runs is one to measure: not once the
        first row has fixed the layers, nor when `layers` chose others."""
        return not self.config_layers and (self.chosen is None or layer in self.chosen)

    def _function_ran(
        self, function: Callable[..., Tensor], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Tensor:
        """Run a function a measured forward calls; measure it when it is an activation's
        functional twin (F.relu, torch.sigmoid, x.tanh(), ...) called outside a module."""
        activation = self.twins.get(function)
        z = args[0] if args else None
        if activation is None or self.inside or self.busy or not isinstance(z, Tensor):
            return function(*args, **kwargs)
        in_place = kwargs.get("inplace") is True or function.__name__.endswith("_")
        kept = z.detach().clone() if in_place else z
        output = function(*args, **kwargs)
        self.calls += 1
        name = f"{activation.name}#{self.calls}"  # the k-th functional activation of a forward
        if name not in self.activations and self._may_add(name):
            self.activations[name] = (twin_module(activation, function, args, kwargs), activation)
        if name in self.activations:
            self._capture(name, activation, self.activations[name][0], kept, output)
        return output

    def _capture(
        self, name: str, activation: Activation, module: nn.Module, z: Any, output: Any
    ) -> None:
        """One activation layer's measurements at a measured forward (its input z, output)."""
        if not isinstance(output, Tensor) or not isinstance(z, Tensor) or output.dim() < 2:
            return
        self._seen(name)
        dim = self.units.setdefault(name, unit_dim(output, self.last_weighted_module))
        self.widths.setdefault(name, int(output.shape[dim]))
        if self.last_weighted is not None:
            self.follows.setdefault(name, self.last_weighted)
        z = z.detach()
        if self.probing:
            self.tensors[name] = (z, output)
            return
        self.blocks[name] = self._block(name, activation, module, z, output.detach(), None)
        if output.requires_grad:
            output.register_hook(self._signal_arrives(name))

    def _signal_arrives(self, name: str) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:
            self.signals[name] = grad.detach().float().norm()

        return hook

    def _block(
        self,
        name: str,
        activation: Activation,
        module: nn.Module,
        z: Tensor,
        output: Tensor,
        signal: Tensor | None,
    ) -> Tensor:
        """`probes.layer_block` of one activation layer, in float32 whatever the model's
        precision; the signal 0 until it arrives; dead units over the last DEAD_WINDOW
        measured batches."""
        self.busy = True  # the slope is the module's own: its hooks must not measure it
        try:
            with torch.no_grad():
                saturated = probes.saturated_share(activation, module, z)
                output = output.float()
                window = self.alive.setdefault(name, [])
                window.append(probes.active_units(output, self.units[name]))
                del window[:-DEAD_WINDOW]
                shapes = {flags.shape for flags in window}
                alive = torch.stack(window).any(dim=0) if len(shapes) == 1 else window[-1]
                zero = torch.zeros((), device=output.device)
                return probes.layer_block(
                    zero if signal is None else signal.float(),
                    output,
                    saturated,
                    (~alive).float().mean(),
                )
        finally:
            self.busy = False

    # -- steps -----------------------------------------------------------------------------

    def _forward_starts(self, module: nn.Module, args: Any) -> None:
        """The model's forward begins; a measured one sees its layers and functional
        activations."""
        if self.busy:
            return
        if self.measuring() and self.functional is None:
            self.calls, self.inside = 0, 0
            self.module_calls.clear()
            self._attach_layers()
            self.functional = Functional(self._function_ran)
            self.functional.__enter__()

    def _forward_ends(self, module: nn.Module, args: Any, output: Any) -> None:
        """The model's forward has ended (or raised): its layers and functions are no longer
        seen."""
        if self.functional is not None:
            self.functional.__exit__(None, None, None)
            self.functional = None
            self._detach_layers()

    def _grad_ready(self, name: str, index: int) -> Callable[[Tensor], None]:
        """Without an optimizer: a backward pass that reaches a weight is a step, ended by a
        callback autograd runs when the whole pass is done (every signal has arrived)."""

        def hook(weight: Tensor) -> None:
            if not self.queued:
                self.queued = True
                torch.autograd.Variable._execution_engine.queue_callback(self._end_backward)
            if self.step % self.every == 0 and weight.grad is not None:
                self.param_grads[(name, index)] = weight.grad.detach().float().norm()

        return hook

    def _end_backward(self) -> None:
        """Without an optimizer: one step is over; a watched one is written."""
        if self.step % self.every == 0 and (self.param_grads or self.blocks):
            for name, weights in self.weights.items():
                norms = [
                    self.param_grads[(name, i)]
                    for i in range(len(weights))
                    if (name, i) in self.param_grads
                ]
                if norms:
                    self.grads[name] = torch.stack(norms).norm()
            self.param_grads.clear()
            self._write(self._row(self.step, None))
        self.queued = False
        self.step += 1

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.step % self.every:
            return
        start = time.perf_counter()
        if self.probe is not None:
            row = self._measure_probe()
        else:
            for name, weights in self.weights.items():
                grads = [w.grad for w in weights if w.grad is not None]
                if grads:
                    self.grads[name] = joint_norm(grads)
            if self.scaler is not None:  # the signals passed back the scaled loss's gradient
                scale = float(self.scaler.get_scale())
                self.signals = {name: s / scale for name, s in self.signals.items()}
            row = self._row(self.step, None)
        self.before = {
            name: [w.detach().clone() for w in weights] for name, weights in self.weights.items()
        }
        self.pending = row
        self.probe_seconds += time.perf_counter() - start

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.pending is not None and self.before is not None:
            start = time.perf_counter()
            with torch.no_grad():
                ratios = torch.stack(
                    [
                        joint_norm(
                            [w - old for w, old in zip(self.weights[name], olds, strict=True)]
                        )
                        / joint_norm(olds).clamp_min(1e-12)
                        for name, olds in self.before.items()
                    ]
                )
            by_name = dict(zip(self.before, ratios.tolist(), strict=True))
            self.pending["update_ratio"] = [by_name[name] for name in self.config_layers]
            self._write(self.pending)
            self.pending, self.before = None, None
            self.probe_seconds += time.perf_counter() - start
        self.blocks.clear()  # captured inside step() (LBFGS's closure): not a later row's
        self.signals.clear()
        self.step += 1

    def _measure_probe(self) -> dict[str, Any]:
        """The probe batch measured as the trainer measures its own (`probes.measure`): eval
        mode but batch norm on the batch's statistics, and every buffer put back after."""
        x, y = self.probe  # type: ignore[misc]
        device = next(self.model.parameters()).device
        x, y = x.to(device), y.to(device)
        modes = {module: module.training for module in self.model.modules()}
        buffers = [b.detach().clone() for b in self.model.buffers()]
        self.model.eval()  # dropout off, RReLU's mean slope: the probe is not random
        for module in self.model.modules():
            if isinstance(module, BATCH_NORMS):
                module.train()
        weights = [(name, w) for name, ws in self.weights.items() for w in ws]
        self.probing = True
        try:
            with torch.enable_grad():
                loss = self.loss(self.model(x), y)
                names = list(self.tensors)
                outputs = [self.tensors[name][1] for name in names]
                grads = torch.autograd.grad(
                    loss, [w for _, w in weights] + outputs, allow_unused=True
                )
        finally:
            self.probing = False
            for module, training in modes.items():
                module.train(training)
            with torch.no_grad():
                for buffer, saved in zip(self.model.buffers(), buffers, strict=True):
                    buffer.copy_(saved)
        by_layer: dict[str, list[Tensor]] = {}
        for (name, _), grad in zip(weights, grads[: len(weights)], strict=True):
            if grad is not None:
                by_layer.setdefault(name, []).append(grad)
        self.grads = {name: joint_norm(layer_grads) for name, layer_grads in by_layer.items()}
        for name, grad in zip(names, grads[len(weights) :], strict=True):
            z, output = self.tensors[name]
            module, activation = self.activations[name]
            signal = grad.float().norm() if grad is not None else torch.zeros((), device=device)
            self.blocks[name] = self._block(name, activation, module, z, output.detach(), signal)
        self.tensors.clear()
        return self._row(self.step, loss.detach())

    # -- rows and records ------------------------------------------------------------------

    def _fix_layers(self) -> None:
        """The layers and activation layers of every row, in the order the model ran them,
        fixed by the first row (config.json lists them). A weighted module whose forward did
        not run (attention's out_proj, used by its parent's weights) goes after its parent."""
        if self.config_layers:
            return
        ran = [name for name in self.order if name in self.weighted]
        for name in self.weighted:
            if name in ran:
                continue
            parents = [i for i, other in enumerate(ran) if name.startswith(f"{other}.")]
            ran.insert(max(parents) + 1 if parents else len(ran), name)
        self.config_layers = ran
        # No measured forward before the first row (the model ran inside step(), or only in
        # evaluation): the activation modules found, in the model's order, not none at all.
        self.config_activations = [n for n in self.order if n in self.activations] or list(
            self.hooked
        )

    def labels(self) -> list[str]:
        """Per activation layer, its name in sentences: the weighted layer before it, with the
        activation's own name where two follow the same one ("fc (relu#1)")."""
        acts = self.config_activations
        follows = [self.follows.get(name, name) for name in acts]
        return [
            f"{label} ({name})" if follows.count(label) > 1 else label
            for label, name in zip(follows, acts, strict=True)
        ]

    def _config(self) -> dict[str, Any]:
        """config.json: the model's description, its layers and the watch's settings."""
        acts = self.config_activations
        kinds = [self.activations[name][1].name for name in acts]
        common = max(dict.fromkeys(kinds), key=kinds.count) if kinds else "linear"
        lr = self.optimizer.param_groups[0].get("lr") if self.optimizer is not None else None
        return {
            "source": "watch",
            "model": type(self.model).__name__,
            "description": repr(self.model)[:DESCRIPTION_CHARS],
            "parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            "layers": self.config_layers,
            "activation_layers": acts,
            "activation_kinds": kinds,
            "layer_labels": self.labels(),
            "activation": common,
            "hidden": [self.widths.get(name, 0) for name in acts],
            "every": self.every,
            "probe_size": len(self.probe[0]) if self.probe is not None else None,
            "optimizer": type(self.optimizer).__name__.lower() if self.optimizer else None,
            "lr": float(lr) if isinstance(lr, (int, float)) else None,
            "seed": None,
            "device": str(next(self.model.parameters()).device),
            **self.extra,
        }

    def _row(self, step: int, loss: Tensor | None) -> dict[str, Any]:
        """A probe row of the step's captures, read back from the device at once."""
        self._fix_layers()
        device = next(self.model.parameters()).device
        nan = torch.tensor(math.nan, device=device)
        width = probes.STATS + 2 * probes.HISTOGRAM_BINS + 1
        missing = torch.cat(  # an activation that did not run: no numbers, an empty histogram
            [
                torch.full((width - probes.HISTOGRAM_BINS,), math.nan),
                torch.zeros(probes.HISTOGRAM_BINS),
            ]
        ).to(device)
        present = [name for name in self.config_layers if name in self.grads]
        with torch.no_grad():
            layer_rows = []
            for name in self.config_activations:
                block = self.blocks.get(name)
                if block is None:
                    layer_rows.append(missing)
                    continue
                block = block.float()
                if self.probe is None:  # the signal is what backward passed, if it reached it
                    block[0] = self.signals.get(name, nan)
                layer_rows.append(block)
            scalars = torch.stack(
                [self.grads[name].float() for name in present]
                + [joint_norm(self.weights[name]) for name in self.config_layers]
                + [(loss if loss is not None else nan).float().reshape(())]
            )
            values = scalars.tolist()
            per_layer = torch.stack(layer_rows).tolist() if layer_rows else []
        # A layer no gradient reached (unused at this step) has none: null, not a number.
        got = dict(zip(present, values, strict=False))
        grad_norms = [got.get(name) for name in self.config_layers]
        weight_norms = values[len(present) : len(present) + len(self.config_layers)]
        self.blocks.clear()
        self.signals.clear()
        self.grads.clear()
        self.inputs.clear()
        measured = probes.probe_row(
            values[-1] if loss is not None else None, grad_norms, per_layer, weight_norms
        )
        # the epoch under way, as training counts (from 1)
        return {"kind": "probe", "step": step, "epoch": len(self.epochs) + 1, **measured}

    def _open(self) -> records.MetricsWriter:
        """config.json and metrics.jsonl, at the first row (the layers are known by then)."""
        if self.writer is None:
            self._fix_layers()
            self.config = self._config()
            self.writer = records.open_run(Settings(self.config), self.run_dir)
        return cast(records.MetricsWriter, self.writer)  # a run directory: never None

    def _write(self, row: dict[str, Any]) -> None:
        self._open().write(row)
        if row["kind"] == "probe":
            self.first_row = self.first_row or row
            self.last_row = row
            numbers = [v for v in (*row["grad_norms"], row["loss"]) if v is not None]
            if self.diverged_step is None and not all(math.isfinite(v) for v in numbers):
                self.diverged_step = row["step"]

    def log(self, epoch: int | None = None, **values: Any) -> dict[str, Any]:
        """Record an epoch row (`train_loss`, `test_loss`, `test_accuracy` as a fraction, or
        any other numbers): the report reads accuracy and losses from these rows."""
        if self.closed:
            raise UsageError("watch: log after close")
        if epoch is None:
            epoch = len(self.epochs) + 1
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise UsageError(f"log: epoch must be a whole number >= 0, got {epoch!r}")
        row: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": self.step}
        row.update({key: logged_value(key, value) for key, value in values.items()})
        accuracy = row.get("test_accuracy")
        if accuracy is not None and not 0 <= accuracy <= 1:
            raise UsageError(f"log: test_accuracy is a fraction in [0, 1], got {accuracy!r}")
        if self.diverged_step is None and any(
            not math.isfinite(row[key]) for key in ("train_loss", "test_loss") if key in row
        ):
            self.diverged_step = self.step
        self._write(row)
        self.epochs.append(row)
        return row

    # -- closing ---------------------------------------------------------------------------

    def detach(self) -> None:
        """Remove every hook and close metrics.jsonl; the model is no longer watched."""
        if self.functional is not None:  # closed inside a forward (an error in a hook)
            self.functional.__exit__(None, None, None)
            self.functional = None
        self._detach_layers()
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        if self.writer is not None:
            self.writer.close()
        self.closed = True
        if self.model.__dict__.get(MARK) is not None:
            del self.model.__dict__[MARK]

    def close(self) -> records.RunResult:
        """Remove every hook and write result.json (once; later calls return the result)."""
        if self.result is not None:
            return self.result
        if self.closed:
            raise UsageError("watch: closed after an error; its run has no result")
        self._open()
        first, last = self.first_row or {}, self.last_row or {}
        tested = [row for row in self.epochs if "test_accuracy" in row]
        elapsed = time.perf_counter() - self.started
        steps = self.step
        from vanishing.training.loop import versions  # torch's and numpy's versions, as runs record

        result = records.RunResult(
            status="diverged" if self.diverged_step is not None else "ok",
            test_accuracy=tested[-1]["test_accuracy"] if tested else math.nan,
            test_loss=tested[-1].get("test_loss", math.nan) if tested else math.nan,
            history=self.epochs,
            grad_norms_init=first.get("grad_norms", []),
            vanishing_ratio_init=first.get("vanishing_ratio", math.nan),
            signal_norms_init=first.get("signal_norms", []),
            grad_norms_final=last.get("grad_norms", []),
            saturated_fraction=last.get("saturated_fraction", []),
            dead_fraction=last.get("dead_fraction", []),
            steps=steps,
            train_seconds=max(0.0, elapsed - self.probe_seconds),
            eval_seconds=0.0,
            probe_seconds=self.probe_seconds,
            device=str(next(self.model.parameters()).device),
            versions=versions(),
            config=self.config or {},
            diverged_step=self.diverged_step,
        )
        self.detach()
        self.result = records.close_run(result, self.run_dir)
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
) -> Watch:
    """Watch `model`'s gradients and units as it trains (see the module's docstring); a handle
    that is also a context manager. `out` is the run directory (default
    runs/watch/<model>-<date>-<time>), `layers` a subset of `named_modules()` names, `loss`
    the probe's loss (cross-entropy by default), `settings` extra config.json values and
    `scaler` a torch.amp.GradScaler, whose scale the signals are divided by (the weight
    gradients are read after its unscaling either way)."""
    return Watch(model, optimizer, every, probe, out, layers, loss, settings, scaler)
