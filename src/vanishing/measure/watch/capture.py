"""What a measured step captured, until its row is written: per activation layer its numbers
(`probes.layer_block`, in float32 whatever the model's precision) and the signal backward
passed it, per weighted layer its weight-gradient norm, per recurrent module its unrolled copy
and the gradients its own returns got (its time profile); and which units were active lately."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vanishing.measure import probes
from vanishing.measure import time as through_time
from vanishing.model.activations import Activation

# A unit is dead when zero on every sample of the last 8 measured batches: 512 samples at
# batches of 64, as many as the trainer's probe batch; one batch of 64 calls a unit that fires
# for a few percent of the images dead (a healthy ReLU net's 14 % "dead" on one batch was 1.6 %
# on 4,000 images).
DEAD_WINDOW = 8


@dataclass
class Recurrence:
    """A recurrent module's call in a measured forward: its copy unrolled step by step
    (`through_time.unroll`, the same function in its own graph), the tensors the module itself
    returned (output, h_n and an LSTM's c_n) and the gradients the loss gave them, by position
    (None until one arrives). `through_time.through_time` passes those back through the copy."""

    names: list[str]  # its stacked layers' names in the time profile
    unrolled: through_time.Unrolled
    returned: list[Tensor]
    grads: list[Tensor | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.grads = [None] * len(self.returned)

    def arrives(self, index: int) -> Any:
        """A tensor hook keeping the gradient of the `index`-th returned tensor."""

        def hook(grad: Tensor) -> None:
            self.grads[index] = grad.detach()

        return hook


@dataclass
class Part:
    """One activation layer of a measured forward on this rank, kept until the optimizer step
    (its values are binned then, on edges common to every rank)."""

    output: Tensor  # detached: the same storage as the forward's
    version: int  # its version then: a later in-place change leaves the layer out
    saturated: Tensor  # the share of its input's values in saturation
    inputs: int  # how many values that share is of
    alive: Tensor  # (units,) bool: active in the dead-unit window


class Captures:
    """The measured step's tensors, on the model's device (nothing is read back here)."""

    def __init__(self) -> None:
        self.blocks: dict[str, Tensor] = {}  # activation layer -> layer_block, signal still 0
        self.signals: dict[str, Tensor] = {}  # activation layer -> ||dLoss/da||
        self.inputs: dict[str, Tensor] = {}  # in-place activations' inputs, before they go
        self.tensors: dict[str, tuple[Tensor, Tensor]] = {}  # probe: layer -> (input, output)
        self.grads: dict[str, Tensor] = {}  # layer -> weight-gradient norm
        self.param_grads: dict[int, Tensor] = {}  # id(weight) -> its norm, as backward leaves it
        self.alive: dict[str, list[Tensor]] = {}  # its units active in recent measured batches
        self.recurrences: dict[str, Recurrence] = {}  # recurrent module -> its measured call
        self.weight_norms: dict[str, Tensor] = {}  # layer -> its weights' norm, when sharded
        self.profile: dict[str, Any] | None = None  # the time profile, once computed
        # under torch.distributed: per activation layer what its numbers over the global batch
        # are taken from at the step (a Part, kept only when `keep_parts`)
        self.keep_parts = False
        self.own_blocks = True  # this process's own blocks (not wanted by ranks="one")
        self.parts: dict[str, Part] = {}
        self.scale = 1.0  # a GradScaler's scale, divided out of the time profile
        self.probing = False  # the probe batch's forward is running
        self.busy = False  # our own calls into a module (the saturation slope): not measured

    def block(
        self,
        name: str,
        activation: Activation,
        module: nn.Module,
        z: Tensor,
        output: Tensor,
        dim: int,
    ) -> None:
        """Capture `probes.layer_block` of one activation layer from its input z and output
        (units along `dim`), its signal 0 until it arrives; dead units over the last
        DEAD_WINDOW measured batches."""
        self.busy = True  # the slope is the module's own: its hooks must not measure it
        try:
            with torch.no_grad():
                saturated = probes.saturated_share(activation, module, z)
                kept = output
                output = output.float()
                window = self.alive.setdefault(name, [])
                window.append(probes.active_units(output, dim))
                del window[:-DEAD_WINDOW]
                shapes = {flags.shape for flags in window}
                alive = torch.stack(window).any(dim=0) if len(shapes) == 1 else window[-1]
                if self.own_blocks:
                    zero = torch.zeros((), device=output.device)
                    self.blocks[name] = probes.layer_block(
                        zero, output, saturated, (~alive).float().mean()
                    )
                if self.keep_parts:
                    self.parts[name] = Part(kept, kept._version, saturated, z.numel(), alive)
        finally:
            self.busy = False

    def time_profile(self) -> dict[str, Any]:
        """The probe row's keys through time (`through_time.time_probe`) of every recurrent
        module a gradient reached, in the order they ran; empty without any. One whose copy
        cannot be passed back (its input changed in place since) is left out, never an error.
        Computed once per step (kept until `clear`)."""
        if self.profile is None:
            self.profile = self.unrolled_profile()
        return self.profile

    def unrolled_profile(self) -> dict[str, Any]:
        """`time_profile`, computed: the copies passed back once."""
        names, layers, grads = [], [], []
        for recurrence in self.recurrences.values():
            try:
                found = through_time.through_time(recurrence.unrolled, recurrence.grads)
            except RuntimeError:  # a tensor the copy saved was modified in place
                continue
            for name, steps, step_grads in zip(
                recurrence.names, recurrence.unrolled.layers, found, strict=False
            ):
                names.append(name)
                layers.append(steps)
                grads.append(step_grads)
        profile = through_time.time_probe(names, layers, grads)
        if profile and self.scale != 1:  # the signals passed back the scaled loss's gradient
            profile["time_signal_norms"] = [
                [value / self.scale for value in norms] for norms in profile["time_signal_norms"]
            ]
        return profile

    def clear(self) -> None:
        """Forget the step's captures (the dead-unit window stays)."""
        self.recurrences.clear()
        self.profile = None
        self.parts.clear()
        self.weight_norms.clear()
        self.scale = 1.0
        self.blocks.clear()
        self.signals.clear()
        self.grads.clear()
        self.inputs.clear()
