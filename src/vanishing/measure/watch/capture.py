"""What a measured step captured, until its row is written: per activation layer its numbers
(`probes.layer_block`, in float32 whatever the model's precision) and the signal backward
passed it, per weighted layer its weight-gradient norm; and which units were active lately."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vanishing.measure import probes
from vanishing.model.activations import Activation

# A unit is dead when zero on every sample of the last 8 measured batches: 512 samples at
# batches of 64, as many as the trainer's probe batch; one batch of 64 calls a unit that fires
# for a few percent of the images dead (a healthy ReLU net's 14 % "dead" on one batch was 1.6 %
# on 4,000 images).
DEAD_WINDOW = 8


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
                output = output.float()
                window = self.alive.setdefault(name, [])
                window.append(probes.active_units(output, dim))
                del window[:-DEAD_WINDOW]
                shapes = {flags.shape for flags in window}
                alive = torch.stack(window).any(dim=0) if len(shapes) == 1 else window[-1]
                zero = torch.zeros((), device=output.device)
                self.blocks[name] = probes.layer_block(
                    zero, output, saturated, (~alive).float().mean()
                )
        finally:
            self.busy = False

    def clear(self) -> None:
        """Forget the step's captures (the dead-unit window stays)."""
        self.blocks.clear()
        self.signals.clear()
        self.grads.clear()
        self.inputs.clear()
