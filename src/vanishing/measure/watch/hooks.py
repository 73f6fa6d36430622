"""The hooks a watch puts on a model and its optimizer, and the steps they count: which forwards
are measured, what each hook captures, and when a step's row is written."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from vanishing.measure import probes
from vanishing.measure import time as through_time
from vanishing.measure.watch import probe as probe_batch
from vanishing.measure.watch.capture import Captures, Recurrence
from vanishing.measure.watch.distributed import Distributed
from vanishing.measure.watch.layers import Layers, joint_norm
from vanishing.measure.watch.rows import RunWriter
from vanishing.model.activations import Activation

MARK = "_vanishing_watch"  # the attribute on a watched model: a weak reference to its Watch
# The ways a forward adds two tensors: a residual connection is one (`Layers.added`).
ADDS = (torch.add, Tensor.add, Tensor.__add__, Tensor.__radd__, Tensor.__iadd__, Tensor.add_)


class Functional(TorchFunctionMode):
    """Passes every torch function a measured forward calls to `Hooks._function_ran`."""

    def __init__(self, run: Callable[..., Tensor]) -> None:
        super().__init__()
        self.run = run

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        return self.run(func, args, kwargs or {})


class Hooks:
    """Every hook of one watch, each handle kept for `remove`, and the step under way (its
    forward, backward and optimizer step); a watched step's row goes to `writer`."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        every: int,
        probe: tuple[Tensor, Tensor] | None,
        loss: Callable[[Tensor, Tensor], Tensor],
        scaler: Any,
        layers: Layers,
        captures: Captures,
        writer: RunWriter,
        world: Distributed | None = None,
        rank_writer: RunWriter | None = None,
    ) -> None:
        self.model, self.optimizer, self.every = model, optimizer, every
        self.probe, self.loss, self.scaler = probe, loss, scaler
        self.layers, self.captures, self.writer = layers, captures, writer
        # under torch.distributed: this process's place in the job, and its rank's own run
        self.world, self.rank_writer = world, rank_writer
        self.rank_pending: dict[str, Any] | None = None
        self.step = 0  # the optimizer step under way: its forward, backward and step
        self.queued = False  # no optimizer: this backward's end is queued
        self.before: dict[str, list[Tensor]] | None = None  # weights before a measured step
        self.pending: dict[str, Any] | None = None  # a row waiting for the step's update
        self.probe_seconds = 0.0
        self.functional: Functional | None = None  # during a measured forward only
        self.handles: list[Any] = []
        self.grad_handles: list[Any] = []  # per weight: every step without an optimizer
        self.layer_handles: list[Any] = []  # during a measured forward only
        self.attach()

    def attach(self) -> None:
        """Register the hooks that run at every step. The layers' own hooks are there only
        during a measured forward (`attach_layers`), so an unmeasured step runs four hooks
        (the model's forward and the optimizer's step, each begun and ended) and nothing else;
        without an optimizer, one per weight as well, as backward leaves its gradient (that is
        how a step's end is seen)."""
        add = self.handles.append
        add(self.model.register_forward_pre_hook(self._forward_starts))
        add(self.model.register_forward_hook(self._forward_ends, always_call=True))
        if self.optimizer is not None:
            add(self.optimizer.register_step_pre_hook(self._before_step))
            add(self.optimizer.register_step_post_hook(self._after_step))
        else:
            self.attach_grads()
        self.model.__dict__["__getstate__"] = self.unwatched_state

    def attach_grads(self) -> None:
        """A hook per weight that reads its gradient as backward leaves it: before the loop
        can clip it (clip_grad_norm_ between backward and step would hide an exploding
        gradient). With an optimizer, during a measured step's backward only."""
        if self.grad_handles:
            return
        seen: set[int] = set()
        for weights in self.layers.weights.values():
            for weight in weights:
                if id(weight) not in seen:
                    seen.add(id(weight))
                    hook = weight.register_post_accumulate_grad_hook(self._grad_ready)
                    self.grad_handles.append(hook)

    def detach_grads(self) -> None:
        for handle in self.grad_handles:
            handle.remove()
        self.grad_handles.clear()

    def unwatched_state(self) -> dict[str, Any]:
        """The watched model's state for pickle and copy.deepcopy (its `__getstate__` while
        watched): as if unwatched, none of the watch's hooks and no mark, so torch.save(model)
        works inside a watch and a copy is not watched (nor writes into this run)."""
        ours: dict[int, set[int]] = {}
        for handle in (*self.handles, *self.layer_handles):
            ours.setdefault(id(handle.hooks_dict_ref()), set()).add(handle.id)
        state = type(self.model).__getstate__(self.model)  # the model's own, if it has one
        if not isinstance(state, dict):
            return state
        state = dict(state)  # never the model's own __dict__
        state.pop("__getstate__", None)
        state.pop(MARK, None)
        for key, value in state.items():
            if isinstance(value, dict) and id(value) in ours:
                state[key] = type(value)(
                    (k, v) for k, v in value.items() if k not in ours[id(value)]
                )
        return state

    def layer_grads(self) -> dict[str, Tensor]:
        """Per watched layer, its weights' gradient norm as the hooks read it in backward."""
        self.layers.fix()
        found = self.captures.param_grads
        grads = {}
        for name, weights in self.layers.weights.items():
            norms = [found[id(w)] for w in weights if id(w) in found]
            if norms:
                grads[name] = torch.stack(norms).norm()
        found.clear()
        return grads

    def attach_layers(self) -> None:
        """The layers' hooks, for one measured forward (`_forward_ends` removes them)."""
        add = self.layer_handles.append
        if not self.layers.fixed_layers:  # the order the layers run in is not known yet
            for name, module in self.layers.weighted.items():
                add(module.register_forward_hook(self._weighted_ran(name)))
        for name, (module, activation) in self.layers.hooked.items():
            add(module.register_forward_pre_hook(self._activation_starts(name)))
            add(module.register_forward_hook(self._activation_ran(name, activation)))
        for name, module in self.layers.recurrent.items():
            add(module.register_forward_hook(self._recurrent_ran(name), with_kwargs=True))

    def detach_layers(self) -> None:
        for handle in self.layer_handles:
            handle.remove()
        self.layer_handles.clear()

    def remove(self) -> None:
        """Remove every hook: the model and the optimizer run as if never watched."""
        if self.functional is not None:  # removed inside a forward (an error in a hook)
            self.functional.__exit__(None, None, None)
            self.functional = None
        self.detach_layers()
        self.detach_grads()
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.model.__dict__.pop("__getstate__", None)

    # -- which forwards are measured, and what their layers give -----------------------------

    def measuring(self) -> bool:
        """Whether the forward running now is measured: the probe's, or (without a probe) a
        forward with gradients on (evaluation under torch.no_grad is not), at a watched step."""
        if self.captures.busy:
            return False
        if self.captures.probing:
            return True
        return self.probe is None and self.step % self.every == 0 and torch.is_grad_enabled()

    def _weighted_ran(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.functional is not None and not self.captures.busy:  # a measured forward
                self.layers.weighted_ran(name, module, args)

        return hook

    def _activation_starts(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            if self.functional is None or self.captures.busy:  # unmeasured, or our own call
                return
            self.layers.inside += 1  # its own F.relu is not a second activation
            if getattr(module, "inplace", False) and args and isinstance(args[0], Tensor):
                self.captures.inputs[name] = args[0].detach().clone()  # gone once it has run

        return hook

    def _activation_ran(self, name: str, activation: Activation) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.functional is None or self.captures.busy:
                return
            self.layers.inside -= 1
            z = self.captures.inputs.pop(name, None)
            layer = self.layers.module_layer(name, module, activation)
            if layer is not None:
                self._capture(layer, activation, module, z if z is not None else args[0], output)

        return hook

    def _recurrent_ran(self, name: str) -> Callable[..., None]:
        """A recurrent module's first call in a measured forward: a copy of the call unrolled
        step by step (`through_time.unroll`, in a graph of its own: the module's output and
        the training are left as they are), and hooks that keep the gradients the loss gives
        the module's own returns, passed back through the copy when the row is written. A call
        it cannot unroll (a packed sequence, a bidirectional module) has no time profile."""

        def hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            captures = self.captures
            if self.functional is None or captures.busy or name in captures.recurrences:
                return
            input, hx = through_time.call_arguments(args, kwargs)
            captures.busy = True  # the copy's tanh and sigmoid are no activation layers
            try:
                unrolled = through_time.unroll(module, input, hx)
            finally:
                captures.busy = False
            if unrolled is None:
                return
            sequence, state = output
            returned = [sequence, *(state if isinstance(state, tuple) else (state,))]
            recurrence = Recurrence(through_time.layer_names(name, module), unrolled, returned)
            captures.recurrences[name] = recurrence
            if not captures.probing:  # the probe asks autograd for these gradients itself
                for index, tensor in enumerate(returned):
                    if tensor.requires_grad:
                        tensor.register_hook(recurrence.arrives(index))

        return hook

    def _function_ran(
        self, function: Callable[..., Tensor], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Tensor:
        """Run a function a measured forward calls; measure it when it is an activation
        layer (`Layers.function_layer`)."""
        z = args[0] if args else None
        if self.captures.busy or not isinstance(z, Tensor):
            return function(*args, **kwargs)
        if function in ADDS:
            self.layers.added(args)
        found = self.layers.function_layer(function, args, kwargs)
        if found is None:
            return function(*args, **kwargs)
        name, module, activation = found
        in_place = kwargs.get("inplace") is True or function.__name__.endswith("_")
        kept = z.detach().clone() if in_place else z
        output = function(*args, **kwargs)
        self._capture(name, activation, module, kept, output)
        return output

    def _capture(
        self, name: str, activation: Activation, module: nn.Module, z: Any, output: Any
    ) -> None:
        """One activation layer's measurements at a measured forward (its input z, output);
        its signal is taken as backward passes it."""
        if not isinstance(output, Tensor) or not isinstance(z, Tensor) or output.dim() < 2:
            return
        dim = self.layers.activation_ran(name, output)
        z = z.detach()
        if self.captures.probing:  # measured once the probe's gradients are known
            self.captures.tensors[name] = (z, output)
            return
        self.captures.block(name, activation, module, z, output.detach(), dim)
        if output.requires_grad:
            output.register_hook(self._signal_arrives(name))

    def _signal_arrives(self, name: str) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:
            self.captures.signals[name] = grad.detach().float().norm()

        return hook

    # -- steps -----------------------------------------------------------------------------

    def _forward_starts(self, module: nn.Module, args: Any) -> None:
        """The model's forward begins; a measured one sees its layers and functional
        activations."""
        if self.captures.busy:
            return
        if self.measuring() and self.functional is None:
            self.layers.forward_starts()
            self.captures.recurrences.clear()  # the step's last measured forward is its row's
            self.attach_layers()
            if not self.captures.probing:
                self.attach_grads()
            self.functional = Functional(self._function_ran)
            self.functional.__enter__()

    def _forward_ends(self, module: nn.Module, args: Any, output: Any) -> None:
        """The model's forward has ended (or raised): its layers and functions are no longer
        seen."""
        if self.functional is not None:
            self.functional.__exit__(None, None, None)
            self.functional = None
            self.detach_layers()

    def _grad_ready(self, weight: Tensor) -> None:
        """A weight's gradient is ready (backward has accumulated it): its norm, at a measured
        step. Without an optimizer a backward pass that reaches a weight is a step, ended by a
        callback autograd runs when the whole pass is done (every signal has arrived)."""
        if self.optimizer is None and not self.queued:
            self.queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._end_backward)
        if self.step % self.every == 0 and weight.grad is not None:
            if self.world is not None:  # averaged over the ranks at the step
                self.world.keep(weight, self.layers, self.captures)
            else:
                self.captures.param_grads[id(weight)] = weight.grad.detach().float().norm()

    def _end_backward(self) -> None:
        """Without an optimizer: one step is over; a watched one is written."""
        captures = self.captures
        if self.step % self.every == 0 and (captures.param_grads or captures.blocks):
            captures.grads.update(self.layer_grads())
            self.writer.write(self.writer.row(self.step, None))
        self.queued = False
        self.step += 1

    def step_grads(self) -> dict[str, Tensor]:
        """A measured step's weight-gradient norms: as backward left them (before the loop's
        clip_grad_norm_), a GradScaler's scale divided out. The gradients the optimizer is
        given where they differ from those by a power of 2 only: a scaler not passed as
        `scaler=` unscaled them (its scale is always a power of 2; a clip's factor is not)."""
        if self.world is not None:  # every rank takes part
            now, backward = self.world.grads(self.layers, self.captures)
        else:
            now = {}
            for name, weights in self.layers.weights.items():
                grads = [w.grad for w in weights if w.grad is not None]
                if grads:
                    now[name] = joint_norm(grads)
            backward = self.layer_grads()
        self.detach_grads()
        if not backward:  # no measured backward (the model ran inside step(), as LBFGS's)
            return now
        if self.scaler is not None:
            scale = float(self.scaler.get_scale())
            return {name: norm / scale for name, norm in backward.items()}
        both = [name for name in now if name in backward]
        if not both:
            return backward
        given = torch.stack([now[name] for name in both]).norm()
        found = torch.stack([backward[name] for name in both]).norm()
        factor = float(given / found) if float(found) > 0 else 1.0
        return now if factor > 0 and math.frexp(factor)[0] == 0.5 else backward

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.step % self.every:
            return
        start = time.perf_counter()
        captures = self.captures
        if self.probe is not None:
            loss = probe_batch.measure(self.model, self.loss, self.probe, self.layers, captures)
            row = self.writer.row(self.step, loss)
        else:
            captures.grads = self.step_grads()
            if self.scaler is not None:  # the signals passed back the scaled loss's gradient
                scale = float(self.scaler.get_scale())
                captures.signals = {name: s / scale for name, s in captures.signals.items()}
                captures.scale = scale
            row = (
                self.distributed_rows()
                if self.world is not None
                else self.writer.row(self.step, None)
            )
        self.before = {
            name: [w.detach().clone() for w in weights]
            for name, weights in self.layers.weights.items()
        }
        self.pending = row
        self.probe_seconds += time.perf_counter() - start

    def distributed_rows(self) -> dict[str, Any]:
        """A measured step's rows under torch.distributed (every rank takes part): the job's,
        combined over the ranks (`Distributed.combine`), and with ranks="all" this rank's own
        (`rank_pending`); the weight gradients are the averaged ones in both."""
        world, captures, layers = cast(Distributed, self.world), self.captures, self.layers
        layers.fix()
        if world.sharded:  # each rank holds a shard of each weight
            names = list(layers.weights)
            norms = world.norms([layers.weights[name] for name in names])
            captures.weight_norms = dict(zip(names, norms, strict=True))
        combined = world.combine(captures, layers)
        combined.grads = dict(captures.grads)
        combined.weight_norms = dict(captures.weight_norms)
        combined.profile = captures.time_profile()  # rank 0's own in the job's run
        if self.rank_writer is not None:
            self.rank_pending = self.rank_writer.row(self.step, None)
        captures.clear()
        return self.writer.row(self.step, None, combined)

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.pending is not None and self.before is not None:
            start = time.perf_counter()
            weights = self.layers.weights
            with torch.no_grad():
                steps = [
                    [w - old for w, old in zip(weights[name], olds, strict=True)]
                    for name, olds in self.before.items()
                ]
                if self.world is not None and self.world.sharded:
                    norms = self.world.norms([*steps, *self.before.values()])
                    changes, sizes = norms[: len(steps)], norms[len(steps) :]
                else:
                    changes = torch.stack([joint_norm(step) for step in steps])
                    sizes = torch.stack([joint_norm(olds) for olds in self.before.values()])
                ratios = probes.relative(changes, sizes)
            by_name = dict(zip(self.before, ratios.tolist(), strict=True))
            self.pending["update_ratio"] = [by_name[name] for name in self.layers.fixed_layers]
            self.writer.write(self.pending)
            if self.rank_writer is not None and self.rank_pending is not None:
                self.rank_pending["update_ratio"] = self.pending["update_ratio"]
                self.rank_writer.write(self.rank_pending)
            self.pending, self.before, self.rank_pending = None, None, None
            self.probe_seconds += time.perf_counter() - start
        self.captures.blocks.clear()  # captured inside step() (LBFGS's closure): not a later row's
        self.captures.parts.clear()
        self.captures.signals.clear()
        self.captures.recurrences.clear()
        self.step += 1
