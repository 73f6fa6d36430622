"""Records of recurrent runs written by hand, as SPEC22's trainer writes them: probe rows with a
time profile (`time_signal_norms`, `time_layers`, `gates`, `gates_saturated`,
`recurrent_norms`), and a regression run's epoch rows (`test_accuracy` null, `baseline_loss`).
The export's and the live page's tests read them; every number is a function of its place, so a
test can say what each should be."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vanishing import records
from vanishing.errors import UsageError
from vanishing.settings.config import TrainConfig

STEPS = 28  # an LSTM reading MNIST by rows
LSTM_LAYERS = ["lstm 1", "lstm 2"]
LSTM_PROBES = (0, 10, 20)
# Per probe: the factor ||dL/dh_t|| / ||dL/dh_t+1||; each layer's norm at the last step.
FACTORS = {0: 0.5, 10: 0.7, 20: 0.9}
TOPS = (1e-2, 1e-1)
BASELINE = 1 / 6  # the adding problem's: always answering 1
ADDING_STEPS = 50


def time_norm(step: int, layer: int, t: int, steps: int = STEPS) -> float:
    """||dL/dh_t|| at probe `step`, recurrent layer `layer` (from 0), time step t (from 1)."""
    return TOPS[layer] * FACTORS[step] ** (steps - t)


def gates(step: int, layer: int) -> dict[str, float]:
    """An LSTM layer's gate means at probe `step`: the forget gate opens as it trains."""
    return {"input": 0.5 - 0.01 * layer, "forget": 0.5 + step / 100 + 0.01 * layer, "output": 0.45}


def saturated(step: int, layer: int) -> dict[str, float]:
    return {"input": 0.0, "forget": step / 400 + 0.001 * layer, "output": 0.01}


def lstm_probe(step: int, null_at: tuple[int, int] | None = None) -> dict[str, Any]:
    """A probe row of a 2-layer LSTM; `null_at` (layer, t): a norm that was not finite."""
    profile = [[time_norm(step, layer, t) for t in range(1, STEPS + 1)] for layer in (0, 1)]
    if null_at is not None:
        profile[null_at[0]][null_at[1] - 1] = None
    return {
        "kind": "probe",
        "step": step,
        "epoch": step // 10,
        "loss": 2.3 - step / 20,
        "grad_norms": [1e-3 * (step + 1), 1e-2, 1e-1],
        "vanishing_ratio": 1e-2 * (step + 1),
        "weight_norms": [3.0, 4.0, 5.0],
        "time_signal_norms": profile,
        "time_layers": LSTM_LAYERS,
        "gates": [gates(step, layer) for layer in (0, 1)],
        "gates_saturated": [saturated(step, layer) for layer in (0, 1)],
        "recurrent_norms": [1.1, 0.9 + step / 100],
    }


def epoch_row(epoch: int, step: int, regression: bool) -> dict[str, Any]:
    if regression:  # the adding problem: squared error, no accuracy, and its baseline
        test = {"test_loss": 0.16 - 0.05 * epoch, "test_accuracy": None, "baseline_loss": BASELINE}
    else:
        test = {"test_loss": 1.0 / epoch, "test_accuracy": 0.5 + 0.2 * epoch}
    return {"kind": "epoch", "epoch": epoch, "step": step, "train_loss": 1.5 / epoch, **test}


def write_rows(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    with (run_dir / records.METRICS).open("a") as f:
        f.write("".join(json.dumps(row) + "\n" for row in rows))


def write_result(run_dir: Path, config: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """result.json of a finished run with these rows (status ok)."""
    probes = [row for row in rows if row["kind"] == "probe"]
    epochs = [row for row in rows if row["kind"] == "epoch"]
    regression = epochs[-1]["test_accuracy"] is None
    result = records.RunResult(
        status="ok",
        test_accuracy=epochs[-1]["test_accuracy"],
        test_loss=epochs[-1]["test_loss"],
        history=[{k: v for k, v in row.items() if k != "kind"} for row in epochs],
        grad_norms_init=probes[0]["grad_norms"],
        vanishing_ratio_init=probes[0]["vanishing_ratio"],
        signal_norms_init=[],
        grad_norms_final=probes[-1]["grad_norms"],
        saturated_fraction=[],
        dead_fraction=[],
        steps=epochs[-1]["step"],
        train_seconds=1.0,
        eval_seconds=0.1,
        probe_seconds=0.1,
        device="cpu",
        versions={},
        config=config,
        time_signal_norms_init=probes[0]["time_signal_norms"],
        time_signal_norms_final=probes[-1]["time_signal_norms"],
        time_layers=probes[-1]["time_layers"],
        gates_init=probes[0]["gates"],
        gates_final=probes[-1]["gates"],
        task="regression" if regression else "classification",
        baseline_loss=BASELINE if regression else None,
    )
    records.write_json(run_dir / records.RESULT, result.to_dict())


def lstm_config() -> dict[str, Any]:
    config = TrainConfig(
        arch="lstm", activation="tanh", hidden=(16, 16), epochs=2, probe_every=10, device="cpu"
    )
    return config.to_dict()


def write_lstm_run(run_dir: Path, finished: bool = True, null_at=None) -> list[dict[str, Any]]:
    """A 2-layer LSTM on row MNIST: probes at LSTM_PROBES, epoch ends at steps 10 and 20."""
    run_dir.mkdir(parents=True)
    config = lstm_config()
    records.write_json(run_dir / records.CONFIG, config)
    rows = [lstm_probe(0), lstm_probe(10, null_at), epoch_row(1, 10, False)]
    rows += [lstm_probe(20), epoch_row(2, 20, False)]
    write_rows(run_dir, rows)
    if finished:
        write_result(run_dir, config, rows)
    return rows


def adding_config() -> dict[str, Any]:
    """A tanh RNN on the adding problem; on mnist where this tree does not list the adding data
    set yet (the data set is registered by issue 22's data part): the rows say regression."""
    settings = {"arch": "rnn", "activation": "tanh", "hidden": (8,), "epochs": 2}
    try:
        config = TrainConfig(**settings, dataset="adding", length=ADDING_STEPS)
    except UsageError:
        config = TrainConfig(**settings)
    return config.to_dict()


def adding_probe(step: int) -> dict[str, Any]:
    """A tanh RNN's probe on the adding problem: one layer, vanishing at 0.8 per step."""
    profile = [0.05 * 0.8 ** (ADDING_STEPS - t) for t in range(1, ADDING_STEPS + 1)]
    return {
        "kind": "probe",
        "step": step,
        "epoch": step // 10,
        "loss": 0.17 - step / 1000,
        "grad_norms": [1e-4, 1e-2],
        "vanishing_ratio": 1e-2,
        "time_signal_norms": [profile],
        "time_layers": ["rnn 1"],
        "gates": [{}],
        "gates_saturated": [{}],
        "recurrent_norms": [0.95],
    }


def write_adding_run(run_dir: Path) -> list[dict[str, Any]]:
    """A regression run: two epochs whose test loss is the squared error beside the baseline."""
    run_dir.mkdir(parents=True)
    config = adding_config()
    records.write_json(run_dir / records.CONFIG, config)
    rows = [adding_probe(0), adding_probe(10), epoch_row(1, 10, True)]
    rows += [adding_probe(20), epoch_row(2, 20, True)]
    write_rows(run_dir, rows)
    write_result(run_dir, config, rows)
    return rows
