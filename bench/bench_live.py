"""The live page's performance targets, measured in one run against the real `vanishing live`.

Run: .venv/bin/python bench/bench_live.py [--epochs-fraction 1] [--rounds 2]
- training speed: one run trained through the page's API (`vanishing live` in a process of its
  own) while a client watches its event stream, against the same run by `vanishing train`,
  alternating, best of `--rounds` each; compared by `train_seconds` (the records' optimisation
  time) and by wall time;
- probe-to-client latency: for each row of that run, the time from its line appearing in
  metrics.jsonl (a thread polls the file every 2 ms) to the event reaching the client;
- the list's response time while 4 runs train (20 requests);
- the first load's weight: the page, every script and style it names, and /api/settings.
Real MNIST (cached); the reference MLP, relu, batch 64. The processes here are the tool's own
commands (`-m vanishing`), with fixed arguments.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from vanishing.data.datasets import load_dataset
from vanishing.records import METRICS, read_json
from vanishing.settings.config import TrainConfig


class Server:
    """`vanishing live --no-browser --port 0` in a process of its own, as a user starts it."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vanishing", "live", "--no-browser", "--port", "0", "--out",
             str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        url = self.process.stdout.readline().strip()  # the first line: the URL with its token
        base, token = url.split("/?token=")
        self.client = httpx.Client(base_url=base, headers={"X-Token": token}, timeout=60)

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.client.close()


def form(config: TrainConfig) -> dict[str, str]:
    """A config as the page's form sends it."""
    return {
        "activation": config.activation,
        "hidden": ",".join(map(str, config.hidden)),
        "epochs": str(config.epochs),
        "seed": str(config.seed),
        "device": config.device,
    }


# When each line of a metrics.jsonl appeared: polled every 2 ms by a process of its own (a thread
# here would take the GIL from the training it measures); CLOCK_MONOTONIC is system-wide.
CLOCK = """
import sys, time
from pathlib import Path
path, seen = Path(sys.argv[1]), 0
while True:
    try:
        lines = path.read_bytes().count(b"\\n")
    except FileNotFoundError:
        lines = 0
    now = time.monotonic()
    for _ in range(lines - seen):
        print(now, flush=True)
    seen = max(seen, lines)
    time.sleep(0.002)
"""


def live_run(server: Server, config: TrainConfig) -> tuple[dict, list[float], float]:
    """Train one run through the API while a client reads its events: its result, each row's
    latency (seconds) and the wall time."""
    start = time.perf_counter()
    answer = server.client.post("/api/runs", json={"runs": [form(config)], "resume": False})
    answer.raise_for_status()
    (run,) = answer.json()["runs"]
    run_dir = server.out / run["run"].split("/", 1)[1]
    clock = subprocess.Popen(
        [sys.executable, "-c", CLOCK, str(run_dir / METRICS)], stdout=subprocess.PIPE, text=True
    )
    received = []
    with server.client.stream("GET", "/api/events", params={"runs": run["run"]}) as events:
        kind = ""
        for line in events.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "row":
                received.append(time.monotonic())
            elif kind == "end":
                break
    wall = time.perf_counter() - start
    time.sleep(0.05)  # the clock's last poll
    clock.terminate()
    appeared = [float(t) for t in clock.communicate()[0].split()]
    latencies = [r - a for r, a in zip(received, appeared, strict=False)]
    return read_json(run_dir / "result.json"), latencies, wall


def cli_run(config: TrainConfig, out: Path) -> tuple[dict, float]:
    """The same run through `vanishing train`, in a process of its own."""
    start = time.perf_counter()
    run_dir = out / f"cli-{config.seed}"
    subprocess.run(
        [sys.executable, "-m", "vanishing", "train", "--epochs", str(config.epochs), "--seed",
         str(config.seed), "--device", config.device, "--out", str(run_dir)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    (result,) = run_dir.glob("*/result.json")
    return read_json(result), time.perf_counter() - start


def page_weight(server: Server) -> int:
    """Bytes of the first load: the page, the scripts and styles it names and the modules they
    import (each once), the settings."""
    page = server.client.get("/").content
    todo = [a.decode() for a in re.findall(rb'(?:src|href)="(/static/[^"]+)"', page)]
    sizes = [len(page), len(server.client.get("/api/settings").content)]
    seen: set[str] = set()
    while todo:
        asset = todo.pop()
        if asset in seen:
            continue
        seen.add(asset)
        body = server.client.get(asset).content
        sizes.append(len(body))
        if asset.endswith(".js"):  # an ES module's own imports: `from "./panel.js"`
            folder = asset.rsplit("/", 1)[0]
            imported = re.findall(rb'from "\./([^"]+)"', body)
            todo += [f"{folder}/{name.decode()}" for name in imported]
    return sum(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each path (best kept)")
    args = parser.parse_args()
    load_dataset("mnist")  # fetched and verified once, before anything is timed
    config = TrainConfig(epochs=1, device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        server = Server(out / "live")
        try:
            weight = page_weight(server)
            cli, live, lat = [], [], []
            for round_ in range(args.rounds):
                seed_config = TrainConfig(epochs=1, device="cpu", seed=round_)
                result, wall = cli_run(seed_config, out)
                cli.append((result["train_seconds"], wall))
                result, latencies, wall = live_run(server, seed_config)
                live.append((result["train_seconds"], wall))
                lat += latencies
            # Four runs training, then the list, 20 times.
            four = [form(TrainConfig(epochs=1, device="cpu", seed=10 + i)) for i in range(4)]
            server.client.post("/api/runs", json={"runs": four, "resume": False}).raise_for_status()
            time.sleep(3)  # all four under way
            listing = []
            for _ in range(20):
                start = time.perf_counter()
                server.client.get("/api/list").raise_for_status()
                listing.append(time.perf_counter() - start)
                time.sleep(0.1)
        finally:
            server.close()
    best_cli, best_live = min(cli), min(live)
    print(
        f"{config.hidden}, {config.activation}, 1 epoch of MNIST on the CPU, {args.rounds} rounds"
    )
    print(f"training, vanishing train: {best_cli[0]:.2f} s optimisation, {best_cli[1]:.2f} s wall")
    print(
        f"training, through the page's API, watched: {best_live[0]:.2f} s optimisation, "
        f"{best_live[1]:.2f} s wall"
    )
    print(
        f"live / train speed: {best_cli[0] / best_live[0]:.3f} (optimisation), "
        f"{best_cli[1] / best_live[1]:.3f} (wall)"
    )
    print(
        f"row-to-client latency over {len(lat)} rows: median {1000 * statistics.median(lat):.0f} "
        f"ms, max {1000 * max(lat):.0f} ms"
    )
    print(
        f"/api/list while 4 runs train: median {1000 * statistics.median(listing):.0f} ms, "
        f"max {1000 * max(listing):.0f} ms"
    )
    print(f"first load: {weight:,} bytes")
    print(json.dumps({"cli": cli, "live": live}))


if __name__ == "__main__":
    main()
