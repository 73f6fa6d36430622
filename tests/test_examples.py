"""The examples, run as a user runs them, on a slice of real MNIST: their records give the
verdicts their docstrings promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vanishing import reporting as report
from vanishing.frontends.cli import main
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
