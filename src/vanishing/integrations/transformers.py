"""`VanishingCallback`: `vanishing.watch` as a Hugging Face `TrainerCallback`.

    trainer = Trainer(model=model, args=args, train_dataset=data,
                      callbacks=[VanishingCallback(every=50, out="runs/watch/my-bert")])
    trainer.train()

At `on_train_begin` (the model and the optimizer exist by then: the Trainer has made its
optimizer and Accelerate has wrapped it) it watches the Trainer's model with the torch optimizer
whose step() runs (an `AcceleratedOptimizer` is unwrapped to the optimizer it steps), the
keywords given passed on to `watch` (config.json's `framework` is "transformers"). A step is an
optimizer step: under `gradient_accumulation_steps` the micro-batches of one update are one
step, measured on the last micro-batch's forward and the accumulated gradient. The gradients
are read as backward leaves them, before the Trainer's `max_grad_norm` clipping. A Hugging Face
model returns its own loss, so the training step itself is measured; under fp16 with
Accelerate's GradScaler the watch is given the scaler (`scaler=`), so the signals are the
loss's own, not its scaled loss's; a `probe=` batch needs
`loss=` to turn the model's output into a loss.

Each new probe row's numbers (`export.scalars`, tagged "vanishing/grad_norm/LAYER", ...) go
through the Trainer's own `log` at the end of that step, as its loss does: into
`trainer.state.log_history` and to every `report_to` integration (TensorBoard, MLflow, W&B, ...;
those add their "train/" prefix: "train/vanishing/grad_norm/LAYER"), at the Trainer's global step
(optimizer steps done: the row of the run's step s, counted from 0, is logged at s + 1, the
step the Trainer logs that step's own loss at: it counts the step done before it logs); its
console prints them, as it prints every log. A
callback is given no handle on its Trainer, and adding to `logs` in `on_log` would come too late
(log_history is copied before, and the integrations, ahead of a user's callback in the list,
have run); so at `on_train_begin` the callback finds the Trainer whose training loop called it
(the caller's frames) and calls its `log`. Without one (a callback driven by hand) nothing is
sent, and the records are written all the same.

Epoch rows come from each evaluation (`on_evaluate`'s metrics): the evaluation set's numbers as
the report's held-out ones, `test_loss` from "eval_loss" and `test_accuracy` from
"eval_accuracy" when it is a fraction in [0, 1] (a `compute_metrics` that returns "accuracy"),
with the Trainer's last logged training loss as `train_loss`; without an evaluation, one row at
the end with the Trainer's own final "train_loss" (the training's mean loss). Nothing else is
guessed at (`common.held_out`), and the numbers are copied as the Trainer reports them: its
logged "loss" reads high in transformers 5.25 itself under `gradient_accumulation_steps` > 1 and
under DDP (about twice the eval_loss of a model at chance, with or without the callback). The run
ends with the training (result.json, also when a callback stops it early); an exception leaves
its rows and no result (the next `train()` lets go of that watch first).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from vanishing.integrations.common import (
    Watching,
    check_model,
    held_out,
    install_hint,
    new_scalars,
)
from vanishing.measure.watch import watch

try:
    import transformers
except ImportError:  # transformers missing (or blocked): say which extra brings it
    raise install_hint("transformers", "transformers") from None

FRAMES = 20  # how far up the caller's frames the Trainer is looked for


def stepped(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer whose step() runs: Accelerate's (and DeepSpeed's) wrappers unwrapped."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def calling_trainer() -> Any:
    """The `transformers.Trainer` whose code called this callback's event, None if none did."""
    frame = inspect.currentframe()
    for _ in range(FRAMES):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, transformers.Trainer):
            return owner
        frame = frame.f_back
    return None


def epoch_of(state: Any) -> int:
    """The epoch under way as the report counts (from 1): the Trainer's fractional epoch."""
    return max(1, math.ceil((state.epoch or 0) - 1e-9))


class VanishingCallback(Watching, transformers.TrainerCallback):
    """Watch the Trainer's model as it trains (see the module's docstring): `every`, `out`,
    `layers`, `probe`, `loss`, `settings` and any other keyword as `vanishing.watch` takes them
    (`ranks=` under torchrun)."""

    framework = "transformers"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trainer: Any = None  # the Trainer whose log is sent the headline numbers
        self.rows = 0  # epoch rows written

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.end(finished=False)  # a watch left by an earlier train() that failed
        model = check_model(kwargs.get("model"), "the Trainer")
        optimizer = stepped(kwargs.get("optimizer"))
        self.trainer = calling_trainer()
        keywords = dict(self.keywords)
        # fp16's GradScaler (Accelerate's, on a GPU): the signals are divided by its scale
        scaler = getattr(getattr(self.trainer, "accelerator", None), "scaler", None)
        if scaler is not None and optimizer is not None:
            keywords.setdefault("scaler", scaler)
        self.watch = watch(model, optimizer, **keywords)
        self.sent, self.rows = None, 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watch is None:
            return
        self.sent, values = new_scalars(self.watch, self.sent)
        if values and self.trainer is not None:
            # the handler's on_log clears should_log: this step's own log (its loss) is kept
            should_log = control.should_log
            self.trainer.log(values)
            control.should_log = self.trainer.control.should_log = should_log

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watch is None:
            return
        values = held_out(kwargs.get("metrics") or {})
        losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
        if values and losses:
            values = {"train_loss": float(losses[-1]), **values}
        if values:
            self.watch.log(epoch=epoch_of(state), **values)
            self.rows += 1

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.watch is not None and not self.rows:
            losses = [entry["train_loss"] for entry in state.log_history if "train_loss" in entry]
            if losses:
                self.watch.log(epoch=epoch_of(state), train_loss=float(losses[-1]))
        self.end(finished=True)

    def end(self, finished: bool) -> None:
        """Let go of the Trainer, then end the watch (`Watching.end`)."""
        self.trainer = None
        super().end(finished)
