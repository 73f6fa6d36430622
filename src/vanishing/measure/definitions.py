"""What each probe metric means, in plain words: the probes measure them, the report quotes them."""

from __future__ import annotations

from vanishing.model.activations import SATURATION_FRACTION

# (name in metrics.jsonl and result.json, meaning); lists are per layer, input layer first.
DEFINITIONS: tuple[tuple[str, str], ...] = (
    (
        "grad_norms",
        "L2 norm of dLoss/dW for each weighted layer (the trainer's Linear layers: hidden layers, "
        "then the output layer; a watched model's modules with a weight, a recurrent module's "
        "layers each its own), the loss being the mean cross-entropy over the probe batch (a "
        "watched model without one: the training step's own loss and batch, read before the "
        "loop's gradient clipping).",
    ),
    (
        "signal_norms",
        "L2 norm of dLoss/dh for each hidden layer's output h (the back-propagated signal); with "
        "residual connections h is the residual stream, the layer input plus act(norm(W h + b)).",
    ),
    (
        "vanishing_ratio",
        "grad_norms[0] / grad_norms[-1], first layer over last (output) layer. Between them lie "
        "one activation derivative per hidden layer, so sigmoid's bound is (1/4)^L.",
    ),
    (
        "saturated_fraction",
        "share of (sample, unit) pairs whose activation derivative is below SATURATION_FRACTION "
        f"({100 * SATURATION_FRACTION:g} %) of the activation's maximum derivative, at the "
        "activation's input (after the norm layer, if any).",
    ),
    (
        "dead_fraction",
        "share of units whose activation output is exactly zero for every sample of the batch "
        "(for the whole training set at epoch ends: see dead_units; batch norm there uses its "
        "running statistics). With a residual connection the unit's output is the activation's, "
        "not the stream's.",
    ),
    (
        "activation_histogram",
        "per hidden layer, how its output h (the residual stream, with residual connections) is "
        "distributed over the (sample, unit) pairs of the probe batch: counts of finite values "
        "in equal bins (edges: bins + 1 values) from the smallest to the largest value at that "
        "step, as numpy.histogram draws them. The edges differ by layer and step, so read a "
        "bin's count against its edges.",
    ),
    (
        "update_ratio",
        "||W_after - W_before|| / ||W_before|| of one optimizer step, per layer.",
    ),
)
