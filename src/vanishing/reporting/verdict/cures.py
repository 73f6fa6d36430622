"""The cure for a verdict's worst failure, fitted to what the run already uses: as options of
`vanishing train` for a training run (`cure_sentence`), as changes to the model or the loop for a
watched model, whose user passes no options (`model_cure`); through time, by its cause
(`time_cure`, `model_time_cure`)."""

from __future__ import annotations

from typing import Any

from vanishing.model.recurrent import RECURRENT
from vanishing.reporting.results import Point
from vanishing.reporting.verdict.profile import setting_value
from vanishing.reporting.verdict.rules import (
    THROUGH_TIME,
    TOO_LARGE,
    closed_gates,
    dead_layer_in_some_run,
    through_time,
    units_hurt,
    vanishing_through_time,
)
from vanishing.reporting.verdict.time_profile import TimeLayer

SGD_LIKE = ("sgd",)  # optimizers whose step grows with the gradient: clipping bounds it
# What a lower learning rate is for, where the update ratios showed the steps too large.
SMALL_FRACTION = ", so that a step moves each layer by a small fraction of its weights"
# The failures of the scale from layer to layer, which an init sets.
SCALE_KINDS = ("vanishing", "attenuated", "growing", "forward-collapse", "forward-blow-up")
# SELU at lecun init grows towards its fixed point from inputs that are not at it.
STANDARDISE = (
    "standardise the inputs (each feature to mean 0, std 1), the fixed point's assumption; "
    "keep the init, which the fixed point needs (a smaller one would break it)"
)
# A layer dead from the start: no init of the other layers brings it back.
DEAD_LAYER_CURE = (
    "look at what feeds the dead layer (a bias or an input far below 0 makes every "
    "pre-activation negative); leaky ReLU or PReLU keep a slope for z < 0, so the gradient "
    "passes a unit that is off"
)


def cure_sentence(point: Point, kinds: tuple[str, ...]) -> str:
    """The cure for the worst failure, fitted to what the run already uses; '' if none fits."""
    if point.watched:
        return model_cure(point, kinds)
    if through := time_kind(kinds):
        return time_cure(point, through)
    config = point.runs[0].config
    # Normalisation and residual connections are not implemented for recurrent layers, and a
    # depth cure between them is not what their steps need.
    recurrent = setting_value(config, "arch") in RECURRENT
    norm = setting_value(config, "norm") or "none"
    residual = bool(setting_value(config, "residual"))
    gain = setting_value(config, "init_gain")
    clip = setting_value(config, "clip_grad_norm")
    init = str(config.get("init", "default"))
    optimizer = str(config.get("optimizer", ""))
    family, name = point.activation.family, point.activation.name
    kaiming = init in ("kaiming", "he")
    parts: list[str] = []
    worst = kinds[0] if kinds else "healthy"
    gain = gain if isinstance(gain, (int, float)) and not isinstance(gain, bool) else 1.0
    lr = config.get("lr")
    lr_here = f" (lr {lr:g} here)" if isinstance(lr, (int, float)) else ""
    can_clip = optimizer in SGD_LIKE and clip is None
    # What makes the scale too large: the signal or the activations growing, or the init gain.
    too_large = bool(set(TOO_LARGE) & set(kinds)) or gain > 1
    at_once = any((run.result or {}).get("diverged_step") == 0 for run in point.runs)
    if recurrent and worst == "training-blow-up" and at_once:
        # Non-finite before any update: the recurrence overflowed its T steps, not the steps
        # of the optimizer; a learning rate changes nothing there.
        here = f", {gain:g} here" if gain != 1 else ""
        parts.append(
            f"a smaller recurrent weight at init (--init-gain below 1{here}, or --init "
            "orthogonal), whose product over the steps overflowed before the first update"
        )
        if setting_value(config, "sequence") in ("pixels", "permuted"):
            parts.append("a shorter sequence: --sequence rows (28 steps instead of 784)")
    elif worst == "large-steps" or (worst == "training-blow-up" and not too_large):
        parts.append(f"a lower learning rate{lr_here}")
        if worst == "large-steps":
            parts[-1] += SMALL_FRACTION
        if can_clip:
            parts.append("--clip-grad-norm to cap each step")
    elif worst == "small-steps":
        parts.append(f"a larger learning rate{lr_here}")
    elif worst == "growing" and at_fixed_point_init(point):
        parts.append(STANDARDISE)
    elif worst in SCALE_KINDS and point.activation.fixed_point_init not in ("", init):
        own = point.activation.fixed_point_init
        parts.append(
            f"{own} init, the one {point.activation.label}'s fixed point assumes (each layer "
            "then pulls its activations towards mean 0, variance 1)"
        )
    elif worst == "training-blow-up" or worst in TOO_LARGE:
        if gain > 1:
            parts.append(f"a lower --init-gain ({gain:g} here; 1 keeps each init's own scale)")
        elif family == "rectifier" and not kaiming:
            parts.append("He (kaiming) initialisation, which keeps the scale")
        else:
            parts.append("a smaller initial weight scale (--init-gain below 1)")
        if norm != "batch" and not recurrent:
            parts.append("batch norm resets the scale every layer")
        if can_clip:
            parts.append("--clip-grad-norm caps each step")
    elif worst in ("vanishing", "forward-collapse", "attenuated") and not recurrent:
        if gain < 1:
            parts.append(f"--init-gain 1 keeps each init's own scale ({gain:g} here)")
        if family == "rectifier":
            if not kaiming:
                parts.append("He (kaiming) initialisation keeps the forward scale")
            if norm != "batch":
                parts.append("batch norm resets it every layer")
            elif not residual:
                parts.append("residual connections carry the signal past each layer")
        else:
            # A linear layer keeps its scale at std 1/sqrt(fan_in); a rectifier would change
            # what a linear network is, so it is offered to the others only.
            options = [
                *(
                    ["lecun init (std 1/sqrt(fan_in))"]
                    if family == "linear" and init not in ("lecun", "orthogonal")
                    else []
                ),
                *(["batch norm"] if norm != "batch" else []),
                *(["residual connections"] if not residual else []),
                *(["a rectifier (ReLU with He init)"] if family != "linear" else []),
            ]
            if options:
                listed = options[0] if len(options) == 1 else ", ".join(options[:-1])
                listed += f" or {options[-1]}" if len(options) > 1 else ""
                each = ", each of which keeps" if len(options) > 1 else ", which keeps"
                parts.append(f"{listed}{each} the gradient's size from layer to layer")
    if dead_layer_in_some_run(point) and worst == "vanishing":
        parts = [DEAD_LAYER_CURE]
    hurt = units_hurt(point)  # dead and saturated units alike: a cure only where they hurt
    if "dead" in kinds and name == "relu" and hurt and (worst == "dead" or not parts):
        parts.append("leaky ReLU or PReLU keep a slope for z < 0, so no unit dies for good")
    elif (
        "saturated" in kinds
        and hurt
        and (worst == "saturated" or not parts)
        and norm != "batch"
        and not recurrent
        and not at_fixed_point_init(point)  # its fixed point keeps them at mean 0, variance 1
    ):
        parts.append("batch norm keeps pre-activations near 0, where the slope is largest")
    if not parts:
        return ""
    return f"Cure: {'; '.join(parts)}."


def at_fixed_point_init(point: Point) -> bool:
    """The activation has a fixed point (SELU) and the run uses the init it assumes, at its own
    scale: a growth towards that point is the design working, not an init too large."""
    config = point.runs[0].config
    own = point.activation.fixed_point_init
    gain = setting_value(config, "init_gain")
    return bool(own) and config.get("init") == own and gain in (1, 1.0, None)


def model_cure(point: Point, kinds: tuple[str, ...]) -> str:
    """A watched model's cure for its worst failure, as changes to the model or the loop (its
    user passes no options): the module to add, the init to use; '' if none fits."""
    if through := time_kind(kinds):
        return model_time_cure(point, through)
    config = point.runs[0].config
    description = str(config.get("description") or "")
    has_norm = "BatchNorm" in description or "LayerNorm" in description
    # The watch saw a layer's input added to a later output (a transformer's or a ResNet's
    # blocks); older records do not say, and are offered them.
    has_residual = config.get("residual") is True
    # An LSTM's or a GRU's gates and tanh are its own: no activation, norm or shortcut to add
    # between its layers here (what it needs through time is `model_time_cure`'s).
    recurrent = bool(config.get("recurrent_layers"))
    norm = "nn.BatchNorm2d" if "Conv2d" in description else "nn.BatchNorm1d"
    label, family = point.activation.label, point.activation.family
    lr = config.get("lr")
    lr_here = f" (lr {lr:g} here)" if isinstance(lr, (int, float)) else ""
    clip = (
        "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0) before optimizer.step() caps "
        "each step"
    )
    can_clip = str(config.get("optimizer")) in SGD_LIKE
    worst = kinds[0] if kinds else "healthy"
    too_large = bool(set(TOO_LARGE) & set(kinds))
    parts: list[str] = []
    if worst == "large-steps" or (worst == "training-blow-up" and not too_large):
        parts.append(f"a lower learning rate{lr_here}")
        if worst == "large-steps":
            parts[-1] += SMALL_FRACTION
        if can_clip:
            parts.append(clip)
    elif worst == "small-steps":
        parts.append(f"a larger learning rate{lr_here}")
    elif worst == "training-blow-up" or worst in TOO_LARGE:
        parts.append(
            "smaller initial weights: He (kaiming) init for rectifiers "
            "(nn.init.kaiming_normal_), Xavier for the others (nn.init.xavier_normal_)"
        )
        if not has_norm:
            parts.append(f"add batch norm ({norm}) before the activations to reset the scale")
        if can_clip:
            parts.append(clip)
    elif worst in ("vanishing", "forward-collapse", "attenuated") and not recurrent:
        if family == "rectifier":
            parts.append(
                "He (kaiming) init (nn.init.kaiming_normal_ on each layer's weight), where the "
                "layers still have PyTorch's default (a sixth of He's variance), keeps the "
                "forward scale"
            )
            if not has_norm:
                parts.append(f"add batch norm ({norm}) before the activations to reset it")
            elif not has_residual:
                parts.append("residual connections (x + f(x)) carry the signal past each layer")
        else:
            options = [
                *(
                    [f"a rectifier instead of {label} (nn.ReLU with He init)"]
                    if family != "linear"
                    else []
                ),
                *([f"batch norm ({norm}) before the activations"] if not has_norm else []),
                *(["residual connections (x + f(x))"] if not has_residual else []),
            ]
            if options:  # a linear net with norms and residual connections: nothing to add
                listed = (
                    ", ".join(options[:-1]) + f" or {options[-1]}"
                    if len(options) > 1
                    else options[0]
                )
                each = ", each of which keeps" if len(options) > 1 else ", which keeps"
                parts.append(f"{listed}{each} the gradient's size from layer to layer")
    if dead_layer_in_some_run(point) and worst == "vanishing":
        parts = [DEAD_LAYER_CURE]
    hurt = units_hurt(point)  # dead and saturated units alike: a cure only where they hurt
    if (
        "dead" in kinds
        and point.activation.name == "relu"
        and hurt
        and (worst == "dead" or not parts)
    ):
        parts.append(
            "nn.LeakyReLU or nn.PReLU instead of nn.ReLU keep a slope for z < 0, so no unit "
            "dies for good"
        )
    elif "saturated" in kinds and hurt and (worst == "saturated" or not parts) and not has_norm:
        parts.append(
            f"add batch norm ({norm}) before the activations: it keeps pre-activations near 0, "
            "where the slope is largest"
        )
    if not parts:
        return ""
    return f"Cure: {'; '.join(parts)}."


def time_kind(kinds: tuple[str, ...]) -> str:
    """The failure through time the cure is for: the worst kind where it is one, or a gradient
    exploding through time under a training that blew up (its cause); '' otherwise."""
    worst = kinds[0] if kinds else ""
    if worst in THROUGH_TIME:
        return worst
    if worst == "training-blow-up" and "exploding-through-time" in kinds:
        return "exploding-through-time"
    return ""


CLIPPING = "Pascanu, Mikolov and Bengio 2013"
IRNN = "Le, Jaitly and Hinton 2015"
FORGET_BIAS = "Jozefowicz et al. 2015"


def time_cure(point: Point, worst: str) -> str:
    """A training run's cure for a gradient that vanishes or explodes through time, by its
    cause: a plain RNN's recurrence (gated cells, an orthogonal or identity recurrent weight),
    an LSTM's closed forget gates (--forget-bias 1), a long sequence (a shorter one), a
    recurrent weight too large (clipping, a smaller init); '' if none fits."""
    config = point.runs[0].config
    init = str(config.get("init", "default"))
    gain = setting_value(config, "init_gain")
    gain = gain if isinstance(gain, (int, float)) and not isinstance(gain, bool) else 1.0
    parts: list[str] = []
    found = through_time(point)
    if worst == "exploding-through-time":
        if setting_value(config, "clip_grad_norm") is None:
            parts.append(
                f"--clip-grad-norm 1, which cuts every step's gradient to norm 1 ({CLIPPING})"
            )
        here = f", {gain:g} here" if gain != 1 else ""
        parts.append(f"a smaller recurrent weight at init (--init-gain below 1{here})")
        return f"Cure: {'; '.join(parts)}."
    layer = vanishing_through_time(found.judged) if found else None
    if layer is None:
        return ""
    cell = layer.cell or str(setting_value(config, "arch"))
    if cell == "rnn":
        parts.append(
            "gated cells (--arch lstm or --arch gru), whose cell state carries the gradient "
            "through time"
        )
        recurrence = []
        if init not in ("orthogonal", "identity"):
            recurrence.append("an orthogonal recurrent weight (--init orthogonal)")
        if not (point.activation.name == "relu" and init == "identity"):
            recurrence.append(
                f"IRNN (--arch rnn --activation relu --init identity; {IRNN}), whose recurrent "
                "weight starts as the identity"
            )
        if recurrence:
            parts.append(" or ".join(recurrence))
    elif cell == "lstm" and forget_bias_helps(point):
        parts.append(
            f"--forget-bias 1 ({FORGET_BIAS}): the forget gates start at 0.73 instead of 0.5, "
            "so the cell keeps its content, and the gradient its way back, for longer"
        )
    shorter = shorter_sequence(config, layer)
    if shorter:
        parts.append(shorter)
    return f"Cure: {'; '.join(parts)}." if parts else ""


def forget_bias_helps(point: Point) -> bool:
    """An LSTM without a forget-gate bias of 1 or more whose forget gates are closed (or not
    recorded)."""
    bias = setting_value(point.runs[0].config, "forget_bias")
    if isinstance(bias, (int, float)) and bias >= 1:
        return False
    found = through_time(point)
    if found is None or not any(layer.keeping for layer in found.judged.layers):
        return True  # the gates were not recorded: the bias is what is known
    return closed_gates(found.judged) is not None


def shorter_sequence(config: dict[str, Any], layer: TimeLayer) -> str:
    """A shorter window to back-propagate through: rows (28 steps) for a pixel sequence; ''
    where the sequence is already an image's rows, or is the task (the adding problem)."""
    sequence = setting_value(config, "sequence")
    steps = layer.steps
    if sequence in ("pixels", "permuted"):
        return (
            f"a shorter sequence to back-propagate through: --sequence rows (28 steps instead "
            f"of {steps})"
        )
    # Not a shorter adding problem: that is another task, not a cure of this one's gradient.
    return ""


def model_time_cure(point: Point, worst: str) -> str:
    """A watched model's cure through time, as changes to the model or the loop."""
    found = through_time(point)
    parts: list[str] = []
    if worst == "exploding-through-time":
        parts.append(
            "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0) before optimizer.step() "
            f"cuts every step's gradient to norm 1 ({CLIPPING})"
        )
        parts.append("smaller recurrent weights (nn.init.orthogonal_ on each weight_hh)")
        return f"Cure: {'; '.join(parts)}."
    if found is None or (layer := vanishing_through_time(found.judged)) is None:
        return ""
    if layer.cell == "rnn":
        parts.append(
            "nn.LSTM or nn.GRU in place of nn.RNN, whose cell state carries the gradient "
            "through time; or nn.RNN(nonlinearity='relu') with its weight_hh set to the "
            f"identity (nn.init.eye_: IRNN, {IRNN}), or a tanh one's to an orthogonal matrix "
            "(nn.init.orthogonal_)"
        )
    elif layer.cell == "lstm" and closed_gates(found.judged) is not None:
        parts.append(
            f"the forget gates' bias at 1 ({FORGET_BIAS}): PyTorch orders an LSTM's gates i, "
            "f, g, o, so for each layer k set bias_ih_lk[H:2H] to 1 (H the hidden size)"
        )
    # Not truncated BPTT: a loss at the last step would then reach the early steps not at all.
    return f"Cure: {'; '.join(parts)}." if parts else ""
