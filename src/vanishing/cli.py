"""The `vanishing` command line: a thin layer that parses options and calls the library."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from vanishing import compare, data, pool, records
from vanishing.activations import ACTIVATIONS, PRELU_MODES
from vanishing.config import TrainConfig
from vanishing.devices import DEVICES, resolve_device
from vanishing.errors import UsageError
from vanishing.model import INIT_ALIASES, INITS, OPTIMIZERS, hidden_widths, parse_hidden


class Parser(argparse.ArgumentParser):
    """argparse, but a wrong input is one line on stderr and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def stderr(message: str) -> None:
    """Progress and provenance go to stderr, so stdout stays clean for tables."""
    print(message, file=sys.stderr, flush=True)


def add_data_options(
    parser: argparse.ArgumentParser, all_datasets: bool = False, dataset: str | None = "mnist"
) -> None:
    """--dataset, --data-dir, --cache-dir, --no-verify: shared by every command that loads data."""
    names = list(data.DATASETS) + (["all"] if all_datasets else [])
    parser.add_argument(
        "--dataset",
        default=dataset,
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


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Model, optimizer and probe options shared by `train` and `compare`."""
    d = TrainConfig()
    group = parser.add_argument_group("model")
    group.add_argument(
        "--hidden",
        metavar="W1,W2,..",
        help="hidden widths, input side first "
        f"(default: {','.join(map(str, d.hidden))}, the reference MLP)",
    )
    group.add_argument(
        "--depth",
        type=int,
        metavar="N",
        help="N hidden layers of --width units (instead of --hidden)",
    )
    group.add_argument(
        "--width", type=int, metavar="W", help="units per layer with --depth (default: 256)"
    )
    inits = list(INITS) + list(INIT_ALIASES)
    group.add_argument(
        "--init",
        default=d.init,
        metavar="NAME",
        help=f"weight init: {', '.join(inits)} (default: {d.init}, PyTorch's own)",
    )
    group.add_argument(
        "--negative-slope",
        type=float,
        default=d.negative_slope,
        metavar="A",
        help=f"leaky_relu's slope for z < 0 (default: {d.negative_slope})",
    )
    group.add_argument(
        "--prelu-mode",
        default=d.prelu_mode,
        metavar="MODE",
        help=f"PReLU slopes: {' or '.join(PRELU_MODES)} (default: {d.prelu_mode})",
    )
    group = parser.add_argument_group("optimisation")
    group.add_argument(
        "--optimizer",
        default=d.optimizer,
        metavar="NAME",
        help=f"{', '.join(OPTIMIZERS)} (default: {d.optimizer}, betas 0.9/0.999, eps 1e-8)",
    )
    group.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default: {d.lr})")
    group.add_argument(
        "--momentum", type=float, metavar="M", help="SGD momentum (default: 0; sgd only)"
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        metavar="N",
        help=f"samples per step (default: {d.batch_size})",
    )
    group.add_argument(
        "--epochs",
        type=int,
        default=d.epochs,
        metavar="N",
        help=f"passes over the training set (default: {d.epochs})",
    )
    group.add_argument(
        "--device",
        default=d.device,
        metavar="NAME",
        help=f"{', '.join(DEVICES)} (default: {d.device}: the GPU when present)",
    )
    group = parser.add_argument_group("measurement")
    group.add_argument(
        "--probe-every",
        type=int,
        default=d.probe_every,
        metavar="K",
        help=f"measure gradient flow every K steps (default: {d.probe_every}, "
        "under 5 %% of training time)",
    )
    group.add_argument(
        "--probe-size",
        type=int,
        default=d.probe_size,
        metavar="N",
        help=f"samples in the fixed probe batch (default: {d.probe_size})",
    )
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


def training_config(args: argparse.Namespace, activation: str, seed: int) -> TrainConfig:
    """The TrainConfig that the options describe."""
    hidden = parse_hidden(args.hidden) if args.hidden is not None else None
    if args.momentum is not None and args.optimizer != "sgd":
        raise UsageError("--momentum applies to --optimizer sgd only")
    return TrainConfig(
        activation=activation,
        hidden=hidden_widths(hidden, args.depth, args.width),
        init=args.init,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum or 0.0,
        batch_size=args.batch_size,
        epochs=args.epochs,
        seed=seed,
        dataset=args.dataset,
        negative_slope=args.negative_slope,
        prelu_mode=args.prelu_mode,
        probe_every=args.probe_every,
        probe_size=args.probe_size,
        device=args.device,
    )


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

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    return stop, previous


def restore_signals(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def run_runs(
    args: argparse.Namespace, activations: list[str], seeds: list[int], out
) -> list | None:
    """Validate everything, load the data once, then train every (activation, seed) with a bar.

    Ctrl-C (or SIGTERM) stops training between two steps, never half-way through a record: the
    message says how to resume, and the result is None.
    """
    import torch
    from tqdm import tqdm

    configs = [training_config(args, a, s) for a in activations for s in seeds]  # validates all
    device = resolve_device(configs[0].device)  # a missing GPU is an error before the data loads
    # `train` has no --workers: one run, in this process.
    workers = pool.workers_for(str(device), args.workers) if "workers" in args else 1
    out = compare.ensure_writable(out)
    dataset = data.load_dataset(
        args.dataset,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        verify=not args.no_verify,
        report=stderr,
    )
    steps = -(-len(dataset.train_labels) // configs[0].batch_size) * configs[0].epochs
    stop, previous = stop_on_signals()

    def on_steps(count: int) -> None:
        if stop.is_set():  # between two steps: every record so far is whole
            raise KeyboardInterrupt
        bar.update(count)

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
                on_steps=on_steps,
                group=not getattr(args, "no_group", False),  # `train` has no --no-group: one run
                resume=args.resume,
                workers=workers,
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
    activations, seeds = parse_names(args.activations), parse_seeds(args.seeds)
    results = run_runs(args, activations, seeds, args.out)
    if results is None:
        return 130
    rows = compare.summarize(results)
    compare.write_summary_csv(Path(args.out) / "summary.csv", rows)
    print()
    print(compare.format_table(rows))
    # The report reads back exactly these runs' records, after the table is safely printed.
    from vanishing import report  # matplotlib and scipy load only when a report is drawn

    html, _ = report.write_report([r.run_dir for r in results], Path(args.out) / "report.html")
    print(f"\nruns and summary.csv in {args.out}; report in {html}")
    return 0


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


# Sweep options that become grid lists: (option attribute, sweep field, element type).
SWEEP_LISTS = (
    ("activations", "activations", str),
    ("depths", "depths", int),
    ("widths", "widths", int),
    ("hidden", "hidden", int),
    ("inits", "inits", str),
    ("optimizers", "optimizers", str),
    ("lrs", "lrs", float),
    ("seeds", "seeds", int),
)
SWEEP_SCALARS = (
    "epochs",
    "dataset",
    "batch_size",
    "momentum",
    "probe_every",
    "probe_size",
    "device",
)


def sweep_spec(args: argparse.Namespace):
    """The grid from a preset or TOML file, with the options given on the command line on top."""
    from vanishing import sweep

    if args.preset and args.config:
        raise UsageError("give either --preset or --config, not both")
    values: dict = {}
    source = "command line"
    if args.preset:
        values, source = dataclasses.asdict(sweep.load_preset(args.preset)), f"preset {args.preset}"
    elif args.config:
        values, source = sweep.read_toml(args.config), args.config
    for option, name, kind in SWEEP_LISTS:
        text = getattr(args, option)
        if text is not None:
            values[name] = (
                list(ACTIVATIONS)
                if option == "activations" and text == "all"
                else parse_list(text, kind, "--" + option)
            )
    if args.hidden is not None:
        values["depths"] = []  # explicit widths replace a preset's depth axis
    for name in SWEEP_SCALARS:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return sweep.spec_from_dict(values, source)


def cmd_sweep(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vanishing import sweep

    spec = sweep_spec(args)
    workers = sweep.check_workers(spec, args.workers, args.backend)  # before the data loads
    name = args.preset or (Path(args.config).stem if args.config else "grid")
    out = compare.ensure_writable(Path(args.out or f"runs/sweep-{name}"))
    data_options = {
        "data_dir": args.data_dir,
        "cache_dir": args.cache_dir,
        "verify": not args.no_verify,
    }
    dataset = None
    if args.backend == "local":  # loaded once, before any run: a data problem stops it here
        dataset = data.load_dataset(spec.dataset, report=stderr, **data_options)
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
    from vanishing import report  # matplotlib and scipy load only when a report is drawn

    html, _ = report.write_report([out], out / "report.html")
    print(f"runs.csv, points.csv and pairs.csv in {out}; report in {html}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vanishing import report  # matplotlib and scipy load only when a report is drawn

    html, markdown = report.write_report(args.dirs, args.out)
    print(f"report in {html} and {markdown}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    results = run_runs(args, [args.activation], [args.seed], args.out)
    if results is None:
        return 130
    (result,) = results
    print(
        f"{result.status}: test accuracy {100 * result.test_accuracy:.2f}%, "
        f"test loss {result.test_loss:.4f}, vanishing ratio at init "
        f"{result.vanishing_ratio_init:.2e}; records in {result.run_dir}"
    )
    return 0


def build_parser() -> Parser:
    """The whole command tree."""
    parser = Parser(
        prog="vanishing",
        description="See and measure the vanishing-gradient problem: MLPs on MNIST with every "
        "common activation, measured layer by layer.",
    )
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
        add_data_options(sub, all_datasets=True)
        sub.set_defaults(func=func)

    activations = ", ".join(ACTIVATIONS)
    sub = commands.add_parser(
        "compare",
        help="train the reference MLP with several activations and compare (the main job)",
        description="Train the reference MLP (784-520-320-240-120-10, Adam 1e-3, batch 64, "
        "9 epochs) once per activation and seed, measure gradient flow layer by layer, and print "
        "a summary table. Each run writes config.json, metrics.jsonl and result.json under --out; "
        "summary.csv and report.html (with report.md) go there too.",
    )
    sub.add_argument(
        "--activations",
        default=",".join(compare.DEFAULT_ACTIVATIONS),
        metavar="A,B,..",
        help=f"comma-separated, or 'all': {activations} "
        f"(default: {','.join(compare.DEFAULT_ACTIVATIONS)})",
    )
    sub.add_argument(
        "--seeds",
        default=",".join(map(str, compare.DEFAULT_SEEDS)),
        metavar="S1,S2,..",
        help="one run per seed (default: 0,1,2)",
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
    add_training_options(sub)
    add_data_options(sub)
    sub.set_defaults(func=cmd_compare)

    sub = commands.add_parser(
        "train",
        help="one run with any options",
        description="Train one MLP and write its records (config.json, metrics.jsonl, "
        "result.json) to --out.",
    )
    sub.add_argument(
        "--activation",
        default=TrainConfig.activation,
        metavar="NAME",
        help=f"{activations} (default: {TrainConfig.activation})",
    )
    sub.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sub.add_argument(
        "--out",
        default="runs/train",
        metavar="DIR",
        help="records go to DIR/ACTIVATION-seedSEED (default: runs/train)",
    )
    add_training_options(sub)
    add_data_options(sub)
    sub.set_defaults(func=cmd_train)

    sub = commands.add_parser(
        "sweep",
        help="run a grid of settings x seeds, resumable, with statistics",
        description="Expand a grid (activations x depths x widths x inits x optimizers x lrs x "
        "seeds) from a preset, a TOML file (--config) and/or the options below, run every run "
        "that has not finished yet, and write runs.csv (one row per run), points.csv (mean, std "
        "and 95 % CI over seeds), pairs.csv (paired tests between activations) and a report. "
        "Interrupted, it resumes where it stopped when run again.",
    )
    from vanishing.sweep import BACKENDS, preset_names

    sub.add_argument(
        "--preset", metavar="NAME", help=f"a shipped grid: {', '.join(preset_names())}"
    )
    sub.add_argument("--config", metavar="FILE", help="a TOML file with the grid's keys")
    group = sub.add_argument_group("grid (comma-separated lists; override the preset or file)")
    group.add_argument("--activations", metavar="A,B,..", help=f"{activations}, or 'all'")
    group.add_argument("--depths", metavar="N,..", help="numbers of hidden layers")
    group.add_argument("--widths", metavar="W,..", help="units per layer with --depths (256)")
    group.add_argument("--hidden", metavar="W1,W2,..", help="one fixed shape instead of depths")
    group.add_argument("--inits", metavar="NAME,..", help="weight inits")
    group.add_argument("--optimizers", metavar="NAME,..", help="adam, sgd")
    group.add_argument("--lrs", metavar="LR,..", help="learning rates")
    group.add_argument("--seeds", metavar="S,..", help="seeds (default: 0,1,2)")
    group = sub.add_argument_group("settings shared by every run")
    group.add_argument("--epochs", type=int, metavar="N")
    group.add_argument("--batch-size", type=int, metavar="N")
    group.add_argument("--momentum", type=float, metavar="M", help="for sgd")
    group.add_argument("--probe-every", type=int, metavar="K")
    group.add_argument("--probe-size", type=int, metavar="N")
    group.add_argument("--device", metavar="NAME", help=", ".join(DEVICES))
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
        help="local (a process pool) or ray (one task per run)",
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
    add_data_options(sub, dataset=None)
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
    except pool.ChildError as e:  # a worker died, or failed in a way that is not the user's
        print(f"{prog_name(args)}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
