"""Data sets read as sequences: MNIST and Fashion-MNIST by rows, by pixels or by permuted pixels,
and the adding problem (Hochreiter and Schmidhuber 1997), generated."""

from __future__ import annotations

SEQUENCES = ("rows", "pixels", "permuted")  # how a recurrent network reads an image
ADDING = "adding"  # the generated data set's name
DEFAULT_LENGTH = 100  # the adding problem's T when none is given

# A first cut for the loop (the data helper's module replaces it): images only.
import torch  # noqa: E402


def task(name: str) -> str:
    """ "regression" for the adding problem, else "classification"."""
    return "regression" if name == ADDING else "classification"


def outputs(name: str) -> int:
    return 1 if name == ADDING else 10


def input_size(config) -> int:
    return {"rows": 28, "pixels": 1, "permuted": 1, None: 784}[config.sequence]


def inputs(dataset, split: str, config, device: torch.device) -> torch.Tensor:
    images = getattr(dataset, f"{split}_images")
    size = config.train_size if split == "train" else config.test_size
    images = images[:size]
    x = images.to(device).reshape(len(images), -1).float().div_(255)
    if config.sequence == "rows":
        return x.view(len(x), 28, 28)
    if config.sequence in ("pixels", "permuted"):
        return x[:, :, None]
    return x


def targets(dataset, split: str, config, device: torch.device) -> torch.Tensor:
    size = config.train_size if split == "train" else config.test_size
    return getattr(dataset, f"{split}_labels")[:size].to(device)


def baseline_loss(targets: torch.Tensor) -> float:
    return float(((targets - 1) ** 2).mean())
