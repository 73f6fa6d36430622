"""Data sets as a run's network reads them: the image views against the images, the adding
problem's statistics, the first N examples (--train-size, --test-size), and the one-line refusals
of the recurrent settings."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from vanishing import records
from vanishing.data import adding, sequences
from vanishing.data import datasets as data
from vanishing.errors import UsageError
from vanishing.frontends.cli import main
from vanishing.settings.config import TrainConfig
from vanishing.training.loop import train

CPU = torch.device("cpu")
RNN = {"activation": "tanh", "hidden": (8,)}  # TrainConfig itself applies no arch defaults
SMALL = ["--batch-size", "32", "--probe-every", "3", "--probe-size", "32", "--epochs", "1"]


def config(**settings) -> TrainConfig:
    return TrainConfig(**{"device": "cpu", **settings})


def pixels_of(dataset: data.Dataset, split: str = "train") -> torch.Tensor:
    """The images as float pixels (N, 28, 28), computed here the plain way."""
    images = dataset.train_images if split == "train" else dataset.test_images
    return images.to(torch.float32) / 255


@pytest.mark.parametrize("split", ["train", "test"])
def test_the_views_are_the_images_in_order(tiny_data, split):
    images = pixels_of(tiny_data, split)  # (N, 28, 28)
    n = len(images)
    mlp = sequences.inputs(tiny_data, split, config(), CPU)
    assert mlp.shape == (n, 784) and mlp.dtype == torch.float32
    assert torch.equal(mlp, images.reshape(n, 784))
    assert float(mlp.min()) >= 0 and float(mlp.max()) <= 1 and float(mlp.max()) > 0.5

    rows = sequences.inputs(tiny_data, split, config(arch="rnn", **RNN), CPU)
    assert rows.shape == (n, 28, 28)
    for r in (0, 13, 27):  # step r is image row r
        assert torch.equal(rows[:, r], images[:, r])

    pixels = sequences.inputs(tiny_data, split, config(arch="rnn", sequence="pixels", **RNN), CPU)
    assert pixels.shape == (n, 784, 1)
    for t in (0, 29, 783):  # step t is pixel t, row by row: row t // 28, column t % 28
        assert torch.equal(pixels[:, t, 0], images[:, t // 28, t % 28])

    permuted = config(arch="gru", sequence="permuted", activation="tanh", hidden=(8,))
    shuffled = sequences.inputs(tiny_data, split, permuted, CPU)
    order = sequences.permutation()
    assert shuffled.shape == (n, 784, 1)
    assert torch.equal(shuffled[:, :, 0], pixels[:, order, 0])
    assert torch.equal(order.sort().values, torch.arange(784))  # a permutation...
    assert (order != torch.arange(784)).float().mean() > 0.99  # ...that moves almost every pixel
    labels = tiny_data.train_labels if split == "train" else tiny_data.test_labels
    for reading in (config(), permuted):
        assert torch.equal(sequences.targets(tiny_data, split, reading, CPU), labels)


def test_the_permutation_is_one_fixed_order_for_every_run():
    """It depends on no setting and no global state: one order for every run and seed."""
    first = sequences.permutation()
    torch.manual_seed(123)  # the global generator plays no part
    assert torch.equal(sequences.permutation(), first)
    # Pinned: permuted-MNIST records mean this order (a change would silently change the task).
    assert first[:8].tolist() == [146, 306, 594, 633, 589, 63, 723, 574]


def test_steps_and_features_per_step():
    shapes = {
        config(): (1, 784),
        config(arch="rnn", **RNN): (28, 28),
        config(arch="lstm", sequence="pixels", activation="tanh", hidden=(8,)): (784, 1),
        config(arch="gru", sequence="permuted", activation="tanh", hidden=(8,)): (784, 1),
        config(arch="rnn", dataset="adding", **RNN): (adding.DEFAULT_LENGTH, 2),
        config(arch="rnn", dataset="adding", length=7, **RNN): (7, 2),
    }
    for reading, shape in shapes.items():
        assert (sequences.steps(reading), sequences.input_size(reading)) == shape
    assert [sequences.task(name) for name in data.DATASETS] == [
        "classification",
        "classification",
        "regression",
    ]
    assert sequences.task("a data set of another version") == "classification"
    assert [sequences.outputs(name) for name in data.DATASETS] == [10, 10, 1]


def test_the_adding_problem_has_its_statistics():
    """Two markers, one per half; the target their numbers' sum: mean 1, and the squared error
    of answering 1 is the variance of a sum of two uniform numbers, 1/6."""
    dataset = data.load_dataset("adding")
    reading = config(arch="lstm", dataset="adding", activation="tanh", hidden=(8,))
    x = sequences.inputs(dataset, "test", reading, CPU)
    y = sequences.targets(dataset, "test", reading, CPU)
    n, t = 10000, 100
    assert x.shape == (n, t, 2) and y.shape == (n,) and x.dtype == y.dtype == torch.float32
    numbers, markers = x[..., 0], x[..., 1]
    assert float(numbers.min()) >= 0 and float(numbers.max()) < 1
    assert set(markers.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(markers[:, : t // 2].sum(1), torch.ones(n))  # one in the first half
    assert torch.equal(markers[:, t // 2 :].sum(1), torch.ones(n))  # one in the second
    assert torch.allclose((numbers * markers).sum(1), y, atol=1e-6)
    # Within 4 standard errors: the sum's variance is 1/6, (y - 1)^2's is 1/15 - 1/36 = 7/180.
    assert abs(float(y.mean()) - 1) < 4 * math.sqrt(1 / 6 / n)
    baseline = sequences.baseline_loss(y)
    assert abs(baseline - 1 / 6) < 4 * math.sqrt(7 / 180 / n)
    assert baseline == pytest.approx(float(((y.double() - 1) ** 2).mean()), rel=1e-12)
    # The markers' positions spread over each half.
    first = markers[:, : t // 2].argmax(1)
    assert first.min() == 0 and first.max() == t // 2 - 1


@pytest.mark.parametrize("length", [2, 3, 51])
def test_short_and_odd_lengths_have_a_marker_in_each_half(length):
    x, y = adding.generate("train", length, 500)
    half = length // 2
    assert torch.equal(x[:, :half, 1].sum(1), torch.ones(500))
    assert torch.equal(x[:, half:, 1].sum(1), torch.ones(500))
    assert torch.allclose((x[..., 0] * x[..., 1]).sum(1), y, atol=1e-6)


def test_the_adding_problem_is_drawn_the_same_and_its_first_n_are_a_draw_of_n():
    a, b = data.load_dataset("adding"), data.load_dataset("adding")
    assert a.generated is not None and not a.generated.drawn  # nothing drawn until asked
    big = config(arch="rnn", dataset="adding", length=30, train_size=2500, **RNN)
    small = dataclasses.replace(big, train_size=1200)
    x_small = sequences.inputs(b, "train", small, CPU)
    assert len(b.generated.drawn[("train", 30)][0]) == 1200  # only what was asked for
    x_big = sequences.inputs(a, "train", big, CPU)
    assert torch.equal(x_big[:1200], x_small)
    assert torch.equal(sequences.targets(a, "train", big, CPU)[:1200], adding.generate(
        "train", 30, 1200
    )[1])  # fmt: skip
    # Asked for fewer after more: the kept draw's prefix, not a new draw.
    assert torch.equal(sequences.inputs(a, "train", small, CPU), x_small)
    # Train and test, and two lengths, are different draws.
    test = sequences.inputs(a, "test", big, CPU)
    assert len(test) == 10000 and not torch.equal(test[:1200], x_small)
    other = sequences.inputs(a, "train", dataclasses.replace(small, length=31), CPU)
    assert not torch.equal(other[:, :30, 0], x_small[..., 0])
    # Pinned: the same numbers on every machine and version (the records mean this draw).
    assert round(float(adding.generate("train", 100, 1)[1][0]), 6) == 1.107673


def test_generated_data_needs_no_files_or_network(capsys):
    dataset = data.load_dataset("adding", data_dir="/nowhere", verify=True, remote=False)
    assert dataset.name == "adding" and dataset.size("train") == 60000
    assert dataset.size("test") == 10000
    assert data.describe(dataset)["train"] == 60000
    for command in ("info", "fetch", "verify"):
        assert main(["data", command, "--dataset", "adding"]) == 0
        out = capsys.readouterr().out
        assert "adding" in out and "generated" in out
    assert main(["data", "info", "--dataset", "adding"]) == 0
    info = capsys.readouterr().out
    assert "60000 sequences of T steps x 2 channels" in info and "0.167" in info


def test_train_size_takes_the_first_examples_for_any_model(tiny_data):
    reading = config(train_size=50, test_size=20)
    x = sequences.inputs(tiny_data, "train", reading, CPU)
    assert torch.equal(x, sequences.inputs(tiny_data, "train", config(), CPU)[:50])
    assert len(sequences.targets(tiny_data, "test", reading, CPU)) == 20
    result = train(config(hidden=(8,), epochs=2, batch_size=16, train_size=50), dataset=tiny_data)
    assert result.steps == 2 * math.ceil(50 / 16)


def test_train_size_holds_in_a_group_of_models(tiny_data, tmp_path):
    from vanishing.jobs import compare as compare_job

    base = config(hidden=(8,), epochs=1, batch_size=16, train_size=40, probe_every=1)
    runs = [dataclasses.replace(base, seed=s) for s in (0, 1)]
    outcome = compare_job.compare(runs, tmp_path, data=lambda name: tiny_data, workers=1)
    results = outcome.results()
    assert len(results) == 2 and all(r.steps == math.ceil(40 / 16) for r in results)
    probes = [row for row in records.read_metrics(outcome.run_dirs[0]) if row["kind"] == "probe"]
    assert [row["step"] for row in probes] == [0, 1, 2]


def test_a_size_larger_than_the_split_is_refused_before_training(tiny_data, tmp_path):
    with pytest.raises(UsageError, match=r"^train size 321 is more than the 320 training "):
        train(config(hidden=(8,), train_size=321), dataset=tiny_data, run_dir=tmp_path / "r")
    with pytest.raises(UsageError, match=r"^test size 81 is more than the 80 test examples"):
        sequences.inputs(tiny_data, "test", config(test_size=81), CPU)
    generated = data.load_dataset("adding")
    too_many = config(arch="rnn", dataset="adding", train_size=60001, **RNN)
    with pytest.raises(UsageError, match="train size 60001 is more than the 60000 training"):
        sequences.targets(generated, "train", too_many, CPU)
    assert not generated.generated.drawn  # refused before anything was drawn


def cli(capsys, tiny_dir, tmp_path, *options: str) -> str:
    """`vanishing train` on the tiny data set: exit 2 and one line of error on stderr (after
    the data set's provenance notes, when it was loaded first), nothing written; the message."""
    out = tmp_path / "out"
    argv = ["train", "--data-dir", str(tiny_dir), "--no-verify", "--out", str(out), *options]
    code = main([*argv, "--device", "cpu"])
    stdout, stderr = capsys.readouterr()
    assert code == 2, (stdout, stderr)
    *notes, line = stderr.strip().splitlines()
    assert all(note.startswith("mnist: ") for note in notes), stderr
    assert line.startswith("vanishing train: error: ") and "Traceback" not in stderr
    assert not out.exists() or not any(out.iterdir())  # nothing trained, nothing written
    return line.removeprefix("vanishing train: error: ")


BAD = [
    (
        ["--sequence", "pixels"],
        "--sequence applies to recurrent networks (--arch rnn, lstm or gru); an MLP reads the "
        "whole image at once",
    ),
    (["--arch", "rnn", "--forget-bias", "1"], "--forget-bias applies to --arch lstm only"),
    (["--arch", "rnn", "--length", "50"], "--length applies to --dataset adding only"),
    (
        ["--arch", "rnn", "--dataset", "adding", "--length", "0"],
        "length must be an integer >= 2 (two marked positions, one in each half), got 0",
    ),
    (
        ["--arch", "lstm", "--activation", "relu"],
        "lstm cells use their own tanh and sigmoid: --activation applies to --arch mlp and rnn "
        "(leave it out, or give tanh), got relu",
    ),
    (["--dataset", "adding"], "--dataset adding is a sequence task: give --arch rnn, lstm or gru"),
    (
        ["--arch", "gru", "--dataset", "adding", "--sequence", "rows"],
        "the adding problem is a sequence of its own; leave --sequence out",
    ),
    (["--arch", "lstm", "--forget-bias", "nan"], "forget bias must be a finite number, got nan"),
    (
        ["--init", "identity"],
        "identity init sets a recurrent weight to the identity (IRNN, with --arch rnn "
        "--activation relu); use it with --arch rnn",
    ),
    (
        ["--arch", "rnn", "--norm", "layer"],
        "--norm layer is not implemented for recurrent layers; leave it out",
    ),
    (
        ["--arch", "gru", "--residual"],
        "residual connections are not implemented for recurrent layers; leave them out",
    ),
    (["--train-size", "321"], "train size 321 is more than the 320 training examples of mnist"),
    (["--test-size", "81", *SMALL], "test size 81 is more than the 80 test examples of mnist"),
    (["--train-size", "0"], "train size must be an integer >= 1, got 0"),
    (
        ["--train-size", "20", "--batch-size", "32"],
        "--batch-size 32 is larger than the training set (20 images of mnist); at most 20",
    ),
]


@pytest.mark.parametrize("options, message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_recurrent_settings_refused_in_one_line(capsys, tiny_dir, tmp_path, options, message):
    assert cli(capsys, tiny_dir, tmp_path, *options) == message


def test_a_recurrent_run_too_large_for_memory_is_refused_in_one_line(capsys, tiny_dir, tmp_path):
    """T x batch x hidden values per layer: refused before the data loads or anything is
    allocated, on the training set's registered size (60000, so the batch is 60000)."""
    options = ["--arch", "lstm", "--sequence", "pixels", "--batch-size", "100000"]
    message = cli(capsys, tiny_dir, tmp_path, *options, "--hidden", "4096")
    assert message.startswith("a run of lstm 784x1-4096-10 needs about "), message
    assert message.endswith("; use a smaller --batch-size"), message


def test_a_long_adding_problem_draws_what_it_holds_not_a_thousand_examples():
    # Blocks hold at most BLOCK_VALUES steps: 10 examples of T = 300000 draw 3 or so at a time
    # (24 MB), not 1000 (2.4 GB); the first N are still a draw of N.

    assert adding.block_size(100) == adding.BLOCK and adding.block_size(300000) == 3
    x, y = adding.generate("train", 300000, 10)
    assert x.shape == (10, 300000, 2) and (x[..., 1].sum(dim=1) == 2).all()
    head, _ = adding.generate("train", 300000, 4)
    assert torch.equal(head, x[:4])
