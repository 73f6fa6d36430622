"""Records the export tests read: the settings of a tiny trained run, and a watch run's records
written by hand as vanishing.watch writes them (every number a function of its step)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vanishing import records
from vanishing.settings.config import TrainConfig

SMALL = TrainConfig(
    hidden=(32, 16), epochs=2, batch_size=32, probe_every=4, probe_size=64, device="cpu"
)
WATCH_LAYERS = ["conv1", "conv2", "fc"]
WATCH_LABELS = ["conv1", "conv2"]


def watch_values(step: int) -> list[np.ndarray]:
    """The activations a watched model's two layers had at `step` (made up, fixed)."""
    rng = np.random.default_rng(step)
    relu = np.maximum(rng.normal(0.2, 1.0, 300), 0)  # many exact zeros
    return [relu, np.zeros(100) if step else rng.normal(0, 2, 100)]  # layer 2 dies


def write_watch_run(run_dir: Path) -> None:
    """A watch run's records as vanishing.watch writes them (its config has no TrainConfig)."""
    run_dir.mkdir(parents=True)
    config = {
        "source": "watch",
        "model": "Net",
        "description": "Net(\n  (conv1): Conv2d(1, 16, kernel_size=(3, 3))\n)",
        "parameters": 1234,
        "layers": WATCH_LAYERS,
        "activation_layers": ["act1", "act2"],
        "activation_kinds": ["relu", "relu"],
        "layer_labels": WATCH_LABELS,
        "activation": "relu",
        "hidden": [16, 32],
        "every": 100,
        "probe_size": None,
        "optimizer": None,
        "lr": None,
        "seed": None,
        "device": "cpu",
        "dataset": "mnist",
    }
    rows = []
    for step in (0, 100, 200):
        values = watch_values(step)
        histograms = []
        for v in values:
            counts, edges = np.histogram(
                v, bins=32, range=(v.min(), v.max()) if np.ptp(v) else None
            )
            histograms.append({"edges": edges.tolist(), "counts": counts.tolist()})
        grads = [1e-5 * (step + 1), 1e-3, 0.5]
        rows.append(
            {
                "kind": "probe",
                "step": step,
                "epoch": None,
                "loss": None if step == 200 else 2.0 - step / 1000,  # null: non-finite
                "grad_norms": grads,
                "vanishing_ratio": grads[0] / grads[-1],
                "signal_norms": [0.01, 0.1],
                "activation_mean": [float(v.mean()) for v in values],
                "activation_std": [float(v.std(ddof=1)) for v in values],
                "activation_histogram": histograms,
                "saturated_fraction": [0.0, 0.0],
                "dead_fraction": [0.25, 1.0 if step else 0.0],
                "weight_norms": [3.0, 4.0, 5.0],
            }
        )
    rows.append({"kind": "epoch", "epoch": 1, "step": 200, "train_loss": 1.5, "lr": 0.01})
    records.write_json(run_dir / records.CONFIG, config)
    (run_dir / records.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
