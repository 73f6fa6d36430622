"""The examples, run as a user runs them (watch_cnn.py on a slice of real MNIST, the Lightning
and Trainer scripts on made-up data): their records give the verdicts their docstrings promise."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vanishing import records
from vanishing import reporting as report
from vanishing.frontends.cli import main
from vanishing.reporting.export import scalars
from vanishing.reporting.verdict import judge

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SLICE = ["--depth", "8", "--limit", "1000", "--test-limit", "500", "--every", "10"]


@pytest.fixture(scope="session")
def mnist_cache(real_mnist) -> Path:
    """The cache that holds real MNIST (set up before the test's own empty cache)."""
    return Path(os.environ.get("VANISHING_CACHE") or Path.home() / ".cache" / "vanishing")


@pytest.mark.realdata
def test_watch_cnn_sigmoid_vanishes_and_relu_is_healthy(tmp_path, mnist_cache, capsys):
    env = {**os.environ, "VANISHING_CACHE": str(mnist_cache), "OMP_NUM_THREADS": "1"}
    script = str(EXAMPLES / "watch_cnn.py")
    outs = {name: tmp_path / name for name in ("sigmoid", "relu")}
    jobs = [
        subprocess.Popen(
            [sys.executable, script, "--activation", name, *SLICE, "--out", str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, out in outs.items()
    ]
    for job in jobs:
        output, _ = job.communicate(timeout=120)
        assert job.returncode == 0, output
        assert "epoch 1: train loss" in output

    verdicts = {}
    for name, out in outs.items():
        runs, notes = report.load_runs([out])
        assert not notes
        (point,) = report.make_points(runs)
        verdicts[name] = judge(point)
    sigmoid, relu = verdicts["sigmoid"], verdicts["relu"]
    assert sigmoid.kinds[0] == "vanishing" and "no-learning" in sigmoid.kinds
    assert sigmoid.headline.startswith("Vanishing gradient: the back-propagated signal shrinks")
    assert sigmoid.headline.split("-fold ")[1].startswith("from convs.7 to convs.0")
    assert "a rectifier instead of Sigmoid (nn.ReLU with He init)" in sigmoid.cure
    # healthy; its weight-gradient ratio alone would read otherwise (a note, "mismatch")
    assert relu.kinds[0] == "healthy" and not {"dead", "saturated"} & set(relu.kinds)
    assert relu.headline.startswith(
        "Healthy gradient: the back-propagated signal keeps its size from convs.7 to convs.0"
    )
    assert relu.cure == ""

    # What the user reads: the report's verdict lines, under the model's name.
    assert main(["report", str(outs["sigmoid"]), str(outs["relu"])]) == 0
    markdown = (outs["sigmoid"] / "report.md").read_text()
    assert "### Net (Sigmoid)" in markdown and "### Net (ReLU)" in markdown
    assert f"- {sigmoid.headline}" in markdown and f"- {relu.headline}" in markdown


# The callbacks' examples: made-up data, nothing downloaded, a few steps each.
QUIET = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}


def run_examples(commands: dict[str, list[str]]) -> None:
    """Run the example scripts side by side, as a user runs them; each must succeed."""
    env = {**os.environ, **QUIET, "OMP_NUM_THREADS": "1"}
    jobs = {
        name: subprocess.Popen(
            [sys.executable, str(EXAMPLES / command[0]), *command[1:]],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, command in commands.items()
    }
    for job in jobs.values():
        output, _ = job.communicate(timeout=180)
        assert job.returncode == 0, output
        assert "records in " in output


def verdict_of(out: Path):
    runs, notes = report.load_runs([out])
    assert not notes
    (point,) = report.make_points(runs)
    return judge(point)


def sent_rows(out: Path) -> dict[int, dict[str, float]]:
    """Per probe row, the headline numbers the callback sends, by the row's step (the run's
    optimizer step, counted from 0)."""
    config = records.read_json(out / "config.json")
    return {
        row["step"]: dict(scalars(config, row))
        for row in records.read_metrics(out)
        if row["kind"] == "probe"
    }


def test_lightning_and_trainer_examples_give_their_verdicts_and_log_to_their_loggers(tmp_path):
    """A deep sigmoid stack under each framework vanishes, a tiny BERT under the Trainer keeps
    its gradient; the headline numbers are in each framework's own logger."""
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    small = ["--samples", "640", "--every", "5"]
    outs = {name: tmp_path / name for name in ("lightning", "trainer", "bert")}
    logs = {name: tmp_path / f"{name}-logs" for name in outs}
    commands = {
        "lightning": ["watch_lightning.py", *small, "--epochs", "1"],
        "trainer": ["watch_trainer.py", "--model", "sigmoid", *small],
        "bert": ["watch_trainer.py", "--model", "bert", *small, "--max-steps", "10"],
    }
    run_examples(
        {
            name: [*command, "--out", str(outs[name]), "--logs", str(logs[name])]
            for name, command in commands.items()
        }
    )

    for name, model in (("lightning", "DeepNet"), ("trainer", "DeepSigmoid")):
        out = outs[name]
        assert (out / "result.json").exists()
        verdict = verdict_of(out)
        assert verdict.kinds[0] == "vanishing"
        assert verdict.headline.startswith("Vanishing gradient: the back-propagated signal shrinks")
        assert verdict.headline.split("-fold ")[1].startswith("from layers.11 to layers.0")
        assert "a rectifier instead of Sigmoid" in verdict.cure
        assert main(["report", str(out)]) == 0
        markdown = (out / "report.md").read_text()
        assert f"### {model} (Sigmoid)" in markdown and f"- {verdict.headline}" in markdown

    verdict = verdict_of(outs["bert"])
    assert verdict.kinds[0] == "healthy" and "vanishing" not in verdict.kinds
    assert verdict.headline.startswith(
        "Healthy gradient: the back-propagated signal keeps its size from "
        "bert.encoder.layer.1.intermediate.dense to bert.encoder.layer.0.intermediate.dense"
    )

    # Lightning: the numbers are columns of the CSVLogger's file, at the step Lightning logs
    # the same optimizer step's own train_loss at (the module logs it at every step: the n-th
    # train_loss_step row is step n's)
    expected = sent_rows(outs["lightning"])
    (metrics,) = (logs["lightning"] / "lightning").glob("version_*/metrics.csv")
    with metrics.open() as file:
        rows = list(csv.DictReader(file))
    losses = [int(row["step"]) for row in rows if row["train_loss_step"]]
    logged = {int(row["step"]): row for row in rows if row["vanishing/vanishing_ratio"]}
    assert len(losses) == 10 and sorted(logged) == sorted(losses[step] for step in expected)
    for step, values in expected.items():
        for tag, value in values.items():
            found = logged[losses[step]][f"vanishing/{tag}"]
            assert float(found) == pytest.approx(value, rel=1e-6)

    # the Trainer: in its TensorBoard event file, under the Trainer's "train/" prefix, at its
    # global step once the step is done (step s at s + 1, where the Trainer logs step s's own
    # loss: test_integrations checks that against its loss rows)
    expected = {step + 1: values for step, values in sent_rows(outs["trainer"]).items()}
    (events,) = logs["trainer"].glob("runs/*")
    board = accumulator.EventAccumulator(str(events), size_guidance={"scalars": 0})
    board.Reload()
    for tag in ("grad_norm/layers.0", "signal_norm/layers.11", "vanishing_ratio"):
        found = {event.step: event.value for event in board.Scalars(f"train/vanishing/{tag}")}
        assert sorted(found) == sorted(expected)
        for step, value in found.items():
            assert value == pytest.approx(expected[step][tag], rel=1e-6)
