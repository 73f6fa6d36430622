"""`VanishingCallback`: `vanishing.watch` as a PyTorch Lightning callback.

    trainer = lightning.Trainer(callbacks=[VanishingCallback(every=50, out="runs/watch/my-net")])
    trainer.fit(model, data)

At the start of training it watches the LightningModule with the trainer's optimizer (its one
optimizer; with several, as a GAN has, none: each backward pass is a step), the keywords given
passed on to `watch` (config.json's `framework` is "lightning"). A training_step calls the
module's parts (`self.net(x)`), not the module, so the callback tells the watch where the
step's forward runs: from the batch's start to its zero_grad or backward (`Watch.forward_starts`,
`forward_ends`). Lightning runs the training step (forward, backward, clipping) inside
`optimizer.step(closure)`; at a measured step the callback calls that closure just before the
step begins, so the watch reads the step's own gradients (as backward leaves them, before
Lightning's gradient clipping) and activations, and the optimizer is handed its result: for an
optimizer that calls its closure once (SGD, Adam, ...) the training is what it is unwatched. An
optimizer that calls it again (LBFGS) is given it unchanged, and its rows read as a watched
LBFGS's do. Under precision="16-mixed" with a GradScaler the watch is given the scaler
(`scaler=`): the signals are divided by its scale, as the gradients are unscaled; a step it
skips (an overflow) is no step. A step is an optimizer step: with `accumulate_grad_batches`
the batches of one update are one step, measured on the last batch's forward and the
accumulated gradient.

Each new probe row's numbers (`export.scalars`, tagged "vanishing/grad_norm/LAYER", ...) go to
every logger of the trainer (`trainer.loggers`: CSV, TensorBoard, MLflow, W&B, ...) by its
`log_metrics`, at the step Lightning logs that batch's own metrics (a `self.log(...,
on_step=True)` of its training_step) at: the row of the run's step s, counted from 0, at s (not
`trainer.global_step`, one past it by then). At each training epoch's end an epoch row is
written from `trainer.callback_metrics`: `train_loss` from "train_loss" (or "train_loss_epoch"),
and the validation set's numbers as the report's held-out ones when validation ran in that
epoch: `test_loss` from "val_loss" and `test_accuracy` from "val_accuracy" or "val_acc" when it
is a fraction in [0, 1]; other names are not guessed at (`common.held_out`). Under DDP a
"val_acc" (or "val_loss") logged without `sync_dist=True` is rank 0's share of the validation
set, and it becomes the run's test_accuracy (test_loss) as it is. The run ends with the training
(result.json, also when training stops early: max_steps, EarlyStopping, `trainer.should_stop`);
an exception (an interruption too) leaves its rows and no result, as `watch`'s own `with` block
does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vanishing.integrations.common import (
    Watching,
    check_model,
    held_out,
    install_hint,
    new_scalars,
)
from vanishing.measure.watch import watch

try:
    import lightning.pytorch as pl
except ImportError:  # lightning missing (or blocked): say which extra brings it
    raise install_hint("lightning", "PyTorch Lightning") from None


class VanishingCallback(Watching, pl.Callback):
    """Watch the LightningModule as it trains (see the module's docstring): `every`, `out`,
    `layers`, `probe`, `loss`, `settings` and any other keyword as `vanishing.watch` takes them
    (`ranks=` under DDP)."""

    framework = "lightning"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handle: Any = None  # our step pre-hook on the optimizer
        self.validated = False  # validation ran since the last epoch row

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.end(finished=False)  # a watch left by an earlier fit that failed
        model = check_model(pl_module, "the trainer")
        optimizers = list(trainer.optimizers)
        optimizer = optimizers[0] if len(optimizers) == 1 else None
        if optimizer is not None:  # registered first: it runs before the watch's own
            self.handle = optimizer.register_step_pre_hook(self.closure_first)
        keywords = dict(self.keywords)
        scaler = getattr(trainer.precision_plugin, "scaler", None)  # "16-mixed"'s GradScaler
        if scaler is not None and optimizer is not None:
            keywords.setdefault("scaler", scaler)
        try:
            self.watch = watch(model, optimizer, **keywords)
        except BaseException:
            self.end(finished=False)
            raise
        self.sent, self.validated = None, False

    def closure_first(self, optimizer: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        """At a measured step: run Lightning's closure (the training step's forward and
        backward) before the step begins, and hand the optimizer its result."""
        watched = self.watch
        closure = kwargs.get("closure", args[0] if args else None)
        if (
            watched is None
            or not callable(closure)
            or isinstance(optimizer, torch.optim.LBFGS)
            or watched.step % watched.every
        ):
            return None
        with torch.enable_grad():
            result = closure()

        def done() -> Any:
            return result

        if "closure" in kwargs:
            return args, {**kwargs, "closure": done}
        return (done, *args[1:]), kwargs

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, index: int
    ) -> None:
        if self.watch is not None:  # training_step calls the module's parts, not the module
            self.watch.forward_starts()

    def on_before_zero_grad(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if self.watch is not None:  # the training step's forward is over
            self.watch.forward_ends()

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor
    ) -> None:
        if self.watch is not None:
            self.watch.forward_ends()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        index: int,
    ) -> None:
        if self.watch is None:
            return
        self.watch.forward_ends()  # a training_step that returned no loss: no backward
        self.sent, values = new_scalars(self.watch, self.sent)
        if values:
            # the step Lightning logs this batch's own metrics at (its loggers' default step,
            # counted from 0; `global_step` is already one past it here)
            step = trainer.fit_loop.epoch_loop._batches_that_stepped
            for logger in trainer.loggers:
                logger.log_metrics(values, step=step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validated = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.watch is None:
            return
        values = held_out(trainer.callback_metrics)
        if not self.validated:  # callback_metrics still hold an earlier validation's
            values.pop("test_loss", None)
            values.pop("test_accuracy", None)
        self.validated = False
        if values:
            self.watch.log(epoch=trainer.current_epoch + 1, **values)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.end(finished=True)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.end(finished=False)

    def end(self, finished: bool) -> None:
        """Remove our step pre-hook, then end the watch (`Watching.end`)."""
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        super().end(finished)
