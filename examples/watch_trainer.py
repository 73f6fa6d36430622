"""A tiny BERT (or a deep sigmoid stack) trained by the Hugging Face Trainer, watched by
`VanishingCallback`: one line in the Trainer's callbacks.

The model, the data set and the Trainer are what anyone writes; the only addition is
`callbacks=[VanishingCallback(...)]`. The callback finds the model and the optimizer the Trainer
steps, writes the run's records (`vanishing report OUT` reads them) and sends the headline
numbers through the Trainer's own log: they are in `trainer.state.log_history` and, with
`report_to=["tensorboard"]`, in its event files (LOGS/runs/...) under
"train/vanishing/grad_norm/LAYER", ...

    python examples/watch_trainer.py --model sigmoid --out runs/watch/trainer-sigmoid
    vanishing report runs/watch/trainer-sigmoid

Nothing is downloaded: the BERT is built from a BertConfig (2 layers, hidden size 32, random
init) and the data are made up, sequences of 16 tokens whose label is whether token 7 occurs.
What the report says (the defaults: 2,000 sequences, one epoch):
- the BERT, with its residual connections and layer norms: "Healthy gradient: the
  back-propagated signal keeps its size from bert.encoder.layer.1.intermediate.dense to
  bert.encoder.layer.0.intermediate.dense (×0.969, 0.97 per layer)." (one epoch is too short
  for it to learn the task: 52.8 %);
- `--model sigmoid`, 12 Linear layers with sigmoid after mean-pooled token embeddings:
  "Vanishing gradient: the back-propagated signal shrinks 1.6e+09-fold from layers.11 to
  layers.0 (0.15 per layer).", 53.6 % (chance is 50 %).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched: the model is built here
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    EvalPrediction,
    Trainer,
    TrainingArguments,
)

from vanishing.integrations.transformers import VanishingCallback  # noqa: E402

VOCAB, LENGTH, MARKER = 64, 16, 7


class Marked(Dataset):
    """`samples` sequences of LENGTH random tokens; label 1 where MARKER occurs (about half)."""

    def __init__(self, samples: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        tokens = torch.randint(8, VOCAB, (samples, LENGTH), generator=generator)  # no marker
        marked = torch.rand(samples, generator=generator) < 0.5
        where = torch.randint(LENGTH, (samples,), generator=generator)
        tokens[marked, where[marked]] = MARKER
        self.tokens, self.labels = tokens, marked.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input_ids": self.tokens[i], "labels": self.labels[i]}


class DeepSigmoid(nn.Module):
    """Mean-pooled token embeddings, `depth` Linear layers with sigmoid, a classifier: the
    Trainer takes any module whose forward returns its loss."""

    def __init__(self, depth: int = 12, width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.acts = nn.ModuleList(nn.Sigmoid() for _ in range(depth))
        self.head = nn.Linear(width, 2)

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        x = self.embed(input_ids).mean(1)  # (batch, width)
        for layer, act in zip(self.layers, self.acts, strict=True):
            x = act(layer(x))
        logits = self.head(x)  # (batch, 2)
        return {
            "logits": logits,
            **({"loss": F.cross_entropy(logits, labels)} if labels is not None else {}),
        }


def tiny_bert() -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=LENGTH,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def accuracy(prediction: EvalPrediction) -> dict[str, float]:
    """The evaluation's accuracy as a fraction (what the report reads as test accuracy)."""
    logits, labels = prediction.predictions, prediction.label_ids
    return {"accuracy": float((logits.argmax(-1) == labels).mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["bert", "sigmoid"], default="bert")
    parser.add_argument("--samples", type=int, default=2000, help="training sequences")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after N steps")
    parser.add_argument("--every", type=int, default=10, help="measure every N steps")
    parser.add_argument("--out", type=Path, default=None, help="run directory")
    parser.add_argument("--logs", type=Path, default=None, help="the Trainer's output_dir")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = tiny_bert() if args.model == "bert" else DeepSigmoid()
    out = args.out or Path("runs/watch") / f"trainer-{args.model}"
    logs = args.logs or Path(tempfile.mkdtemp(prefix="trainer-logs-"))
    training = TrainingArguments(
        output_dir=str(logs),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=256,
        learning_rate=1e-3,
        eval_strategy="epoch",
        logging_steps=10,
        save_strategy="no",
        report_to=["tensorboard"],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=Marked(args.samples),
        eval_dataset=Marked(500, seed=1),
        compute_metrics=accuracy,
        callbacks=[VanishingCallback(every=args.every, out=out)],  # the one added line
    )
    trainer.train()
    print(f"records in {out}; verdict: vanishing report {out}")
    print(f"the Trainer's event files: {logs / 'runs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
