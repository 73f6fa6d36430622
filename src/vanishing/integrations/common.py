"""What both callbacks share: the `watch` keywords they pass on, the new probe row's numbers for
a logger, and an epoch row from the numbers a framework evaluated (`held_out`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from vanishing.errors import UsageError
from vanishing.measure.watch import Watch

PREFIX = "vanishing/"  # the tags a framework's logger is sent: vanishing/grad_norm/fc1, ...

# The framework's metric names read for an epoch row, in order of preference (the first found
# wins); only these. The report's held-out numbers are the framework's validation (or
# evaluation) set: `test_loss` and `test_accuracy` in the row. An accuracy outside [0, 1] (a
# percentage) is not taken for one: the report reads a fraction.
TRAIN_LOSS = ("train_loss_epoch", "train_loss")
HELD_OUT_LOSS = ("val_loss_epoch", "val_loss", "eval_loss")
HELD_OUT_ACCURACY = (
    "val_accuracy_epoch",
    "val_accuracy",
    "val_acc_epoch",
    "val_acc",
    "eval_accuracy",
    "eval_acc",
)


def install_hint(extra: str, package: str) -> UsageError:
    """The error for a missing framework: which extra to install."""
    return UsageError(
        f"vanishing.integrations.{extra} needs {package}, an optional extra: "
        f"pip install 'vanishing[{extra}]'"
    )


def check_model(model: Any, where: str) -> nn.Module:
    """The model a framework gave the callback, or a UsageError when there is none to watch."""
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"VanishingCallback: {where} has no model to watch (got {type(model).__name__}); "
            "give the trainer a torch.nn.Module"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise UsageError(
            f"VanishingCallback: {where}'s {type(model).__name__} has no trainable parameters: "
            "no gradient to watch"
        )
    return model


def forwarded(
    every: int,
    out: Any,
    layers: Iterable[str] | None,
    probe: tuple[Tensor, Tensor] | None,
    loss: Callable[[Tensor, Tensor], Tensor] | None,
    settings: Mapping[str, Any] | None,
    framework: str,
    more: Mapping[str, Any],
) -> dict[str, Any]:
    """`watch`'s keywords: those given (a keyword left out keeps watch's default, so `ranks` is
    passed only when the user gave it), and config.json's `framework`."""
    given: dict[str, Any] = {"every": every, "out": out, "layers": layers, "probe": probe}
    given["loss"] = loss
    given = {key: value for key, value in given.items() if value is not None}
    given["settings"] = {"framework": framework, **(settings or {})}
    return {**given, **more}


def new_scalars(watch: Watch, sent: int | None) -> tuple[int | None, dict[str, float]]:
    """The last probe row's step and its numbers as a logger takes them (`export.scalars`,
    tags prefixed "vanishing/"), when that row is newer than the step `sent`; else nothing."""
    from vanishing.reporting import export  # the report's code, only once there is a row

    row, config = watch.last_row, watch.config
    if row is None or config is None or row["step"] == sent:
        return sent, {}
    return row["step"], {PREFIX + tag: value for tag, value in export.scalars(config, row)}


def number(value: Any) -> float | None:
    """A metric as a float (a 0-d tensor read once; a diverged loss's nan kept: the run's
    status reads it), None when it is no number."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            return None
        value = value.detach().item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def first(metrics: Mapping[str, Any], names: Iterable[str]) -> float | None:
    """The first of `names` that `metrics` holds as a number."""
    for name in names:
        if name in metrics and (value := number(metrics[name])) is not None:
            return value
    return None


def held_out(metrics: Mapping[str, Any]) -> dict[str, float]:
    """An epoch row's values from a framework's metrics: `train_loss`, and the validation set's
    loss and accuracy as the report's `test_loss` and `test_accuracy` (an accuracy only as a
    fraction in [0, 1]); nothing else is guessed."""
    row: dict[str, float] = {}
    if (value := first(metrics, TRAIN_LOSS)) is not None:
        row["train_loss"] = value
    if (value := first(metrics, HELD_OUT_LOSS)) is not None:
        row["test_loss"] = value
    value = first(metrics, HELD_OUT_ACCURACY)
    if value is not None and 0 <= value <= 1:
        row["test_accuracy"] = value
    return row


class Watching:
    """What both callbacks share: `watch`'s keywords (those given, and config.json's
    `framework`: the class's), the watch while training runs, the step of the last row sent to
    the framework's loggers, and how the watch ends."""

    framework = ""  # config.json's `framework`: each callback's own

    def __init__(
        self,
        every: int = 100,
        out: Path | str | None = None,
        layers: Iterable[str] | None = None,
        probe: tuple[Tensor, Tensor] | None = None,
        loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        settings: dict[str, Any] | None = None,
        **more: Any,
    ) -> None:
        self.keywords = forwarded(every, out, layers, probe, loss, settings, self.framework, more)
        self.watch: Watch | None = None
        self.sent: int | None = None  # the step of the last row sent to the loggers

    def end(self, finished: bool) -> None:
        """Close the watch (result.json) when training finished, else detach it (no result)."""
        watched, self.watch = self.watch, None
        if watched is None or watched.closed:
            return
        if finished:
            watched.close()
        else:
            watched.detach()
