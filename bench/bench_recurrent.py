"""Recurrent networks: an epoch of our trainer against a plain PyTorch loop over the same model,
and the cost of the probes through time.

Run: .venv/bin/python bench/bench_recurrent.py [--train-size 5000] [--repeats 2]
For each network (tanh RNN, LSTM, GRU on row MNIST; a tanh RNN on pixel MNIST), the same model,
the same data tensors and the same batches train for one epoch in this one process, so the
ratios hold on a shared, noisy machine. The issue's targets: the trainer at >= 0.9x the plain
loop's speed, and the probes (every `probe_every` steps, timed inside the run) < 5 %.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def ours(config: TrainConfig, dataset: Dataset, repeats: int) -> tuple[float, float]:
    """Best of `repeats`: (seconds of the epoch's steps and probes, seconds in the probes)."""
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        result = train(config, dataset=dataset)
        best = min(best, (result.train_seconds + result.probe_seconds, result.probe_seconds))
    return best


def measure(config: TrainConfig, dataset: Dataset, repeats: int) -> dict[str, float]:
    """One network's figures: the plain loop's epoch, ours without probes (only step 0's,
    not counted) and with them, and the probes' share."""
    plain = min(plain_epoch(config, dataset) for _ in range(repeats))
    quiet, _ = ours(dataclasses.replace(config, probe_every=10**9), dataset, repeats)
    probed, probe_seconds = ours(config, dataset, repeats)
    return {
        "plain": plain,
        "ours": quiet,
        "speed": plain / quiet,
        "probed": probed,
        "overhead": 100 * probe_seconds / (probed - probe_seconds),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=5000, help="examples per epoch")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each loop")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    dataset = load_dataset("mnist")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}, one layer "
        f"of 128, Adam, batch 64, one epoch of {args.train_size} MNIST images, best of "
        f"{args.repeats}"
    )
    print(
        f"{'network':<18} {'plain s':>8} {'ours s':>8} {'speed':>6} {'probed s':>9} {'probes':>7}"
    )
    for network in NETWORKS:
        config = codec.config(
            {**network, "epochs": 1, "train_size": args.train_size, "device": args.device}
        )
        row = measure(config, dataset, args.repeats)
        name = f"{config.arch} {config.activation if config.arch == 'rnn' else ''}".strip()
        print(
            f"{name + ' ' + str(config.sequence):<18} {row['plain']:8.2f} {row['ours']:8.2f} "
            f"{row['speed']:5.2f}x {row['probed']:9.2f} {row['overhead']:6.1f}%"
        )


if __name__ == "__main__":
    main()
