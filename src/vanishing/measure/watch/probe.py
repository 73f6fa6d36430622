"""The probe batch: with `probe=(x, y)`, a fixed batch measured before each watched optimizer
step, as the trainer measures its own (`probes.measure`), the model's state left as it was."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from vanishing.measure.watch.capture import Captures
from vanishing.measure.watch.layers import Layers, joint_norm

# The norms that keep running statistics: on a probe batch they use its own.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def measure(
    model: nn.Module,
    loss_of: Callable[[Tensor, Tensor], Tensor],
    batch: tuple[Tensor, Tensor],
    layers: Layers,
    captures: Captures,
) -> Tensor:
    """Measure the probe batch into `captures` (its weight gradients, and per activation layer
    its block and signal) and return its loss: eval mode but batch norm on the batch's
    statistics, gradients by `torch.autograd.grad` (the model's .grad untouched), every buffer
    put back after. The watch's hooks capture the activations as the forward runs."""
    x, y = batch
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    modes = {module: module.training for module in model.modules()}
    buffers = [b.detach().clone() for b in model.buffers()]
    model.eval()  # dropout off, RReLU's mean slope: the probe is not random
    for module in model.modules():
        if isinstance(module, BATCH_NORMS):
            module.train()
    weights = [(name, w) for name, ws in layers.weights.items() for w in ws]
    captures.probing = True
    try:
        with torch.enable_grad():
            loss = loss_of(model(x), y)
            names = list(captures.tensors)
            outputs = [captures.tensors[name][1] for name in names]
            # the gradients of each recurrent module's own returns, for its time profile
            returned = [
                (recurrence, index, tensor)
                for recurrence in captures.recurrences.values()
                for index, tensor in enumerate(recurrence.returned)
                if tensor.requires_grad
            ]
            grads = torch.autograd.grad(
                loss,
                [w for _, w in weights] + outputs + [tensor for _, _, tensor in returned],
                allow_unused=True,
            )
    finally:
        captures.probing = False
        for module, training in modes.items():
            module.train(training)
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), buffers, strict=True):
                buffer.copy_(saved)
    by_layer: dict[str, list[Tensor]] = {}
    for (name, _), grad in zip(weights, grads[: len(weights)], strict=True):
        if grad is not None:
            by_layer.setdefault(name, []).append(grad)
    captures.grads = {name: joint_norm(layer_grads) for name, layer_grads in by_layer.items()}
    for (recurrence, index, _), grad in zip(
        returned, grads[len(weights) + len(names) :], strict=True
    ):
        recurrence.grads[index] = grad
    for name, grad in zip(names, grads[len(weights) : len(weights) + len(names)], strict=True):
        z, output = captures.tensors[name]
        module, activation = layers.activations[name]
        signal = grad.float().norm() if grad is not None else torch.zeros((), device=device)
        captures.signals[name] = signal
        captures.block(name, activation, module, z, output.detach(), layers.units[name])
    captures.tensors.clear()
    return loss.detach()
