"""Recurrent networks: stacked RNN, LSTM or GRU layers, one module per layer, and a Linear head
on the last step."""

from __future__ import annotations

ARCHS = ("mlp", "rnn", "lstm", "gru")  # "mlp": model.mlp's MLP; the rest are recurrent
RECURRENT = ARCHS[1:]
GATED = ("lstm", "gru")  # cells with their own tanh and sigmoid gates
RECURRENT_HIDDEN = (128,)  # one layer of 128 units: Le et al.'s and Arjovsky et al.'s size


def arch_defaults(arch: str) -> dict[str, object]:
    """The settings whose default depends on the network (where none is given): a recurrent
    network's activation is tanh (nn.RNN's own; an LSTM's and GRU's cells) and it has one
    layer of RECURRENT_HIDDEN units."""
    return {"activation": "tanh", "hidden": RECURRENT_HIDDEN} if arch in RECURRENT else {}
