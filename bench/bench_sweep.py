"""A 24-run sweep on tiny settings: the local backend at 1 and 2 workers, and Ray.

Run: .venv/bin/python bench/bench_sweep.py [--workers 1,2] [--no-ray]
Each backend runs the same grid into its own fresh directory; the times are wall-clock seconds
of `jobs.sweep.sweep` (the runs, the CSV files and the report). Ray runs on a real 2-CPU cluster
started in a network namespace of its own (needs root and iproute2), so that it only ever talks
over loopback; its start-up time is printed separately.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vanishing.data.datasets import default_cache_dir
from vanishing.jobs import sweep
from vanishing.settings import grid

GRID = grid.spec_from_dict(
    {
        "activations": ["sigmoid", "tanh", "relu"],
        "depths": [1, 2],
        "widths": [32],
        "seeds": [0, 1, 2, 3],
        "epochs": 1,
        "probe_every": 300,
        "device": "cpu",
    }
)  # 3 x 2 x 4 = 24 runs, about a second each


def time_local(workers: int, out: Path) -> float:
    start = time.perf_counter()
    outcome = sweep.sweep(GRID, out, workers=workers)
    seconds = time.perf_counter() - start
    assert outcome.ran == len(grid.expand(GRID)), outcome
    return seconds


RAY_DRIVER = """
import json, sys, time
from pathlib import Path
from vanishing.jobs import sweep
sys.path.insert(0, {bench!r})
from bench_sweep import GRID
start = time.perf_counter()
outcome = sweep.sweep(GRID, Path({out!r}), backend="ray", address="127.0.0.1:6379")
print(json.dumps({{"seconds": time.perf_counter() - start, "ran": outcome.ran}}))
"""


def time_ray(out: Path) -> tuple[float, float]:
    """(cluster start seconds, sweep seconds) on a 2-CPU Ray cluster in its own namespace."""
    ray_bin = str(Path(sys.executable).parent / "ray")
    name = f"vanishing-bench-{os.getpid()}"
    inside = ["ip", "netns", "exec", name]
    # Nothing of the user's Ray state: a fresh token shared by the cluster and the driver, and a
    # HOME and temporary directory of their own (as the suite's Ray test does). Short: Ray's
    # socket paths must stay under 108 bytes.
    temp = tempfile.mkdtemp(prefix="vray-")
    home = Path(temp) / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(
        VANISHING_CACHE=str(default_cache_dir()),  # the data set where it is, whatever HOME says
        HOME=str(home),
        RAY_TMPDIR=temp,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_USAGE_STATS_ENABLED="0",
    )
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run([*inside, "ip", "link", "set", "lo", "up"], check=True)
        start = time.perf_counter()
        subprocess.run([*inside, ray_bin, "start", "--head", "--num-cpus", "2", "--port", "6379",
                        "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir",
                        temp], check=True, env=env, capture_output=True)  # fmt: skip
        startup = time.perf_counter() - start
        driver = RAY_DRIVER.format(bench=str(Path(__file__).parent), out=str(out))
        done = subprocess.run([*inside, sys.executable, "-c", driver], env=env, check=True,
                              capture_output=True, text=True)  # fmt: skip
        return startup, json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    finally:
        # Kill this namespace's processes only: `ray stop` would kill every Ray on the machine.
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
        for pid in pids.stdout.split():
            subprocess.run(["kill", "-9", pid], capture_output=True)
        time.sleep(1)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="local worker counts to time")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray backend")
    args = parser.parse_args()
    runs = len(grid.expand(GRID))
    print(f"{runs} runs: {', '.join(GRID.activations)} x depth {GRID.depths} x width 32 x "
          f"{len(GRID.seeds)} seeds, 1 epoch of MNIST each; {os.cpu_count()} cores")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vanishing-bench-") as tmp:
        times = {}
        for workers in [int(w) for w in args.workers.split(",")]:
            times[workers] = time_local(workers, Path(tmp) / f"local{workers}")
            print(f"local, {workers} worker(s): {times[workers]:6.1f} s "
                  f"({runs / times[workers]:.2f} runs/s)")  # fmt: skip
        if 1 in times and 2 in times:
            print(f"speed-up from 1 to 2 workers: {times[1] / times[2]:.2f}x")
        if not args.no_ray:
            startup, seconds = time_ray(Path(tmp) / "ray")
            print(f"ray, 2 CPUs:           {seconds:6.1f} s ({runs / seconds:.2f} runs/s), "
                  f"cluster start {startup:.1f} s")  # fmt: skip
            if 2 in times:
                print(f"ray overhead against 2 local workers: {seconds / times[2] - 1:+.0%}")


if __name__ == "__main__":
    main()
