"""Recurrent networks: an epoch of our trainer against a plain PyTorch loop over the same model,
and the cost of the probes through time.

Run: .venv/bin/python bench/bench_recurrent.py [--train-size 5000] [--repeats 2]
For each network (tanh RNN, LSTM, GRU on row MNIST; a tanh RNN on pixel MNIST), the same model,
the same data tensors and the same batches train for one epoch in this one process, so the
ratios hold on a shared, noisy machine. The targets: the trainer at >= 0.9x the plain loop's
speed, and the probes (timed inside the run) adding < 5 % at the default interval.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from vanishing.data import sequences
from vanishing.data.datasets import Dataset, load_dataset
from vanishing.settings import codec
from vanishing.settings.config import TrainConfig
from vanishing.training.loop import loss_function, make_model, train

NETWORKS = (
    {"arch": "rnn", "sequence": "rows"},
    {"arch": "lstm", "sequence": "rows"},
    {"arch": "gru", "sequence": "rows"},
    {"arch": "rnn", "sequence": "pixels"},
)


def plain_epoch(config: TrainConfig, dataset: Dataset) -> float:
    """Seconds for one epoch of the loop a user writes: the model, Adam, shuffled batches of
    the same tensors, `.item()` of the loss every step (as pytorch/examples do)."""
    device = torch.device(config.device)
    model = make_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    x = sequences.inputs(dataset, "train", config, device)
    y = sequences.targets(dataset, "train", config, device)
    loss_fn = loss_function(sequences.task(config.dataset))
    generator = torch.Generator().manual_seed(config.seed)
    start = time.perf_counter()
    order = torch.randperm(len(x), generator=generator)
    for begin in range(0, len(x), config.batch_size):
        index = order[begin : begin + config.batch_size]
        loss = loss_fn(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()
    return time.perf_counter() - start


def measure(config: TrainConfig, dataset: Dataset, repeats: int) -> dict[str, float]:
    """One network's figures, best of `repeats`, the two loops taking turns after a warm-up:
    the plain loop's epoch, ours (its optimisation steps: `train_seconds`, which leaves the
    probes out), and the probes' cost: seconds per probe over the seconds of `probe_every`
    steps, the share of training they add at that interval whatever the epoch's length."""
    plain_epoch(config, dataset)  # warm-up: allocations, lazy initialisation
    plain, ours, per_probe = math.inf, math.inf, math.inf
    for _ in range(repeats):
        plain = min(plain, plain_epoch(config, dataset))
        result = train(config, dataset=dataset)
        ours = min(ours, result.train_seconds)
        probes = -(-result.steps // config.probe_every)  # at step 0, probe_every, ...
        per_probe = min(per_probe, result.probe_seconds / probes)
    step = ours / result.steps
    return {
        "plain": plain,
        "ours": ours,
        "speed": plain / ours,
        "probe": per_probe,
        "overhead": 100 * per_probe / (config.probe_every * step),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=5000, help="examples per epoch")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each loop")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a sweep's one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dataset = load_dataset("mnist")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.device}, one layer "
        f"of 128, Adam, batch 64, one epoch of {args.train_size} MNIST images, best of "
        f"{args.repeats}"
    )
    print(
        f"{'network':<18} {'plain s':>8} {'ours s':>8} {'speed':>6} {'s/probe':>8} "
        f"{'probes every ' + str(TrainConfig.probe_every):>17}"
    )
    for network in NETWORKS:
        config = codec.config(
            {**network, "epochs": 1, "train_size": args.train_size, "device": args.device}
        )
        row = measure(config, dataset, args.repeats)
        name = f"{config.arch} {config.activation if config.arch == 'rnn' else ''}".strip()
        print(
            f"{name + ' ' + str(config.sequence):<18} {row['plain']:8.2f} {row['ours']:8.2f} "
            f"{row['speed']:5.2f}x {row['probe']:8.2f} {row['overhead']:16.1f}%"
        )


if __name__ == "__main__":
    main()
