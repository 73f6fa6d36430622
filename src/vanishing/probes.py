"""Measurements of gradient flow, saturation and dead units, taken on a fixed probe batch.

Every probe returns plain Python numbers (one read-back from the device per probe point), so
training can write them straight into `metrics.jsonl`. Lists are per layer, input layer first.

Definitions (the report quotes them):
- `grad_norms`: L2 norm of dLoss/dW for each Linear layer (hidden layers, then the output layer),
  the loss being the mean cross-entropy over the probe batch.
- `signal_norms`: L2 norm of dLoss/dh for each hidden layer's output h (the back-propagated signal).
- `vanishing_ratio`: grad_norms[0] / grad_norms[-1], first layer over last (output) layer.
  Between them lie one activation derivative per hidden layer, so sigmoid's bound is (1/4)^L.
- `saturated_fraction`: share of (sample, unit) pairs whose activation derivative is below
  SATURATION_FRACTION (10 %) of the activation's maximum derivative.
- `dead_fraction`: share of units whose output is exactly zero for every sample of the batch
  (for the whole training set at epoch ends: see `dead_units`).
- `update_ratio`: ||W_after - W_before|| / ||W_before|| of one optimizer step, per layer.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from vanishing.activations import Activation, saturated_mask
from vanishing.model import MLP


def measure(model: MLP, activation: Activation, x: Tensor, y: Tensor) -> dict[str, object]:
    """Gradient norms, activation statistics, saturation and dead units on one batch."""
    was_training = model.training
    model.eval()  # RReLU uses its mean slope: the probe itself must not be random
    weights = [linear.weight for linear in model.linears]
    with torch.enable_grad():
        logits, pre, hidden = model.forward_hidden(x)  # pre, hidden: L x (batch, width)
        loss = F.cross_entropy(logits, y)
        grads = torch.autograd.grad(loss, weights + hidden)
    model.train(was_training)
    weight_grads, signal_grads = grads[: len(weights)], grads[len(weights) :]
    with torch.no_grad():
        # One (6, L) block for the hidden layers plus the weight-gradient norms, read back at once.
        per_hidden = torch.stack(
            [
                torch.stack([g.norm() for g in signal_grads]),
                torch.stack([h.mean() for h in hidden]),
                torch.stack([h.std() for h in hidden]),
                torch.stack(
                    [
                        saturated_mask(activation, module, z).float().mean()
                        for module, z in zip(model.activations, pre, strict=True)
                    ]
                ),
                torch.stack([(h == 0).all(dim=0).float().mean() for h in hidden]),
            ]
        ).tolist()
        grad_norms = torch.stack([g.norm() for g in weight_grads]).tolist()
        slopes = prelu_slopes(model)
    signal, mean, std, saturated, dead = per_hidden
    return {
        "loss": float(loss.detach()),
        "grad_norms": grad_norms,
        "vanishing_ratio": ratio(grad_norms[0], grad_norms[-1]),
        "signal_norms": signal,
        "activation_mean": mean,
        "activation_std": std,
        "saturated_fraction": saturated,
        "dead_fraction": dead,
        **({"prelu_slopes": slopes} if slopes is not None else {}),
    }


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, inf when only the denominator is zero, nan when both are."""
    if denominator == 0:
        return float("nan") if numerator == 0 else float("inf")
    return numerator / denominator


def prelu_slopes(model: MLP) -> list[float] | None:
    """Mean learned negative slope per layer for PReLU activations, else None."""
    slopes = [m.weight.mean() for m in model.activations if isinstance(m, torch.nn.PReLU)]
    return torch.stack(slopes).tolist() if slopes else None


def snapshot(model: MLP) -> list[Tensor]:
    """Copies of the weights, to measure one optimizer step's update."""
    return [linear.weight.detach().clone() for linear in model.linears]


def update_ratios(model: MLP, before: list[Tensor]) -> list[float]:
    """||W_after - W_before|| / ||W_before|| per layer."""
    with torch.no_grad():
        values = torch.stack(
            [
                (linear.weight - old).norm() / old.norm().clamp_min(1e-12)
                for linear, old in zip(model.linears, before, strict=True)
            ]
        )
    return values.tolist()


@torch.no_grad()
def dead_units(model: MLP, x: Tensor, chunk: int = 8192) -> list[float]:
    """Per hidden layer, the fraction of units whose output is zero for every row of `x`."""
    alive = [torch.zeros(width, dtype=torch.bool, device=x.device) for width in model.hidden]
    for start in range(0, len(x), chunk):
        _, _, hidden = model.forward_hidden(x[start : start + chunk])
        for flags, h in zip(alive, hidden, strict=True):
            flags |= (h != 0).any(dim=0)
    return torch.stack([1 - flags.float().mean() for flags in alive]).tolist()
