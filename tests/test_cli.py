"""The command line end to end on a tiny data set: files, table, exit codes and messages."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch

from conftest import interrupt_after_one_epoch
from vanishing import records
from vanishing.data import datasets as data
from vanishing.frontends.cli import main
from vanishing.frontends.cli.parser import build_parser, settings_given
from vanishing.settings import codec, naming


def run_dir_of(out, argv: list[str]):
    """Where `vanishing train ARGV --out OUT` writes: a directory named by the settings."""
    config = codec.config(settings_given(build_parser().parse_args(["train", *argv])))
    return out / naming.run_name(config)


TINY = [
    "--no-verify",
    "--batch-size",
    "32",
    "--probe-every",
    "3",
    "--probe-size",
    "32",
    "--device",
    "cpu",
]


def test_compare_end_to_end(capsys, tiny_dir, tmp_path):
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            "--data-dir",
            str(tiny_dir),
            "--activations",
            "relu,sigmoid",
            "--seeds",
            "0,1",
            "--epochs",
            "2",
            "--out",
            str(out),
            "--hidden",
            "16,8",
            *TINY,
        ]
    )
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "[ReLU s1] epoch 2 | train loss " in stdout and "| acc " in stdout
    assert "[Sigmoid s0] epoch 1 |" in stdout
    table = stdout[stdout.index("activation") :].splitlines()
    assert table[0].split()[:3] == ["activation", "test", "acc"]
    assert table[2].startswith("ReLU") and table[3].startswith("Sigmoid")
    assert " ± " in table[2]
    dirs = {}  # (activation, seed) -> its directory, named by its settings
    for activation in ("relu", "sigmoid"):
        for seed in (0, 1):
            name = f"{activation}-h16-8-default-adam-lr0.001-s{seed}-"
            (run_dir,) = [p for p in out.iterdir() if p.name.startswith(name)]
            assert records.is_complete(run_dir)
            result = records.read_json(run_dir / "result.json")
            assert result["config"]["hidden"] == [16, 8] and result["status"] == "ok"
            dirs[activation, seed] = run_dir
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["activation"] for r in rows] == ["relu", "sigmoid"]
    relu = [records.read_json(dirs["relu", s] / "result.json")["test_accuracy"] for s in (0, 1)]
    assert float(rows[0]["test_accuracy_mean"]) == pytest.approx(sum(relu) / 2)
    assert int(rows[0]["runs"]) == 2
    # The sigmoid network's first layer gets less gradient than its last, at init.
    assert float(rows[1]["vanishing_ratio_init"]) < 1


def test_train_end_to_end(capsys, tiny_dir, tmp_path):
    argv = ["--activation", "prelu", "--depth", "3", "--width", "12", "--epochs", "1"]
    argv += ["--seed", "4", *TINY]
    code = main(["train", "--data-dir", str(tiny_dir), "--out", str(tmp_path), *argv])
    stdout, _ = capsys.readouterr()
    run_dir = run_dir_of(tmp_path, argv)
    assert run_dir.name == "prelu-d3w12-default-adam-lr0.001-s4-" + run_dir.name[-10:]
    assert code == 0 and stdout.splitlines()[-2].startswith("ok: test accuracy ")
    assert stdout.splitlines()[-2].endswith(f"; records in {run_dir}")
    # The run's verdict, from its records: three PReLU layers pass the gradient on.
    assert stdout.splitlines()[-1].startswith("verdict: Healthy gradient: the back-propagated")
    assert stdout.startswith("[PReLU] epoch 1 | train loss")
    config = records.read_json(run_dir / "config.json")
    assert config["hidden"] == [12, 12, 12] and config["seed"] == 4
    probe = records.read_metrics(run_dir)[0]
    assert probe["prelu_slopes"] == pytest.approx([0.25] * 3)


def test_two_trains_with_other_settings_into_one_out_keep_both(capsys, tiny_dir, tmp_path):
    """`train --lr 0.01 --out d` then `train --lr 0.1 --out d`: two directories, both kept."""
    base, out = ["--hidden", "8", "--epochs", "1", *TINY], tmp_path / "d"
    for lr in ("0.01", "0.1"):
        assert main(["train", "--data-dir", str(tiny_dir), "--out", str(out), *base,
                     "--lr", lr]) == 0  # fmt: skip
    dirs = sorted(p for p in out.iterdir() if p.is_dir())
    assert [d.name for d in dirs] == sorted(
        run_dir_of(out, [*base, "--lr", lr]).name for lr in ("0.01", "0.1")
    )
    lrs = sorted(records.read_json(d / records.RESULT)["config"]["lr"] for d in dirs)
    assert lrs == [0.01, 0.1]


def test_two_compares_of_other_settings_into_one_out_keep_both(capsys, tiny_dir, tmp_path):
    """`make run ARGS="--epochs 1 --seeds 0"`, then `make run`: each compare's runs are in
    directories named by their settings, both kept; summary.csv and the report are the last
    compare's, of its own runs. A compare directory of an older version (ACTIVATION-seedSEED)
    holding the very run asked for resumes there."""
    out = tmp_path / "out"
    argv = ["compare", "--data-dir", str(tiny_dir), "--out", str(out), "--activations",
            "relu", "--seeds", "0", "--hidden", "8", "--epochs", "1", *TINY]  # fmt: skip
    assert main(argv) == 0
    (first,) = [p for p in out.iterdir() if p.is_dir()]
    before = (first / records.RESULT).read_bytes()
    assert main([*argv, "--lr", "0.01"]) == 0
    dirs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(dirs) == 2 and (first / records.RESULT).read_bytes() == before
    lrs = {records.read_json(d / records.RESULT)["config"]["lr"] for d in dirs}
    assert lrs == {0.001, 0.01}
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 2  # the header and the one run of the last compare
    capsys.readouterr()
    # An older version's directory, interrupted after its first epoch: resumed where it is.
    older = tmp_path / "older"
    config = codec.config(settings_given(build_parser().parse_args(
        ["train", "--hidden", "8", "--epochs", "3", *TINY])))  # fmt: skip
    interrupt_after_one_epoch(
        config, older / "relu-seed0", data.load_dataset(data_dir=tiny_dir, verify=False)
    )
    again = [
        "compare",
        "--data-dir",
        str(tiny_dir),
        "--out",
        str(older),
        "--resume",
        "--activations",
        "relu",
        "--seeds",
        "0",
        "--hidden",
        "8",
        "--epochs",
        "3",
    ]
    again += TINY
    assert main(again) == 0
    assert [p.name for p in older.iterdir() if p.is_dir()] == ["relu-seed0"]
    epochs = [
        r["epoch"] for r in records.read_metrics(older / "relu-seed0") if r["kind"] == "epoch"
    ]
    assert epochs == [1, 2, 3] and records.is_complete(older / "relu-seed0")


BAD_OPTIONS = [
    (["--activations", "relu,swish"], "unknown activation 'swish'; choose from: sigmoid, tanh"),
    (["--activations", ""], "activations: give at least one value"),
    (["--seeds", ""], "seeds: give at least one value"),
    (["--depth", "0"], "depth must be"),
    (["--lr", "0"], "learning rate must be a finite number > 0"),
    (["--lr=-1e-3"], "learning rate must be a finite number > 0"),
    (["--lr", "fast"], "lr: expected float, got 'fast'"),
    (["--lr", ""], "lr: expected float, got ''"),
    (["--batch-size", "0"], "batch size must be an integer >= 1"),
    (["--epochs", "0"], "epochs must be an integer >= 1"),
    (["--hidden", "520,abc"], "hidden: expected int, got 'abc'"),
    (["--hidden", ",".join(["8"] * 10001)], "depth must be 1 to 10000 hidden layers, got 10001"),
    (["--hidden", "64", "--depth", "3"], "--hidden"),
    (["--init", "zeros"], "unknown init 'zeros'; choose from: default, xavier_uniform"),
    (["--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'; choose from: adam, sgd, rmsprop, adamw"),
    (["--momentum", "0.9"], "--momentum applies to --optimizer sgd only"),
    (["--seeds", "0,x"], "seeds: expected int, got 'x'"),
    (["--seeds", "0,0"], "seeds: each value once, got 0,0"),
    (
        ["--dataset", "cifar"],
        "unknown data set 'cifar'; choose from: mnist, fashion-mnist, adding",
    ),
    (["--device", "tpu"], "unknown device 'tpu'; choose from: auto, cpu, cuda, mps"),
    (["--norm", "foo"], "unknown norm 'foo'; choose from: none, batch, layer"),
    (["--init-gain", "-1"], "init gain must be a finite number > 0, got -1.0"),
    (["--init-gain", "nan"], "init gain must be a finite number > 0, got nan"),
    (["--clip-grad-norm", "0"], "gradient clipping norm must be a finite number > 0 (leave it out"),
    (["--clip-grad-norm", "inf"], "gradient clipping norm must be a finite number > 0"),
    (["--clip-grad-norm", "off"], "clip_grad_norm: expected float or none, got 'off'"),
    (["--residual"], "residual connections need equal hidden widths (a skip adds a layer's"),
    (["--norm", "batch", "--batch-size", "1"], "batch norm needs 2 samples or more"),
]


@pytest.mark.parametrize("options, message", BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS])
def test_bad_option_exits_2_with_one_line(capsys, tiny_dir, tmp_path, options, message):
    argv = ["compare", "--data-dir", str(tiny_dir), "--out", str(tmp_path / "o"), *options]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own type errors
        code = e.code
    stdout, stderr = capsys.readouterr()
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("vanishing compare: error: ") and message in stderr
    assert not (tmp_path / "o").exists()  # nothing trained, nothing written


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out_is_a_clear_error(capsys, tiny_dir, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code = main(["compare", "--data-dir", str(tiny_dir), "--out", str(locked / "x"), *TINY])
    assert code == 2 and "cannot write to output directory" in capsys.readouterr().err


def test_out_that_is_a_file_is_a_clear_error(capsys, tiny_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["compare", "--data-dir", str(tiny_dir), "--out", str(blocker / "x"), *TINY])
    assert code == 2 and "cannot write to output directory" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["/dev/null", "file", "file/x"])
def test_live_out_that_cannot_be_written_is_one_line_before_serving(capsys, tmp_path, where):
    """`live --out` is checked as train's and compare's is, before the server listens: a
    device, a file, a path through a file (a read-only file system: EROFS, the same line)."""
    (tmp_path / "file").write_text("kept")
    out = where if where.startswith("/") else str(tmp_path / where)
    code = main(["live", "--out", out, "--no-browser", "--port", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"vanishing live: error: cannot write to output directory {out}: ")
    assert (tmp_path / "file").read_text() == "kept"


def test_console_script_help_and_exit_code():
    done = subprocess.run(
        [sys.executable, "-m", "vanishing", "compare", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    for option in (
        "--activations",
        "--seeds",
        "--hidden",
        "--depth",
        "--width",
        "--init",
        "--optimizer",
        "--lr",
        "--momentum",
        "--batch-size",
        "--epochs",
        "--dataset",
        "--data-dir",
        "--device",
        "--probe-every",
        "--out",
    ):
        assert option in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "vanishing", "compare", "--activations", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VANISHING_OFFLINE": "1"},
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_device_that_is_not_here(capsys, tiny_dir, tmp_path):
    code = main(
        [
            "train",
            "--data-dir",
            str(tiny_dir),
            "--out",
            str(tmp_path),
            "--device",
            "cuda",
            "--no-verify",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2  # before any data is loaded: the one line is all there is
    assert err.strip() == (
        "vanishing train: error: --device cuda: no CUDA GPU is available here (try --device auto)"
    )


def test_damaged_checkpoint(capsys, tiny_dir, tmp_path):
    run_dir = run_dir_of(tmp_path, ["--epochs", "1", *TINY])
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    code = main(
        [
            "train",
            "--data-dir",
            str(tiny_dir),
            "--out",
            str(tmp_path),
            "--resume",
            "--epochs",
            "1",
            *TINY,
        ]
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the data source lines
    assert code == 2
    assert last.startswith("vanishing train: error: ") and "not a readable checkpoint (" in last
    assert "checkpoint.pt" in last


def test_a_batch_larger_than_the_training_set_is_refused(capsys, tiny_dir, tmp_path):
    argv = ["train", "--data-dir", str(tiny_dir), "--out", str(tmp_path / "o"), *TINY]
    code = main([*argv, "--batch-size", "321"])  # the tiny training set has 320 images
    stderr = capsys.readouterr().err
    assert code == 2 and stderr.strip().splitlines()[-1] == (
        "vanishing train: error: --batch-size 321 is larger than the training set (320 images "
        "of mnist); at most 320"
    )
    assert not list((tmp_path / "o").glob("*/result.json"))
    sweep = ["sweep", "--data-dir", str(tiny_dir), "--no-verify", "--out", str(tmp_path / "s")]
    sweep += ["--activations", "relu", "--seeds", "0", "--depths", "1", "--batch-size", "321"]
    assert main(sweep) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("vanishing sweep: error: --batch-size 321 is larger than the training set")
    )
    assert not (tmp_path / "s" / "sweep.json").exists()  # refused before the sweep is written


def test_version():
    done = subprocess.run(
        [sys.executable, "-m", "vanishing", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip().startswith("vanishing 0.")
