"""One epoch of the reference configuration: our trainer against a reference-style DataLoader loop.

Run: .venv/bin/python bench/bench_epoch.py [--activation relu] [--repeats 2]
Everything is timed in this one process, so the ratios hold even on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from vanishing.data.datasets import load_dataset
from vanishing.model.mlp import build_model
from vanishing.settings.config import TrainConfig
from vanishing.training.loop import train


class PerSampleMNIST(TorchDataset):
    """torchvision's MNIST with ToTensor(), as the reference code used it, minus torchvision.

    Per sample: a PIL image from the uint8 array, then ToTensor (array -> float tensor / 255).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.images[index].numpy(), mode="L")  # torchvision's MNIST
        array = np.array(image, np.uint8, copy=True)  # ToTensor from here on
        tensor = torch.from_numpy(array).view(28, 28, 1).permute(2, 0, 1).contiguous()
        return tensor.float().div(255), int(self.labels[index])  # (1, 28, 28)


def reference_epoch(config: TrainConfig, dataset) -> float:
    """Seconds for one epoch of the reference code's loop: DataLoader, .item() every step.

    On a GPU (`config.device`) the model lives there and each batch is copied to it, as the
    reference code does with `.to(device)`.
    """
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    model = build_model(config.hidden, config.activation, seed=config.seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)  # its defaults, no fused
    loader = DataLoader(
        PerSampleMNIST(dataset.train_images, dataset.train_labels),
        batch_size=config.batch_size,
        shuffle=True,
    )
    start = time.perf_counter()
    running = 0.0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        logits = model(images.view(-1, 784))
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running += loss.item()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activation", default="relu")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for our trainer")
    args = parser.parse_args()
    dataset = load_dataset("mnist")
    config = TrainConfig(activation=args.activation, epochs=1, device="cpu")
    no_probes = dataclasses.replace(config, probe_every=10**9)  # only the step-0 probe

    def ours(cfg: TrainConfig) -> tuple[float, float]:
        """Best of N: (seconds per epoch with probes, seconds spent in the probes)."""
        best = (float("inf"), 0.0)
        for _ in range(args.repeats):
            result = train(cfg, dataset=dataset)
            best = min(best, (result.train_seconds + result.probe_seconds, result.probe_seconds))
        return best

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.activation}, "
          f"784-520-320-240-120-10, Adam, batch 64, one epoch of 60000")  # fmt: skip
    reference = reference_epoch(config, dataset)
    plain, _ = ours(no_probes)
    probed, probe_seconds = ours(config)
    print(f"reference DataLoader loop   {reference:7.2f} s/epoch")
    print(f"vanishing, probes off       {plain:7.2f} s/epoch   {reference / plain:5.1f}x faster")
    print(f"vanishing, probes every {config.probe_every}  {probed:7.2f} s/epoch   "
          f"{reference / probed:5.1f}x faster")  # fmt: skip
    # Timed inside the run (the probes' own seconds), so machine noise between runs cancels.
    print(
        f"probe overhead {100 * probe_seconds / (probed - probe_seconds):.1f} % "
        f"(probes timed in the run); between the two runs {100 * (probed - plain) / plain:+.1f} %"
    )


if __name__ == "__main__":
    main()
