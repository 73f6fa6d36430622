"""The `vanishing` command line: a thin layer that parses options and calls the library."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from vanishing import __version__, records
from vanishing.data import datasets as data
from vanishing.devices import resolve_device
from vanishing.errors import UsageError
from vanishing.executor import BACKENDS, WorkerError, check_batch_sizes, workers_for
from vanishing.jobs import compare
from vanishing.model.activations import ACTIVATIONS
from vanishing.model.mlp import DEFAULT_WIDTH, hidden_widths, parse_hidden
from vanishing.reporting import loading, summary
from vanishing.settings.config import (
    GROUPS,
    TrainConfig,
    axes,
    check_momentum,
    help_text,
    kind_of,
    settings,
    value_of,
)
from vanishing.training import memory

COMPARE_AXES = ("activation", "seed")  # compare trains every activation x seed


class Parser(argparse.ArgumentParser):
    """argparse, but a wrong input is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def stderr(message: str) -> None:
    """Progress and provenance go to stderr, so stdout stays clean for tables."""
    print(message, file=sys.stderr, flush=True)


def add_data_options(parser: argparse.ArgumentParser | Any, dataset: bool = True) -> None:
    """--data-dir, --cache-dir, --no-verify: for every command that loads data; with `dataset`
    (the `data` commands) --dataset too, which may be `all` (training commands have theirs from
    the config)."""
    if dataset:
        names = [*data.DATASETS, "all"]
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


def dataset_names(name: str) -> list[str]:
    """`all` or one validated name."""
    if name == "all":
        return list(data.DATASETS)
    data.get_spec(name)
    return [name]


def cmd_data_fetch(args: argparse.Namespace) -> int:
    for name in dataset_names(args.dataset):
        start = time.perf_counter()
        dataset = data.load_dataset(
            name,
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
            verify=not args.no_verify,
            report=stderr,
        )
        seconds = time.perf_counter() - start
        status = "verified" if dataset.verified else "NOT verified"
        print(
            f"{name}: {len(dataset.train_labels)} train + {len(dataset.test_labels)} test "
            f"images from {dataset.source}, {status}, {seconds:.2f} s"
        )
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    for name in dataset_names(args.dataset):
        try:
            dataset = data.load_dataset(
                name,
                data_dir=args.data_dir,
                cache_dir=args.cache_dir,
                verify=not args.no_verify,
                remote=False,
            )
        except UsageError as e:
            if args.dataset != "all":
                raise
            print(f"{name}: not available here ({e})")
            continue
        info = data.describe(dataset)
        spec = data.get_spec(name)
        print(f"{name}")
        print(f"  source     {info['source']}")
        print(
            "  checksums  "
            + ("verified (all four MD5s match)" if info["verified"] else "NOT verified")
        )
        print(f"  train      {info['train']} images, 28x28 uint8")
        print(f"  test       {info['test']} images, 28x28 uint8")
        print(
            "  classes    "
            + ", ".join(
                f"{c}:{n}" for c, n in zip(spec.classes, info["train_class_counts"], strict=True)
            )
        )
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    failed = 0
    for name in dataset_names(args.dataset):
        spec = data.get_spec(name)
        arrays, source, _ = data.load_arrays(
            name, data_dir=args.data_dir, cache_dir=args.cache_dir, verify=False, remote=False
        )
        for role, digest in data.checksums(arrays).items():
            ok = digest == spec.md5[role]
            failed += not ok
            print(
                f"{name} {spec.files[role]:<26} {digest} {'OK' if ok else 'MISMATCH'}  ({source})"
            )
    if failed:
        stderr(f"vanishing data verify: {failed} file(s) differ from the canonical data set")
        return 1
    return 0


def parse_names(text: str) -> list[str]:
    """'relu,sigmoid' -> ['relu', 'sigmoid']; 'all' -> every registered activation."""
    if text.strip() == "all":
        return list(ACTIVATIONS)
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError("--activations: give at least one name, e.g. relu,sigmoid")
    return names


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--seeds: expected integers separated by commas, got {text!r}") from None
    if any(seed < 0 for seed in seeds):
        raise UsageError(f"--seeds: seeds must be >= 0, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds: each seed once, got {text!r}")
    return seeds


def parse_list(text: str, kind: type, option: str) -> list:
    """'2,5,10' -> [2, 5, 10] (or floats, or names), with a one-line error naming the option."""
    try:
        values = [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(
            f"{option}: expected {kind.__name__} values separated by commas, got {text!r}"
        ) from None
    if not values:
        raise UsageError(f"{option}: give at least one value")
    return values


def option(name: str) -> str:
    """A field's option: `batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


def parse_axis(setting: dataclasses.Field, text: str) -> list:
    """An axis option's comma-separated values, as its field's type."""
    if setting.name == "activation":
        return parse_names(text)
    if setting.name == "seed":
        return parse_seeds(text)
    where = option(setting.metadata["axis"])
    values = [value_of(setting, part, where, text=True) for part in text.split(",") if part.strip()]
    if not values:
        raise UsageError(f"{where}: give at least one value")
    return values


def converter(setting: dataclasses.Field) -> Callable[[str], Any]:
    """An option's argparse type: the text as the field's type (`value_of`), named for it so
    that argparse's error reads "invalid float value: 'x'"."""

    def convert(text: str) -> Any:
        return value_of(setting, text, option(setting.name), text=True)

    convert.__name__ = kind_of(setting).__name__
    return convert


def add_training_options(
    parser: argparse.ArgumentParser, lists: Sequence[str] = (), depth: bool = True
) -> None:
    """One option per TrainConfig field (`config.settings()`), grouped as --help shows them;
    the fields named in `lists` take comma-separated lists under their axis names (`--seeds`);
    `depth` adds --depth and --width (a sweep has its own --depths and --widths).
    Every option defaults to None: what is not given is the config's (or the sweep's) default."""
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for setting in settings():
        meta, group = setting.metadata, groups[setting.metadata["group"]]
        if setting.name in lists:
            values = meta["values"]
            extra = ", or 'all'" if setting.name == "activation" else ""
            group.add_argument(
                option(meta["axis"]),
                metavar=f"{meta['metavar'] or 'V'},..",
                help=help_text(setting, default=values).replace(" (default", f"{extra} (default"),
            )
        elif setting.name == "hidden":
            group.add_argument("--hidden", metavar=meta["metavar"], help=help_text(setting))
        elif kind_of(setting) is bool:  # --flag / --no-flag
            group.add_argument(
                option(setting.name),
                action=argparse.BooleanOptionalAction,
                help=help_text(setting),
            )
        else:
            group.add_argument(
                option(setting.name),
                # int, float or str (str: the text as given); `none` for an optional one
                type=converter(setting),
                metavar=meta["metavar"],
                help=help_text(setting),
            )
        if setting.name == "hidden" and depth:
            group.add_argument(
                "--depth", type=int, metavar="N", help="N hidden layers of --width units"
            )
            group.add_argument(
                "--width",
                type=int,
                metavar="W",
                help=f"units per layer with --depth (default: {DEFAULT_WIDTH})",
            )
    add_data_options(groups["data"], dataset=False)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--resume and --detect-anomaly: for `train` and `compare`."""
    group = parser.add_argument_group("interruptions and debugging")
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue unfinished runs in --out from their last checkpoint (an epoch end) and "
        "keep finished ones, to the same result as an uninterrupted run (default: every run "
        "starts afresh); a checkpoint of another config is an error",
    )
    group.add_argument(
        "--detect-anomaly",
        action="store_true",
        help="run with torch.autograd.set_detect_anomaly(True): the backward op that made a "
        "NaN raises, with the forward op's traceback (slow; for debugging)",
    )


def given_settings(args: argparse.Namespace) -> dict:
    """The TrainConfig fields the command line gave (not the axes'), hidden resolved."""
    given = {}
    for setting in settings():
        dest = setting.name
        if setting.name == "hidden":
            hidden = parse_hidden(args.hidden) if args.hidden is not None else None
            depth, width = getattr(args, "depth", None), getattr(args, "width", None)
            if hidden is not None or depth is not None or width is not None:
                given["hidden"] = hidden_widths(hidden, depth, width)
        elif getattr(args, dest, None) is not None:
            given[setting.name] = getattr(args, dest)
    return given


def training_configs(args: argparse.Namespace, lists: Sequence[str] = ()) -> list[TrainConfig]:
    """Every run the options describe: one per combination of the values of the fields named in
    `lists` (given as their axes, e.g. --seeds, or their default values), validated."""
    given = given_settings(args)
    check_momentum(given)
    fields = {setting.name: setting for setting in settings()}
    values = []
    for name in lists:
        text = getattr(args, fields[name].metadata["axis"])
        default = fields[name].metadata["values"]
        values.append(parse_axis(fields[name], text) if text is not None else default)
    return [
        TrainConfig(**{**given, **dict(zip(lists, combination, strict=True))})
        for combination in itertools.product(*values)
    ]


def epoch_line(config: TrainConfig, row: dict, seeds: int) -> str:
    """`[ReLU] epoch 3 | train loss .. | test loss .. | acc ..% | 1.9 s`, like the reference."""
    label = ACTIVATIONS[config.activation].label + (f" s{config.seed}" if seeds > 1 else "")
    return (
        f"[{label}] epoch {row['epoch']} | train loss {row['train_loss']:.4f} | "
        f"test loss {row['test_loss']:.4f} | acc {100 * row['test_accuracy']:.2f}% | "
        f"{row['train_seconds']:.1f} s"
    )


def stop_on_signals() -> tuple[threading.Event, dict]:
    """Ctrl-C and SIGTERM set the returned flag (a second Ctrl-C interrupts at once); the previous
    handlers come back with `restore_signals`."""
    stop = threading.Event()

    def handler(signum, frame) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the user insists
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        return stop, {}  # signals reach the main thread only (the API called from a thread)
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    return stop, previous


def restore_signals(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def run_runs(args: argparse.Namespace, configs: list[TrainConfig], out) -> list | None:
    """Load the data once, then train every run (`compare.compare`) with a progress bar.

    Ctrl-C (or SIGTERM) stops training between two steps, never half-way through a record: the
    message says how to resume, and the result is None.
    """
    import torch
    from tqdm import tqdm

    device = resolve_device(configs[0].device)  # a missing GPU is an error before the data loads
    # `train` has no --workers: one run, in this process.
    workers = workers_for(str(device), args.workers) if "workers" in args else 1
    # Each run alone must fit (the executor checks groups and workers): refused before anything
    # is written and before the data loads and is verified (on its registered size).
    memory.check_fits(configs, device)
    out = compare.ensure_writable(out)
    dataset = data.load_dataset(
        configs[0].dataset,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        verify=not args.no_verify,
        report=stderr,
    )
    steps = -(-len(dataset.train_labels) // configs[0].batch_size) * configs[0].epochs
    activations = list(dict.fromkeys(c.activation for c in configs))
    seeds = list(dict.fromkeys(c.seed for c in configs))
    stop, previous = stop_on_signals()
    try:
        with (
            tqdm(
                total=steps * len(configs),
                unit="step",
                disable=None,
                dynamic_ncols=True,
                desc=f"{len(configs)} run(s)",
            ) as bar,
            torch.autograd.set_detect_anomaly(args.detect_anomaly),
        ):
            return compare.compare(
                configs[0],
                activations,
                seeds,
                out,
                dataset,
                on_epoch=lambda c, row: bar.write(epoch_line(c, row, len(seeds))),
                on_steps=bar.update,
                group=not getattr(args, "no_group", False),  # `train` has no --no-group: one run
                resume=args.resume,
                workers=workers,
                stop=stop,
            )
    except KeyboardInterrupt:
        saved = len(list(Path(out).glob("*/" + records.CHECKPOINT)))
        stderr(
            f"vanishing {args.command}: interrupted; {saved} unfinished run(s) in {out} have a "
            "checkpoint (the last epoch end); run the same command with --resume to continue"
        )
        return None
    finally:
        restore_signals(previous)


def cmd_compare(args: argparse.Namespace) -> int:
    results = run_runs(args, training_configs(args, COMPARE_AXES), args.out)
    if results is None:
        return 130
    # The table and the report read back exactly these runs' records.
    run_dirs = [r.run_dir for r in results]
    runs, _ = loading.load_runs(run_dirs)
    rows = summary.summary_rows(runs)
    summary.write_summary_csv(Path(args.out) / "summary.csv", rows)
    print()
    print(summary.format_summary(rows))
    # matplotlib and jinja2 load only when a report is drawn
    from vanishing import reporting as report

    html, _ = report.write_report(run_dirs, Path(args.out) / "report.html")
    print(f"\nruns and summary.csv in {args.out}; report in {html}")
    return 0


def sweep_spec(args: argparse.Namespace):
    """The grid from a preset or TOML file, with the options given on the command line on top."""
    from vanishing.jobs import sweep

    if args.preset and args.config:
        raise UsageError("give either --preset or --config, not both")
    values: dict = {}
    source = "command line"
    if args.preset:
        values, source = sweep.load_preset(args.preset).to_dict(), f"preset {args.preset}"
    elif args.config:
        values, source = sweep.read_toml(args.config), args.config
    for setting in settings():
        axis = setting.metadata["axis"]
        if axis and getattr(args, axis) is not None:
            values[axis] = parse_axis(setting, getattr(args, axis))
    for key in sweep.SHAPE_KEYS:
        if getattr(args, key) is not None:
            values[key] = parse_list(getattr(args, key), int, option(key))
    given = given_settings(args)
    if "hidden" in given:
        values["depths"] = []  # explicit widths replace a preset's depth axis
    for name, value in given.items():
        values[name] = list(value) if name == "hidden" else value
    return sweep.spec_from_dict(values, source)


def cmd_sweep(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vanishing.jobs import sweep

    spec = sweep_spec(args)
    workers = workers_for(spec.device, args.workers, args.backend)  # before the data
    name = args.preset or (Path(args.config).stem if args.config else "grid")
    if args.backend == "local":  # each run alone must fit (run_sweep checks groups, workers)
        memory.check_fits(sweep.expand(spec), resolve_device(spec.device))
    out = compare.ensure_writable(Path(args.out or f"runs/sweep-{name}"))
    data_options = {
        "data_dir": args.data_dir,
        "cache_dir": args.cache_dir,
        "verify": not args.no_verify,
    }
    dataset = None
    if args.backend == "local":  # loaded once, before any run: a data problem stops it here
        dataset = data.load_dataset(spec.dataset, report=stderr, **data_options)
        check_batch_sizes(sweep.expand(spec), dataset)  # before sweep.json is written
    bar = tqdm(total=0, unit="run", disable=None, dynamic_ncols=True, desc="sweep")
    counts = {"ok": 0, "diverged": 0, "failed": 0}
    position = {"done": 0, "total": 0}  # kept here too: the bar is off when stderr is no TTY

    def started(total: int, skipped: int) -> None:
        bar.reset(total=total)
        bar.update(skipped)
        position.update(done=skipped, total=total)
        stderr(f"{total} runs in the grid, {skipped} already finished in {out}")

    def finished(config, run_dir: Path, status: str) -> None:
        counts[status] = counts.get(status, 0) + 1
        result = records.read_json(run_dir / records.RESULT)
        accuracy = result.get("test_accuracy")
        detail = f"acc {100 * accuracy:.2f}%" if accuracy is not None else result.get("error", "")
        bar.update(1)
        position["done"] += 1
        bar.write(f"[{position['done']}/{position['total']}] {run_dir.name}: {status} {detail}")

    # Ctrl-C and SIGTERM only set a flag; the sweep stops at its next check, never half-way
    # through writing a record.
    stop, previous = stop_on_signals()
    try:
        outcome = sweep.run_sweep(
            spec,
            out,
            workers=workers,
            backend=args.backend,
            address=args.address,
            retry_failed=args.retry_failed,
            resume=args.resume,
            data_options=data_options,
            on_start=started,
            on_done=finished,
            dataset=dataset,
            stop=stop,
            group=not args.no_group,
        )
    except KeyboardInterrupt:
        bar.close()
        done = len(list(out.glob("*/" + records.RESULT)))
        stderr(
            f"vanishing sweep: interrupted, {done} run(s) finished in {out}; "
            "run the same command again to resume"
        )
        return 130
    finally:
        restore_signals(previous)
    bar.close()
    print(
        f"{len(outcome.configs)} runs: {outcome.skipped} already done, {outcome.ran} ran now "
        f"({counts['ok']} ok, {counts['diverged']} diverged, {counts['failed']} failed)"
    )
    # matplotlib and scipy load only when a report is drawn
    from vanishing import reporting as report

    html, _ = report.write_report([out], out / "report.html")
    print(f"runs.csv, points.csv and pairs.csv in {out}; report in {html}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    # matplotlib and scipy load only when a report is drawn
    from vanishing import reporting as report

    html, markdown = report.write_report(args.dirs, args.out)
    print(f"report in {html} and {markdown}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    results = run_runs(args, training_configs(args), args.out)
    if results is None:
        return 130
    (result,) = results
    print(
        f"{result.status}: test accuracy {100 * result.test_accuracy:.2f}%, "
        f"test loss {result.test_loss:.4g}; records in {result.run_dir}"
    )
    # scipy loads only when a verdict is read
    from vanishing import reporting as report

    print(f"verdict: {report.headline(result.run_dir)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from vanishing.reporting import export  # tensorboardX loads only when an export is written

    exported = export.export_runs(args.dirs, to=args.to, logdir=args.logdir)
    for note in exported.notes:
        stderr(note)
    print(f"{len(exported.runs)} run(s) written as TensorBoard event files to {exported.logdir}")
    print(f"open them with: tensorboard --logdir {shlex.quote(str(exported.logdir))}")
    return 0


def cmd_live(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0 (any free one) to 65535, got {args.port}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    from vanishing.frontends import live  # starlette and uvicorn load only for the live page

    return live.serve(
        args.dirs,
        args.out,
        host=args.host,
        port=args.port,
        open_browser=not args.no_browser,
        workers=args.workers,
        data_options={
            "data_dir": args.data_dir,
            "cache_dir": args.cache_dir,
            "verify": not args.no_verify,
            "report": stderr,
        },
    )


def build_parser() -> Parser:
    """The whole command tree."""
    parser = Parser(
        prog="vanishing",
        description="See and measure the vanishing-gradient problem: MLPs on MNIST with every "
        "common activation, measured layer by layer.",
    )
    parser.add_argument("--version", action="version", version=f"vanishing {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    data_parser = commands.add_parser(
        "data",
        help="fetch, inspect and verify the data sets",
        description="Fetch, inspect and verify MNIST and Fashion-MNIST.",
    )
    data_commands = data_parser.add_subparsers(
        dest="data_command", metavar="ACTION", parser_class=Parser
    )
    data_commands.required = True
    for action, func, text in (
        ("fetch", cmd_data_fetch, "find or download a data set, verify it and cache it"),
        ("info", cmd_data_info, "where a data set comes from, its sizes, class counts, checksums"),
        ("verify", cmd_data_verify, "print each file's MD5 against the canonical one"),
    ):
        sub = data_commands.add_parser(
            action, help=text, description=text[0].upper() + text[1:] + "."
        )
        add_data_options(sub)
        sub.set_defaults(func=func)

    sub = commands.add_parser(
        "compare",
        help="train the reference MLP with several activations and compare (the main job)",
        description="Train the reference MLP (784-520-320-240-120-10, Adam 1e-3, batch 64, "
        "9 epochs) once per activation and seed, measure gradient flow layer by layer, and print "
        "a summary table. Each run writes config.json, metrics.jsonl and result.json under --out; "
        "summary.csv and report.html (with report.md) go there too.",
    )
    sub.add_argument(
        "--out",
        default="runs/compare",
        metavar="DIR",
        help="where the runs and summary.csv go (default: runs/compare)",
    )
    sub.add_argument(
        "--no-group",
        action="store_true",
        help="train one model at a time (default: on a GPU, runs of one shape train together, "
        "with stacked weights; the CPU trains one model per process, see --workers, which "
        "measured faster there)",
    )
    sub.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="runs trained at once, each in a process of its own, the cores shared out (default: "
        "one per core on the CPU, where a small MLP cannot keep two cores busy; 1 on a GPU)",
    )
    add_training_options(sub, COMPARE_AXES)
    add_run_options(sub)
    sub.set_defaults(func=cmd_compare)

    sub = commands.add_parser(
        "train",
        help="one run with any options",
        description="Train one MLP and write its records (config.json, metrics.jsonl, "
        "result.json) to --out.",
    )
    sub.add_argument(
        "--out",
        default="runs/train",
        metavar="DIR",
        help="records go to DIR/ACTIVATION-seedSEED (default: runs/train)",
    )
    add_training_options(sub)
    add_run_options(sub)
    sub.set_defaults(func=cmd_train)

    sub = commands.add_parser(
        "sweep",
        help="run a grid of settings x seeds, resumable, with statistics",
        description="Expand a grid (every list option's values, e.g. activations x inits x "
        "seeds, and depths x widths) from a preset, a TOML file (--config) and/or the options "
        "below, run every run that has not finished yet, and write runs.csv (one row per run), "
        "points.csv (mean, std and 95 % CI over seeds), pairs.csv (paired tests between "
        "activations) and a report. Interrupted, it resumes where it stopped when run again. "
        "An option given here overrides the preset's or file's value; one given nowhere takes "
        "the default shown.",
    )
    from vanishing.jobs.sweep import preset_names

    sub.add_argument(
        "--preset", metavar="NAME", help=f"a shipped grid: {', '.join(preset_names())}"
    )
    sub.add_argument("--config", metavar="FILE", help="a TOML file with the grid's keys")
    group = sub.add_argument_group("network shapes (instead of --hidden)")
    group.add_argument("--depths", metavar="N,..", help="numbers of hidden layers")
    group.add_argument(
        "--widths", metavar="W,..", help=f"units per layer with --depths (default: {DEFAULT_WIDTH})"
    )
    add_training_options(sub, list(axes()), depth=False)
    group = sub.add_argument_group("execution")
    group.add_argument(
        "--out",
        metavar="DIR",
        help="the sweep directory (default: "
        "runs/sweep-PRESET, runs/sweep-CONFIGNAME or runs/sweep-grid)",
    )
    group.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="local processes, one thread each (default: one per core)",
    )
    group.add_argument(
        "--backend",
        default="local",
        choices=BACKENDS,
        help="local (a process pool) or ray (one task per unit of runs)",
    )
    group.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="Ray cluster address, e.g. auto or HOST:PORT (default: a local one)",
    )
    group.add_argument(
        "--retry-failed", action="store_true", help="also rerun runs that failed or diverged"
    )
    group.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue unfinished runs from their last checkpoint (default); --no-resume "
        "starts them afresh. Finished runs are always kept",
    )
    group.add_argument(
        "--no-group",
        action="store_true",
        help="train one model at a time (default: on a GPU, runs of one shape train together, "
        "with stacked weights; the CPU trains one at a time, where that measured faster)",
    )
    sub.set_defaults(func=cmd_sweep)

    sub = commands.add_parser(
        "report",
        help="redraw the HTML report from run records (no training)",
        description="Write one offline HTML page (and a Markdown twin) with the summary table, "
        "a diagnosis and figures, read from run records only (config.json, metrics.jsonl, "
        "result.json); nothing is retrained.",
    )
    sub.add_argument(
        "dirs",
        nargs="+",
        metavar="RUN_OR_SWEEP_DIR",
        help="a run directory, or any directory with run directories below it",
    )
    sub.add_argument(
        "--out",
        metavar="FILE",
        help="the HTML file; report.md goes beside it (default: report.html in the first DIR)",
    )
    sub.set_defaults(func=cmd_report)

    sub = commands.add_parser(
        "export",
        help="write run records as TensorBoard event files (no training)",
        description="Write the records of runs, compares and sweeps (config.json, "
        "metrics.jsonl) as TensorBoard event files, one directory per run below --logdir: "
        "losses, accuracy, the vanishing ratio, per-layer gradient, signal and weight norms, "
        "dead and saturated fractions, and per-layer activation histograms. The Custom "
        "Scalars tab draws each per-layer measurement of every layer in one chart. Needs "
        "tensorboardX: pip install 'vanishing[tensorboard]'.",
    )
    sub.add_argument(
        "dirs",
        nargs="+",
        metavar="RUN_OR_SWEEP_DIR",
        help="a run directory, or any directory with run directories below it",
    )
    sub.add_argument(
        "--to",
        required=True,
        metavar="FORMAT",
        help="the format to write: tensorboard",
    )
    sub.add_argument(
        "--logdir",
        metavar="DIR",
        help="where the event files go, a directory per run named by its path below "
        "RUN_OR_SWEEP_DIR; an earlier export there is replaced (default: the first "
        "RUN_OR_SWEEP_DIR/tensorboard)",
    )
    sub.set_defaults(func=cmd_export)

    sub = commands.add_parser(
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
    sub.add_argument(
        "--port", type=int, default=8765, help="the port (default: 8765; 0: any free one)"
    )
    sub.add_argument(
        "--no-browser", action="store_true", help="print the URL, do not open a browser"
    )
    sub.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="runs of one job trained at once, each in a process of its own (default: one "
        "per core on the CPU; 1 on a GPU, where runs of one shape train together)",
    )
    add_data_options(sub, dataset=False)
    sub.set_defaults(func=cmd_live)
    return parser


def prog_name(args: argparse.Namespace) -> str:
    """`vanishing COMMAND [ACTION]`, for error lines."""
    return " ".join(
        ["vanishing", args.command] + ([args.data_command] if args.command == "data" else [])
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vanishing` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"{prog_name(args)}: error: {e}", file=sys.stderr)
        return 2
    except records.WriteError as e:  # a full disk: the file is named, no record is left torn
        print(f"{prog_name(args)}: error: {e.strerror}", file=sys.stderr)
        return 2
    except WorkerError as e:  # a worker died, or failed in a way that is not the user's
        print(f"{prog_name(args)}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
