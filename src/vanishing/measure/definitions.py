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
        "residual connections h is the residual stream, the layer input plus act(norm(W h + b)). "
        "A recurrent layer's h is its whole output sequence, as the layer above (or the head, on "
        "the last step) takes it: depth, not time (time_signal_norms is time).",
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
        "activation's input (after the norm layer, if any). A recurrent layer counts every step: "
        "an RNN its activation's inputs; an LSTM or GRU every value of its cell's nonlinearities, "
        "sigmoid gates (slope s (1 - s)) and tanh values (slope 1 - y^2: the candidate, and an "
        "LSTM's tanh of its cell), a saturated one passing almost no gradient.",
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

# The keys of a recurrent layer's probe rows (a recurrent run's, or a watched model's nn.RNN, LSTM
# and GRU modules'); absent from an MLP's. Lists are per recurrent layer, input side first.
TIME_DEFINITIONS: tuple[tuple[str, str], ...] = (
    (
        "time_signal_norms",
        "per recurrent layer, ||dLoss/dh_t|| for each step t = 1..T (Frobenius norm over the "
        "probe batch and the hidden units): the total derivative of the loss with respect to "
        "the hidden state h_t, through the recurrence and through the layer's output. Its first "
        "over its last value is how much of the gradient reaching the last step reaches the "
        "first.",
    ),
    (
        "time_layers",
        "the recurrent layers' names, one per entry of the lists through time: the trainer's "
        "'lstm 1', 'lstm 2'; a watched module's own name, with .l0, .l1 for its stacked layers.",
    ),
    (
        "gates",
        "per recurrent layer, each sigmoid gate's mean value over the probe batch, the steps and "
        "the units: an LSTM's input, forget and output gates (c_t = f c_{t-1} + i g, "
        "h_t = o tanh(c_t): a forget gate near 1 keeps the cell, and its gradient, from step to "
        "step); a GRU's reset and update gates (h_t = (1 - z) n_t + z h_{t-1}: the update z is "
        "the share of h_{t-1} kept). A plain RNN has none.",
    ),
    (
        "gates_saturated",
        "per recurrent layer and gate, the share of its values below 0.05 or above 0.95: shut "
        "or open whatever the input, its own slope under a fifth of its maximum.",
    ),
    (
        "recurrent_norms",
        "per recurrent layer, the spectral norm (largest singular value) of its recurrent weight "
        "W_hh (an LSTM's or GRU's gates stacked): each step multiplies the gradient by at most "
        "the activation's derivative bound times this, so (bound * norm) ** (T - t) bounds "
        "||dLoss/dh_t|| / ||dLoss/dh_T|| of a plain RNN whose loss reads the last step.",
    ),
)
