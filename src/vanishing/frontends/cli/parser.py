"""The command tree of `vanishing`: every command's options, the training settings' derived from
TrainConfig's fields (`config.settings()`); values are kept as the text given, for
`settings.codec` to parse (the same parser as the API's, the page's and TOML's)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

from vanishing import __version__
from vanishing.data.datasets import DATASETS
from vanishing.executor import BACKENDS
from vanishing.jobs import compare, train
from vanishing.model.mlp import DEFAULT_WIDTH
from vanishing.settings.codec import GRID_SHAPE_KEYS, known_keys
from vanishing.settings.config import SECTIONS, help_text, kind_of, settings
from vanishing.settings.grid import grid_keys, preset_names


class Parser(argparse.ArgumentParser):
    """argparse, but a wrong input is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def option(name: str) -> str:
    """A field's option: `batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


def add_data_options(parser: argparse.ArgumentParser | Any, dataset: bool = True) -> None:
    """--data-dir, --cache-dir, --no-verify: for every command that loads data; with `dataset`
    (the `data` commands) --dataset too, which may be `all` (training commands have theirs from
    the config)."""
    if dataset:
        names = [*DATASETS, "all"]
        parser.add_argument(
            "--dataset",
            default="mnist",
            metavar="NAME",
            help=f"data set: {', '.join(names)} (default: mnist)",
        )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="your own copy: the four IDX files (plain or .gz), a torchvision root "
        "(DIR/MNIST/raw) or a Keras mnist.npz (default: $VANISHING_DATA)",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where verified data sets are kept (default: $VANISHING_CACHE or ~/.cache/vanishing)",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="accept data whose MD5 differs from the canonical files (your own data)",
    )


def add_training_options(
    parser: argparse.ArgumentParser, lists: Sequence[str] = (), depth: bool = True
) -> None:
    """One option per TrainConfig field (`config.settings()`), in its --help section; the
    fields named in `lists` take comma-separated lists under their axis names (`--seeds`);
    `depth` adds --depth and --width (a sweep has its own --depths and --widths).
    Every option defaults to None: what is not given is the config's (or the sweep's) default."""
    sections = {name: parser.add_argument_group(name) for name in SECTIONS}
    for setting in settings():
        meta, section = setting.metadata, sections[setting.metadata["section"]]
        if setting.name in lists:
            extra = ", or 'all'" if meta["all"] is not None else ""
            section.add_argument(
                option(meta["axis"]),
                metavar=f"{meta['metavar'] or 'V'},..",
                help=help_text(setting, default=meta["values"]).replace(
                    " (default", f"{extra} (default"
                ),
            )
        elif kind_of(setting) is bool:  # --flag / --no-flag
            section.add_argument(
                option(setting.name), action=argparse.BooleanOptionalAction, help=help_text(setting)
            )
        else:
            section.add_argument(
                option(setting.name), metavar=meta["metavar"], help=help_text(setting)
            )
        if setting.name == "hidden" and depth:
            section.add_argument("--depth", metavar="N", help="N hidden layers of --width units")
            section.add_argument(
                "--width",
                metavar="W",
                help=f"units per layer with --depth (default: {DEFAULT_WIDTH})",
            )
    add_data_options(sections["data"], dataset=False)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--resume and --detect-anomaly: for `train` and `compare`."""
    section = parser.add_argument_group("interruptions and debugging")
    section.add_argument(
        "--resume",
        action="store_true",
        help="continue unfinished runs in --out from their last checkpoint (an epoch end) and "
        "keep finished ones, to the same result as an uninterrupted run (default: every run "
        "starts afresh); a checkpoint of another config is an error",
    )
    section.add_argument(
        "--detect-anomaly",
        action="store_true",
        help="run with torch.autograd.set_detect_anomaly(True): the backward op that made a "
        "NaN raises, with the forward op's traceback (slow; for debugging)",
    )


def add_run_dirs(parser: argparse.ArgumentParser | Any) -> None:
    """The run records a command reads (`report`, `export`)."""
    parser.add_argument(
        "dirs",
        nargs="+",
        metavar="RUN_OR_SWEEP_DIR",
        help="a run directory, or any directory with run directories below it",
    )


def add_workers(parser: argparse.ArgumentParser | Any, text: str) -> None:
    parser.add_argument("--workers", metavar="N", help=text)


def settings_given(args: argparse.Namespace, lists: Sequence[str] = ()) -> dict[str, Any]:
    """The settings the command line gave, as text, by the keys `settings.codec.configs` takes
    (a field's name, an axis's for the fields in `lists`, depth and width)."""
    return {key: getattr(args, key) for key in known_keys(lists) if hasattr(args, key)}


def grid_given(args: argparse.Namespace) -> dict[str, Any]:
    """The grid keys the command line gave, as text (a sweep's)."""
    return {key: getattr(args, key) for key in grid_keys() if hasattr(args, key)}


def build_parser() -> Parser:
    """The whole command tree; each command's `action` names its function in `commands`."""
    parser = Parser(
        prog="vanishing",
        description="See and measure the vanishing-gradient problem: MLPs on MNIST with every "
        "common activation, measured layer by layer.",
    )
    parser.add_argument("--version", action="version", version=f"vanishing {__version__}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    subcommands.required = True

    data_parser = subcommands.add_parser(
        "data",
        help="fetch, inspect and verify the data sets",
        description="Fetch, inspect and verify MNIST and Fashion-MNIST.",
    )
    data_commands = data_parser.add_subparsers(
        dest="data_command", metavar="ACTION", parser_class=Parser
    )
    data_commands.required = True
    for action, text in (
        ("fetch", "find or download a data set, verify it and cache it"),
        ("info", "where a data set comes from, its sizes, class counts, checksums"),
        ("verify", "print each file's MD5 against the canonical one"),
    ):
        sub = data_commands.add_parser(
            action, help=text, description=text[0].upper() + text[1:] + "."
        )
        add_data_options(sub)
        sub.set_defaults(action=f"data_{action}")

    sub = subcommands.add_parser(
        "compare",
        help="train the reference MLP with several activations and compare (the main job)",
        description="Train the reference MLP (784-520-320-240-120-10, Adam 1e-3, batch 64, "
        "9 epochs) once per activation and seed, measure gradient flow layer by layer, and print "
        "a summary table. Each run writes config.json, metrics.jsonl and result.json under --out; "
        "summary.csv and report.html (with report.md) go there too.",
    )
    sub.add_argument(
        "--out",
        default=str(compare.DEFAULT_OUT),
        metavar="DIR",
        help=f"where the runs and summary.csv go (default: {compare.DEFAULT_OUT})",
    )
    sub.add_argument(
        "--no-group",
        action="store_true",
        help="train one model at a time (default: on a GPU, runs of one shape train together, "
        "with stacked weights; the CPU trains one model per process, see --workers, which "
        "measured faster there)",
    )
    add_workers(
        sub,
        "runs trained at once, each in a process of its own, the cores shared out (default: "
        "one per core on the CPU, where a small MLP cannot keep two cores busy; 1 on a GPU)",
    )
    add_training_options(sub, compare.AXES)
    add_run_options(sub)
    sub.set_defaults(action="compare")

    sub = subcommands.add_parser(
        "train",
        help="one run with any options",
        description="Train one MLP and write its records (config.json, metrics.jsonl, "
        "result.json) to a directory of --out named by its settings.",
    )
    sub.add_argument(
        "--out",
        default=str(train.DEFAULT_OUT),
        metavar="DIR",
        help="records go to DIR/NAME, NAME made of the run's settings and a hash of them, so "
        "that runs of other settings never share a directory (default: runs/train)",
    )
    add_training_options(sub)
    add_run_options(sub)
    sub.set_defaults(action="train")

    sub = subcommands.add_parser(
        "sweep",
        help="run a grid of settings x seeds, resumable, with statistics",
        description="Expand a grid (every list option's values, e.g. activations x inits x "
        "seeds, and depths x widths) from a preset, a TOML file (--config) and/or the options "
        "below, run every run that has not finished yet, and write runs.csv (one row per run), "
        "points.csv (mean, std and 95 % CI over seeds), pairs.csv (tests between activations) "
        "and a report. Interrupted, it resumes where it stopped when run again. An option given "
        "here overrides the preset's or file's value; one given nowhere takes the default shown.",
    )
    sub.add_argument(
        "--preset", metavar="NAME", help=f"a shipped grid: {', '.join(preset_names())}"
    )
    sub.add_argument("--config", metavar="FILE", help="a TOML file with the grid's keys")
    section = sub.add_argument_group("network shapes (instead of --hidden)")
    depths, widths = (option(key) for key in GRID_SHAPE_KEYS)
    section.add_argument(depths, metavar="N,..", help="numbers of hidden layers")
    section.add_argument(
        widths, metavar="W,..", help=f"units per layer with --depths (default: {DEFAULT_WIDTH})"
    )
    add_training_options(sub, [s.name for s in settings() if s.metadata["axis"]], depth=False)
    section = sub.add_argument_group("execution")
    section.add_argument(
        "--out",
        metavar="DIR",
        help="the sweep directory (default: "
        "runs/sweep-PRESET, runs/sweep-CONFIGNAME or runs/sweep-grid)",
    )
    add_workers(section, "local processes, one thread each (default: one per core)")
    section.add_argument(
        "--backend",
        default="local",
        metavar="NAME",
        help=f"{' or '.join(BACKENDS)}: a process pool here, or one task per unit of runs on a "
        "Ray cluster (default: local)",
    )
    section.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="Ray cluster address, e.g. auto or HOST:PORT (default: a local one)",
    )
    section.add_argument(
        "--retry-failed", action="store_true", help="also rerun runs that failed or diverged"
    )
    section.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue unfinished runs from their last checkpoint (default); --no-resume "
        "starts them afresh. Finished runs are always kept",
    )
    section.add_argument(
        "--no-group",
        action="store_true",
        help="train one model at a time (default: on a GPU, runs of one shape train together, "
        "with stacked weights; the CPU trains one at a time, where that measured faster)",
    )
    sub.set_defaults(action="sweep")

    sub = subcommands.add_parser(
        "report",
        help="redraw the HTML report from run records (no training)",
        description="Write one offline HTML page (and a Markdown twin) with the summary table, "
        "a diagnosis and figures, read from run records only (config.json, metrics.jsonl, "
        "result.json); nothing is retrained.",
    )
    add_run_dirs(sub)
    sub.add_argument(
        "--out",
        metavar="FILE",
        help="the HTML file; report.md goes beside it (default: report.html in the first DIR)",
    )
    sub.set_defaults(action="report")

    sub = subcommands.add_parser(
        "export",
        help="write run records to TensorBoard, MLflow or W&B (no training)",
        description="Write the records of runs, compares and sweeps (config.json, "
        "metrics.jsonl) to a tracker, one entry per run: losses, accuracy, the vanishing "
        "ratio, per-layer gradient, signal and weight norms, dead and saturated fractions. "
        "--to tensorboard: event files, a directory per run below --logdir, with activation "
        "histograms, and a Custom Scalars tab that draws each per-layer measurement of every "
        "layer in one chart (needs pip install 'vanishing[tensorboard]'). --to mlflow: an "
        "MLflow run per run in a local store (--uri, --experiment; needs "
        "'vanishing[mlflow]'). --to wandb: an offline W&B run per run, for wandb sync (--dir; "
        "needs 'vanishing[wandb]'). Nothing contacts a server.",
    )
    add_run_dirs(sub)
    sub.add_argument(
        "--to",
        required=True,
        metavar="FORMAT",
        help="the format to write: tensorboard, mlflow or wandb",
    )
    sub.add_argument(
        "--logdir",
        metavar="DIR",
        help="tensorboard: where the event files go, a directory per run named by its path "
        "below RUN_OR_SWEEP_DIR; an earlier export there is replaced (default: the first "
        "RUN_OR_SWEEP_DIR/tensorboard)",
    )
    sub.add_argument(
        "--uri",
        metavar="URI",
        help="mlflow: the local store, sqlite:///PATH (a database file) or a directory (a file "
        "store); a run exported again replaces its earlier MLflow run (default: "
        "sqlite:///RUN_OR_SWEEP_DIR/mlflow.db of the first directory)",
    )
    sub.add_argument(
        "--experiment",
        metavar="NAME",
        help="mlflow: the experiment the runs go to (default: vanishing)",
    )
    sub.add_argument(
        "--dir",
        dest="wandb_dir",
        metavar="DIR",
        help="wandb: the runs go to DIR/wandb/offline-run-*, as wandb.init(dir=DIR) writes "
        "them; a run exported again replaces its earlier one (default: the first "
        "RUN_OR_SWEEP_DIR)",
    )
    sub.set_defaults(action="export")

    sub = subcommands.add_parser(
        "live",
        help="a local web page: change the network and watch its gradients vanish as it trains",
        description="Serve a local page (with a token in its URL, as Jupyter does) where you set "
        "up to 4 runs from the training options, start, stop and resume them and watch their "
        "gradients, activations and verdicts live; it also opens the finished runs, compares "
        "and sweeps under --out and each DIR. Live runs are ordinary run directories under "
        "--out. Ctrl-C stops the server and its training; the runs resume later.",
    )
    sub.add_argument(
        "dirs", nargs="*", metavar="DIR", help="more directories of runs to list and open"
    )
    sub.add_argument(
        "--out",
        default="runs/live",
        metavar="DIR",
        help="where the page's runs go (default: runs/live)",
    )
    sub.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default: 127.0.0.1, this machine only)",
    )
    sub.add_argument("--port", default="8765", help="the port (default: 8765; 0: any free one)")
    sub.add_argument(
        "--no-browser", action="store_true", help="print the URL, do not open a browser"
    )
    add_workers(
        sub,
        "runs of one job trained at once, each in a process of its own (default: one per core "
        "on the CPU; 1 on a GPU, where runs of one shape train together)",
    )
    add_data_options(sub, dataset=False)
    sub.set_defaults(action="live")
    return parser
