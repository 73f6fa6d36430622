"""One writer per watched run directory, with real processes: a second process watching into the
same `out=` (as every rank of a DistributedDataParallel job would) is refused with one line and
the first's records stay whole; two processes without `out=` get a directory each.

Each process waits on its stdin between stages, so the order is set by the test, never by sleeps.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import ENV
from vanishing import records
from vanishing.frontends.cli import main
from vanishing.measure.watch.rows import ADVICE
from vanishing.reporting import loading

# A user's script: a tiny model trained for two epochs of three steps, watched every step. It
# says "ready" once imported, watches at the first line on stdin, prints the run directory (its
# lock is held from then on) and trains at the second.
SCRIPT = """
import sys
import torch
from torch.nn import functional as F
from vanishing.measure.watch import watch

out = sys.argv[1] if len(sys.argv) > 1 else None
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
print("ready", flush=True)
sys.stdin.readline()
with watch(model, optimizer, every=1, out=out) as w:
    print(w.run_dir, flush=True)
    sys.stdin.readline()
    for epoch in (1, 2):
        for _ in range(3):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        w.log(epoch=epoch, train_loss=loss)
print("done", flush=True)
"""


def start(*args: str, cwd=None) -> tuple[subprocess.Popen, subprocess.Popen]:
    """Two processes of SCRIPT, started together (their imports overlap), both ready."""
    processes = tuple(
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, *args],
            env=ENV,
            cwd=cwd,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    )
    for process in processes:
        assert process.stdout.readline() == "ready\n"
    return processes


def say(process: subprocess.Popen, line: str = "go") -> str:
    """Send the process a line; its next line of output (EOF: it ended, its stderr says why)."""
    process.stdin.write(line + "\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate("go\n", timeout=60)
    return process.returncode, stdout, stderr


def test_a_second_process_watching_into_one_directory_is_refused_and_no_row_is_torn(tmp_path):
    out = tmp_path / "run"
    first, second = start(str(out))
    assert say(first) == str(out)  # the first holds the directory now
    code, stdout, stderr = finish(second)  # it watches at once, into the same directory
    assert code == 1 and stdout == ""
    assert stderr.strip().splitlines()[-1] == (
        f"vanishing.errors.UsageError: watch: {out} is being written by another process "
        f"(pid {first.pid}); {ADVICE}"
    )
    code, stdout, stderr = finish(first)
    assert code == 0 and stdout == "done\n", stderr
    lines = (out / records.METRICS).read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line whole
    assert [row["step"] for row in rows if row["kind"] == "probe"] == list(range(6))
    assert [row["epoch"] for row in rows if row["kind"] == "epoch"] == [1, 2]
    assert records.read_json(out / records.RESULT)["steps"] == 6
    assert main(["report", str(out)]) == 0
    run = loading.read_run(out)
    assert not isinstance(run, str) and run.metrics == rows  # the report read every row
    assert "### Sequential (Tanh)" in (out / "report.md").read_text()


def test_two_processes_without_out_get_a_directory_each(tmp_path):
    first, second = start(cwd=tmp_path)
    for process in (first, second):  # both imported and waiting: they pick names at once
        process.stdin.write("go\n")
        process.stdin.flush()
    dirs = sorted(process.stdout.readline().strip() for process in (first, second))
    names = [re.fullmatch(r"runs/watch/(sequential-\d{8}-\d{6})(-2)?", d) for d in dirs]
    assert all(names) and dirs[0] != dirs[1], dirs
    if names[0][1] == names[1][1]:  # both chose in one second
        assert dirs[1] == dirs[0] + "-2"  # the second to create the name took the next
    for process in (first, second):
        code, stdout, stderr = finish(process)
        assert code == 0 and stdout == "done\n", stderr
    for run_dir in dirs:
        rows = records.read_metrics(tmp_path / run_dir)
        assert [row["step"] for row in rows if row["kind"] == "probe"] == list(range(6))
        assert records.is_complete(tmp_path / run_dir)
