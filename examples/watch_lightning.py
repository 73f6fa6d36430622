"""A deep MLP trained by PyTorch Lightning, watched by `VanishingCallback`: one line in the
Trainer's callbacks.

The LightningModule and the Trainer are what anyone writes; the only addition is
`callbacks=[VanishingCallback(...)]`. The callback finds the module and its optimizer, writes the
run's records (`vanishing report OUT` reads them) and sends the headline numbers
("vanishing/grad_norm/LAYER", ...) to the Trainer's own logger: here a CSVLogger, so they are
columns of LOGS/lightning/version_0/metrics.csv at the step of the module's own train_loss_step
(the loss of the same optimizer step), beside train_loss_epoch, val_loss and val_acc.

    python examples/watch_lightning.py --activation sigmoid --out runs/watch/lightning-sigmoid
    vanishing report runs/watch/lightning-sigmoid

With --devices 2 Lightning trains it data-parallel (its ddp strategy, two CPU processes) and the
callback, unchanged, writes one run from rank 0 with the gradients all-reduced (`vanishing.watch`
under torch.distributed): the same verdict.

The data are made up, so nothing is downloaded: 10 classes of 32 features, each a Gaussian
cloud around a random centre. What the report says (the defaults: 2,000 points, two epochs):
- a stack of 12 sigmoid layers at PyTorch's default init: "Vanishing gradient: the
  back-propagated signal shrinks 2.5e+09-fold from layers.11 to layers.0 (0.14 per layer).",
  and it does not learn (10.4 % validation accuracy: chance);
- --activation relu, with He init: "Healthy gradient: the back-propagated signal keeps its size
  from layers.11 to layers.0 (×0.628, 0.96 per layer).", 95.4 %.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from vanishing.integrations.lightning import VanishingCallback

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}


def clouds(samples: int, features: int = 32, classes: int = 10, seed: int = 0) -> TensorDataset:
    """`samples` points, (samples, features), each a unit Gaussian around its class's centre."""
    generator = torch.Generator().manual_seed(seed)
    centres = 2 * torch.randn(classes, features, generator=torch.Generator().manual_seed(1234))
    labels = torch.randint(classes, (samples,), generator=generator)
    return TensorDataset(
        centres[labels] + torch.randn(samples, features, generator=generator), labels
    )


class DeepNet(pl.LightningModule):
    """`depth` Linear layers of `width` units, each followed by the activation, then a
    classifier."""

    def __init__(self, activation: str, depth: int = 12, width: int = 32, lr: float = 1e-3) -> None:
        super().__init__()
        self.lr = lr
        self.layers = nn.ModuleList(nn.Linear(32 if i == 0 else width, width) for i in range(depth))
        self.acts = nn.ModuleList(ACTIVATIONS[activation]() for _ in range(depth))
        self.head = nn.Linear(width, 10)
        if activation == "relu":  # He init: keeps a ReLU net's scale from layer to layer
            for layer in self.layers:
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:  # (batch, 32) -> (batch, 10)
        for layer, act in zip(self.layers, self.acts, strict=True):
            x = act(layer(x))
        return self.head(x)

    def training_step(self, batch: tuple[Tensor, Tensor], index: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)  # train_loss_step, _epoch
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], index: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())  # a fraction

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activation", choices=sorted(ACTIVATIONS), default="sigmoid")
    parser.add_argument("--depth", type=int, default=12, help="hidden layers (default 12)")
    parser.add_argument("--samples", type=int, default=2000, help="training points")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after N steps")
    parser.add_argument("--every", type=int, default=10, help="measure every N steps")
    parser.add_argument("--out", type=Path, default=None, help="run directory")
    parser.add_argument("--logs", type=Path, default=None, help="the CSVLogger's directory")
    parser.add_argument(
        "--devices", type=int, default=1, help="processes (more than 1: Lightning's ddp, on CPU)"
    )
    args = parser.parse_args(argv)

    pl.seed_everything(0, verbose=False)
    train = DataLoader(clouds(args.samples), batch_size=64, shuffle=True)
    val = DataLoader(clouds(500, seed=1), batch_size=500)
    out = args.out or Path("runs/watch") / f"lightning-{args.activation}-{args.depth}"
    logs = args.logs or Path(tempfile.mkdtemp(prefix="lightning-logs-"))
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        max_steps=args.max_steps,
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",  # ddp: one run, written by rank 0
        logger=CSVLogger(logs, name="lightning"),
        callbacks=[VanishingCallback(every=args.every, out=out)],  # the one added line
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,  # each step's train_loss, beside that step's vanishing columns
    )
    trainer.fit(DeepNet(args.activation, args.depth), train, val)
    print(f"records in {out}; verdict: vanishing report {out}")
    print(f"the logger's metrics: {trainer.logger.log_dir}/metrics.csv")  # type: ignore[union-attr]
    return 0


if __name__ == "__main__":
    sys.exit(main())
