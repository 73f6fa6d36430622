"""vanishing.integrations: the Lightning callback and the Hugging Face TrainerCallback watch the
framework's own model and optimizer (the gradients the step really uses, the training unchanged),
send each probe row's numbers to the framework's loggers, write epoch rows from its evaluation,
and end the run with the training (an exception leaves no result)."""

from __future__ import annotations

import copy
import csv
import importlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vanishing import records
from vanishing.errors import UsageError
from vanishing.integrations import common
from vanishing.measure.watch import watched_by
from vanishing.reporting import export

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

pl = pytest.importorskip("lightning.pytorch")
transformers = pytest.importorskip("transformers")
lightning_callback = importlib.import_module("vanishing.integrations.lightning")
transformers_callback = importlib.import_module("vanishing.integrations.transformers")

SAMPLES, FEATURES, CLASSES = 32, 8, 3


def data() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, FEATURES, generator=generator)
    return x, torch.randint(CLASSES, (SAMPLES,), generator=generator)


def network() -> nn.Sequential:  # (batch, 8) -> (batch, 3)
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(FEATURES, 16), nn.Sigmoid(), nn.Linear(16, 16), nn.Sigmoid(), nn.Linear(16, 3)
    )


def reference(model: nn.Sequential, x: Tensor, y: Tensor) -> tuple[list[float], list[float]]:
    """Each Linear's weight-gradient norm and each sigmoid's signal ||dLoss/da|| on the whole
    batch, by autograd."""
    model = copy.deepcopy(model)
    outputs = []
    h = x
    for layer in model:
        h = layer(h)
        if isinstance(layer, nn.Sigmoid):
            h.retain_grad()
            outputs.append(h)
    F.cross_entropy(h, y).backward()
    grads = [layer.weight.grad.norm().item() for layer in model if isinstance(layer, nn.Linear)]
    return grads, [output.grad.norm().item() for output in outputs]


def probe_rows(run: Path) -> list[dict]:
    return [row for row in records.read_metrics(run) if row["kind"] == "probe"]


def epoch_rows(run: Path) -> list[dict]:
    return [row for row in records.read_metrics(run) if row["kind"] == "epoch"]


def headline(row: dict[str, str]) -> dict[str, float]:
    """A logger's CSV row's vanishing columns, as numbers."""
    return {k: float(v) for k, v in row.items() if k.startswith("vanishing/") and v}


def expected_scalars(run: Path, row: dict) -> dict[str, float]:
    config = records.read_json(run / "config.json")
    return {"vanishing/" + tag: value for tag, value in export.scalars(config, row)}


# -- shared parts -------------------------------------------------------------------------------


def test_importing_vanishing_imports_no_framework():
    code = (
        "import sys, vanishing, vanishing.integrations, vanishing.integrations.common\n"
        "print(sorted(m for m in ('lightning', 'transformers', 'accelerate') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("extra", "modules", "package"),
    [
        ("lightning", ["lightning", "lightning.pytorch"], "PyTorch Lightning"),
        ("transformers", ["transformers"], "transformers"),
    ],
)
def test_a_missing_extra_is_one_clear_error(monkeypatch, extra, modules, package):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # import fails, as uninstalled
    monkeypatch.delitem(sys.modules, f"vanishing.integrations.{extra}")
    with pytest.raises(UsageError) as error:
        importlib.import_module(f"vanishing.integrations.{extra}")
    assert str(error.value) == (
        f"vanishing.integrations.{extra} needs {package}, an optional extra: "
        f"pip install 'vanishing[{extra}]'"
    )


def test_only_the_keywords_given_reach_watch():
    for callback in (lightning_callback.VanishingCallback, transformers_callback.VanishingCallback):
        plain = callback(every=3).keywords
        assert "ranks" not in plain and "probe" not in plain and "out" not in plain
        assert plain["every"] == 3 and set(plain["settings"]) == {"framework"}
        given = callback(out="o", ranks="all", settings={"data": "x"}).keywords
        assert given["ranks"] == "all" and given["out"] == "o"
        assert given["settings"]["data"] == "x"
    assert lightning_callback.VanishingCallback().keywords["settings"]["framework"] == "lightning"


def test_held_out_maps_only_known_names_and_fractions():
    metrics = {
        "train_loss": torch.tensor(0.5),
        "val_loss": 0.75,
        "val_acc": torch.tensor(0.25),
        "test_accuracy": 0.99,  # never taken: the report's held-out numbers are validation's
        "other": 3.0,
    }
    assert common.held_out(metrics) == {"train_loss": 0.5, "test_loss": 0.75, "test_accuracy": 0.25}
    assert common.held_out({"val_accuracy": 87.5, "eval_loss": 1.0}) == {"test_loss": 1.0}
    assert common.held_out({"val_loss_epoch": 2.0, "val_loss": 3.0}) == {"test_loss": 2.0}
    diverged = common.held_out({"train_loss": math.nan})["train_loss"]
    assert math.isnan(diverged)  # kept: the run's status reads it
    assert common.held_out({"val_acc": "high", "loss": 1.0}) == {}


# -- Lightning ------------------------------------------------------------------------------------


class Module(pl.LightningModule):
    """A small sigmoid MLP; `fail_at` raises in that step's training_step; `per_step` logs
    train_loss at each step as well ("train_loss_step", "train_loss_epoch")."""

    def __init__(self, fail_at: int | None = None, per_step: bool = False) -> None:
        super().__init__()
        self.net = network()
        self.fail_at = fail_at
        self.per_step = per_step

    def training_step(self, batch: tuple[Tensor, Tensor], index: int) -> Tensor:
        if self.global_step == self.fail_at:
            raise RuntimeError("boom")
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=self.per_step, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], index: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5, momentum=0.9)


def fit(
    module: pl.LightningModule,
    logs: Path,
    callbacks: list,
    epochs: int = 3,
    accumulation: int = 1,
    validate_every: int = 1,
) -> pl.Trainer:
    """Fit on the whole data per optimizer step (`accumulation` batches of it), validated on it
    as well."""
    dataset = torch.utils.data.TensorDataset(*data())
    loader = torch.utils.data.DataLoader(dataset, SAMPLES // accumulation)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accumulate_grad_batches=accumulation,
        check_val_every_n_epoch=validate_every,
        accelerator="cpu",
        logger=pl.loggers.CSVLogger(logs, name="csv"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    trainer.fit(module, loader, loader)
    return trainer


def test_lightning_watches_the_steps_gradients_and_leaves_training_unchanged(tmp_path):
    module = Module(per_step=True)
    unwatched = copy.deepcopy(module)
    grads, signals = reference(module.net, *data())
    out = tmp_path / "run"
    trainer = fit(
        module, tmp_path / "logs", [lightning_callback.VanishingCallback(every=1, out=out)]
    )

    config = records.read_json(out / "config.json")
    assert config["framework"] == "lightning" and config["optimizer"] == "sgd"
    assert config["layers"] == ["net.0", "net.2", "net.4"]
    rows = probe_rows(out)
    assert [row["step"] for row in rows] == [0, 1, 2]
    # step 0's gradients are the first batch's (Lightning runs it inside optimizer.step)
    assert rows[0]["grad_norms"] == pytest.approx(grads, rel=1e-5)
    assert rows[0]["signal_norms"] == pytest.approx(signals, rel=1e-5)
    assert all(s is not None and s > 0 for row in rows for s in row["signal_norms"])
    assert all(r is not None and r > 0 for row in rows for r in row["update_ratio"])
    assert records.read_json(out / "result.json")["steps"] == 3
    assert watched_by(module) is None

    # the training is what it is unwatched, bit for bit
    fit(unwatched, tmp_path / "plain", [])
    for watched, plain in zip(module.parameters(), unwatched.parameters(), strict=True):
        assert torch.equal(watched, plain)

    # epoch rows from what Lightning evaluated: validation as the report's held-out numbers
    logged = list(csv.DictReader((Path(trainer.logger.log_dir) / "metrics.csv").open()))
    val = [row for row in logged if row["val_loss"]]
    epochs = epoch_rows(out)
    assert [row["epoch"] for row in epochs] == [1, 2, 3]
    assert [row["test_loss"] for row in epochs] == pytest.approx(
        [float(r["val_loss"]) for r in val]
    )
    assert [row["test_accuracy"] for row in epochs] == pytest.approx(
        [float(r["val_acc"]) for r in val]
    )
    assert all(row["train_loss"] > 0 for row in epochs)

    # the headline numbers in the CSVLogger's file, at the step Lightning logs that optimizer
    # step's own train_loss at: the n-th probe row beside the n-th step's loss
    sent = [
        (int(row["step"]), headline(row)) for row in logged if row.get("vanishing/grad_norm/net.0")
    ]
    losses = [
        (int(row["step"]), float(row["train_loss_step"]))
        for row in logged
        if row["train_loss_step"]
    ]
    assert [step for step, _ in sent] == [step for step, _ in losses]
    assert len(sent) == len(rows) == 3
    x, y = data()  # the first logged loss is the first batch's, on the untrained network
    with torch.no_grad():
        first = float(F.cross_entropy(network()(x), y))
    assert losses[0][1] == pytest.approx(first, rel=1e-5)
    for row, (_, values) in zip(rows, sent, strict=True):
        assert values == pytest.approx(expected_scalars(out, row), rel=1e-6)


def test_lightning_step_is_an_optimizer_step_under_accumulation(tmp_path):
    module = Module()
    grads, _ = reference(module.net, *data())
    out = tmp_path / "run"
    callback = lightning_callback.VanishingCallback(every=1, out=out)
    fit(module, tmp_path / "logs", [callback], epochs=2, accumulation=2)
    rows = probe_rows(out)
    assert [row["step"] for row in rows] == [0, 1]  # two updates of two batches each
    assert rows[0]["grad_norms"] == pytest.approx(grads, rel=1e-5)  # the accumulated gradient
    assert all(s is not None and s > 0 for row in rows for s in row["signal_norms"])
    assert records.read_json(out / "result.json")["steps"] == 2


def test_lightning_epoch_rows_take_only_a_validation_of_their_epoch(tmp_path):
    out = tmp_path / "run"
    callback = lightning_callback.VanishingCallback(every=1, out=out)
    trainer = fit(Module(), tmp_path / "logs", [callback], epochs=3, validate_every=2)
    with (Path(trainer.logger.log_dir) / "metrics.csv").open() as file:
        (val,) = [float(row["val_loss"]) for row in csv.DictReader(file) if row["val_loss"]]
    epochs = epoch_rows(out)
    assert [row["epoch"] for row in epochs] == [1, 2, 3]
    assert ["test_loss" in row for row in epochs] == [False, True, False]
    assert epochs[1]["test_loss"] == pytest.approx(val)
    assert all(row["train_loss"] > 0 for row in epochs)


class Manual(Module):
    """Manual optimization, as a GAN's steps are written."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: tuple[Tensor, Tensor], index: int) -> None:
        optimizer = self.optimizers()
        optimizer.zero_grad()
        x, y = batch
        self.manual_backward(F.cross_entropy(self.net(x), y))
        optimizer.step()


def test_lightning_manual_optimization_is_watched_the_same(tmp_path):
    module = Manual()
    unwatched = copy.deepcopy(module)
    grads, signals = reference(module.net, *data())
    out = tmp_path / "run"
    fit(module, tmp_path / "logs", [lightning_callback.VanishingCallback(every=1, out=out)], 2)
    rows = probe_rows(out)
    assert [row["step"] for row in rows] == [0, 1]
    assert rows[0]["grad_norms"] == pytest.approx(grads, rel=1e-5)
    assert rows[0]["signal_norms"] == pytest.approx(signals, rel=1e-5)
    fit(unwatched, tmp_path / "plain", [], 2)
    for watched, plain in zip(module.parameters(), unwatched.parameters(), strict=True):
        assert torch.equal(watched, plain)


def test_lightning_mixed_precision_signals_are_unscaled(tmp_path):
    """precision="16-mixed" scales the loss by its GradScaler's 65536: the callback gives the
    watch that scaler, so the signals are the loss's own (the gradients are unscaled either
    way)."""
    plugin = pl.plugins.MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    module = Module()
    grads, signals = reference(module.net, *data())
    out = tmp_path / "run"
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data()), SAMPLES)
    trainer = pl.Trainer(
        plugins=[plugin],
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[lightning_callback.VanishingCallback(every=1, out=out)],
    )
    trainer.fit(module, loader)
    assert plugin.scaler.get_scale() == 2.0**16
    (first, _) = probe_rows(out)
    assert first["grad_norms"] == pytest.approx(grads, rel=1e-2)  # float16's precision
    assert first["signal_norms"] == pytest.approx(signals, rel=1e-2)


class Stop(pl.Callback):
    def on_train_batch_end(self, trainer, module, outputs, batch, index):
        trainer.should_stop = True


def test_lightning_stopped_early_has_a_result_and_an_exception_none(tmp_path):
    out = tmp_path / "stopped"
    fit(
        Module(),
        tmp_path / "logs",
        [lightning_callback.VanishingCallback(every=1, out=out), Stop()],
        5,
    )
    assert records.read_json(out / "result.json")["steps"] == 1

    out = tmp_path / "failed"
    module = Module(fail_at=1)
    with pytest.raises(RuntimeError, match="boom"):
        fit(module, tmp_path / "logs", [lightning_callback.VanishingCallback(every=1, out=out)])
    assert not (out / "result.json").exists()
    assert [row["step"] for row in probe_rows(out)] == [0]
    assert watched_by(module) is None


class Empty(pl.LightningModule):
    def training_step(self, batch, index):
        return None

    def configure_optimizers(self):
        return None


def test_lightning_without_parameters_is_one_clear_error(tmp_path):
    with pytest.raises(UsageError) as error:
        fit(Empty(), tmp_path / "logs", [lightning_callback.VanishingCallback(out=tmp_path / "r")])
    assert str(error.value) == (
        "VanishingCallback: the trainer's Empty has no trainable parameters: no gradient to watch"
    )


# -- the Hugging Face Trainer -------------------------------------------------------------------


class Classifier(nn.Module):
    """What the Trainer takes: a forward that returns its loss (and logits)."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.net = network()
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        logits = self.net(x)
        return {
            "logits": logits,
            **({"loss": F.cross_entropy(logits, labels)} if labels is not None else {}),
        }


def samples() -> list[dict[str, Tensor]]:
    x, y = data()
    return [{"x": x[i], "labels": y[i]} for i in range(SAMPLES)]


def train(model: nn.Module, output: Path, callback, accumulation: int = 1, steps: int = 3):
    arguments = transformers.TrainingArguments(
        output_dir=str(output),
        max_steps=steps,
        per_device_train_batch_size=SAMPLES // accumulation,
        gradient_accumulation_steps=accumulation,
        learning_rate=0.01,
        max_grad_norm=1e-3,  # clips every step: the watch reads the gradients before
        logging_steps=1,  # its loss at each step: the step the callback's numbers must share
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=model, args=arguments, train_dataset=samples(), callbacks=[callback]
    )
    trainer.train()
    return trainer


@pytest.mark.parametrize("accumulation", [1, 2])
def test_trainer_watches_the_optimizer_it_steps_and_logs_through_its_log(tmp_path, accumulation):
    model = Classifier()
    grads, signals = reference(model.net, *data())  # a step is one pass over the whole data
    out = tmp_path / "run"
    callback = transformers_callback.VanishingCallback(every=1, out=out)
    trainer = train(model, tmp_path / "trainer", callback, accumulation)

    config = records.read_json(out / "config.json")
    assert config["framework"] == "transformers" and config["optimizer"] == "adamw"
    rows = probe_rows(out)
    assert [row["step"] for row in rows] == [0, 1, 2]  # optimizer steps, not micro-batches
    # the gradient of the whole step, before the Trainer's clipping
    assert rows[0]["grad_norms"] == pytest.approx(grads, rel=1e-5)
    if accumulation == 1:  # else the signal is the last micro-batch's
        assert rows[0]["signal_norms"] == pytest.approx(signals, rel=1e-5)
    assert all(r is not None and r > 0 for row in rows for r in row["update_ratio"])
    assert records.read_json(out / "result.json")["steps"] == 3
    assert watched_by(model) is None

    # each row's numbers at the step the Trainer logs the same optimizer step's own loss at
    history = trainer.state.log_history
    sent = [
        (entry["step"], {k: v for k, v in entry.items() if k.startswith("vanishing/")})
        for entry in history
        if "vanishing/vanishing_ratio" in entry
    ]
    losses = [entry["step"] for entry in history if "loss" in entry]
    assert [step for step, _ in sent] == losses and len(losses) == len(rows)
    for row, (_, values) in zip(rows, sent, strict=True):
        assert values == pytest.approx(expected_scalars(out, row), rel=1e-6)
    # no evaluation: one epoch row at the end, the training's mean loss
    (epoch,) = epoch_rows(out)
    final = [entry["train_loss"] for entry in trainer.state.log_history if "train_loss" in entry]
    assert epoch["train_loss"] == pytest.approx(final[-1]) and "test_loss" not in epoch


def test_trainer_epoch_rows_come_from_its_evaluations(tmp_path):
    out = tmp_path / "run"
    arguments = transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=2,
        per_device_train_batch_size=SAMPLES,  # a step is an epoch
        eval_strategy="steps",
        eval_steps=1,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )

    def accuracy(prediction) -> dict[str, float]:
        logits, labels = prediction.predictions, prediction.label_ids
        return {"accuracy": float((logits.argmax(-1) == labels).mean())}

    trainer = transformers.Trainer(
        model=Classifier(),
        args=arguments,
        train_dataset=samples(),
        eval_dataset=samples(),
        compute_metrics=accuracy,
        callbacks=[transformers_callback.VanishingCallback(every=1, out=out)],
    )
    trainer.train()
    history = trainer.state.log_history
    evaluations = [entry for entry in history if "eval_loss" in entry]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    epochs = epoch_rows(out)
    assert [row["epoch"] for row in epochs] == [1, 2]
    assert [row["test_loss"] for row in epochs] == [e["eval_loss"] for e in evaluations]
    assert [row["test_accuracy"] for row in epochs] == [e["eval_accuracy"] for e in evaluations]
    assert [row["train_loss"] for row in epochs] == losses  # logged before each evaluation


def test_trainer_fp16_scaler_is_divided_out_of_the_signals(tmp_path):
    """Under fp16 on a GPU Accelerate scales the loss by its GradScaler (65536): given here to
    the Trainer's accelerator by hand (on a CPU it has none), the watch is handed it, and the
    signals and gradients are the loss's own."""
    model = Classifier()
    grads, signals = reference(model.net, *data())
    out = tmp_path / "run"
    arguments = transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=2,
        per_device_train_batch_size=SAMPLES,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=model,
        args=arguments,
        train_dataset=samples(),
        callbacks=[transformers_callback.VanishingCallback(every=1, out=out)],
    )
    trainer.accelerator.scaler = scaler = torch.amp.GradScaler("cpu")
    trainer.train()
    assert scaler.get_scale() == 2.0**16  # it scaled the loss, and no step overflowed
    first = probe_rows(out)[0]
    assert first["grad_norms"] == pytest.approx(grads, rel=1e-5)
    assert first["signal_norms"] == pytest.approx(signals, rel=1e-5)


def test_trainer_exception_leaves_no_result_and_the_next_train_runs(tmp_path):
    model = Classifier(fail_at=2)
    out = tmp_path / "run"
    callback = transformers_callback.VanishingCallback(every=1, out=out)
    with pytest.raises(RuntimeError, match="boom"):
        train(model, tmp_path / "trainer", callback)
    assert not (out / "result.json").exists()
    assert [row["step"] for row in probe_rows(out)] == [0]
    train(model, tmp_path / "trainer", callback)  # lets go of the failed run's watch first
    assert records.read_json(out / "result.json")["steps"] == 3
    assert watched_by(model) is None


def test_trainer_callback_without_a_model_is_one_clear_error():
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    callback = transformers_callback.VanishingCallback()
    with pytest.raises(UsageError) as error:
        callback.on_train_begin(None, state, control, model=None, optimizer=None)
    assert str(error.value) == (
        "VanishingCallback: the Trainer has no model to watch (got NoneType); "
        "give the trainer a torch.nn.Module"
    )
    frozen = network().requires_grad_(False)
    with pytest.raises(UsageError, match="the Trainer's Sequential has no trainable parameters"):
        callback.on_train_begin(None, state, control, model=frozen, optimizer=None)
