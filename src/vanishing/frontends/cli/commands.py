"""What each command does: its options (text) parsed by `settings.codec`, one library call (a job
of `vanishing.jobs`, the report, the export, the live server), and what it prints."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vanishing.data import datasets as data
from vanishing.data.adding import DEFAULT_LENGTH
from vanishing.data.adding import SIZES as GENERATED_SIZES
from vanishing.errors import UsageError
from vanishing.executor import check_workers
from vanishing.frontends.cli.parser import grid_given, settings_given
from vanishing.frontends.progress import RunBar, StepBar, shown, stderr
from vanishing.jobs import compare as compare_job
from vanishing.jobs import sweep as sweep_job
from vanishing.jobs import train as train_job
from vanishing.jobs.common import DataOptions
from vanishing.settings import codec, grid


def data_options(args: argparse.Namespace) -> DataOptions:
    """--data-dir, --cache-dir and --no-verify."""
    return DataOptions(data_dir=args.data_dir, cache_dir=args.cache_dir, verify=not args.no_verify)


def workers(args: argparse.Namespace) -> int | None:
    """--workers as a number (its range is the executor's to check); None when not given."""
    return codec.optional_integer("workers", args.workers)


def dataset_names(name: str) -> list[str]:
    """`all` or one validated name."""
    if name == "all":
        return list(data.DATASETS)
    data.get_spec(name)
    return [name]


def generated_line(name: str) -> str:
    """What the data commands say of a generated data set: there is nothing to fetch or check."""
    return (
        f"{name}: generated from fixed seeds when a run needs it "
        f"({GENERATED_SIZES['train']} train + {GENERATED_SIZES['test']} test sequences), "
        "nothing to fetch or verify"
    )


def data_fetch(args: argparse.Namespace) -> int:
    for name in dataset_names(args.dataset):
        if data.get_spec(name).generated:
            print(generated_line(name))
            continue
        start = time.perf_counter()
        dataset = data_options(args).load(name, stderr)
        seconds = time.perf_counter() - start
        status = "verified" if dataset.verified else "NOT verified"
        print(
            f"{name}: {len(dataset.train_labels)} train + {len(dataset.test_labels)} test "
            f"images from {dataset.source}, {status}, {seconds:.2f} s"
        )
    return 0


def data_info(args: argparse.Namespace) -> int:
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
        if spec.generated:
            print_generated(info)
            continue
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


def print_generated(info: dict[str, object]) -> None:
    """`data info` of the adding problem: its shape, its target and the baseline to beat."""
    print(f"{info['dataset']}")
    print("  source     generated from fixed seeds: the adding problem (Hochreiter and "
          "Schmidhuber 1997)")  # fmt: skip
    print(f"  train      {info['train']} sequences of T steps x 2 channels (--length T, "
          f"default {DEFAULT_LENGTH}): numbers in [0, 1), two marked")  # fmt: skip
    print(f"  test       {info['test']} sequences")
    print("  target     the sum of the two marked numbers (a regression: mean squared error; "
          "always answering 1 scores about 0.167)")  # fmt: skip


def data_verify(args: argparse.Namespace) -> int:
    failed = 0
    for name in dataset_names(args.dataset):
        spec = data.get_spec(name)
        if spec.generated:
            print(generated_line(name))
            continue
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


def train(args: argparse.Namespace) -> int:
    config = codec.config(settings_given(args))
    progress = StepBar([config])
    with shown(progress) as stop:
        _, result = train_job.train(
            config,
            args.out,
            resume=args.resume,
            detect_anomaly=args.detect_anomaly,
            data=data_options(args),
            progress=progress,
            stop=stop,
        )
    if result.test_accuracy is None:  # a regression: its loss against the baseline's
        score = (
            f"test mean squared error {result.test_loss:.4g} (always answering 1: "
            f"{result.baseline_loss:.3g})"
        )
    else:
        score = f"test accuracy {100 * result.test_accuracy:.2f}%, test loss {result.test_loss:.4g}"
    print(f"{result.status}: {score}; records in {result.run_dir}")
    # scipy loads only when a verdict is read
    from vanishing import reporting as report

    print(f"verdict: {report.headline(result.run_dir)}")
    return 0


def compare(args: argparse.Namespace) -> int:
    configs = codec.configs(settings_given(args, compare_job.AXES), compare_job.AXES)
    progress = StepBar(configs)
    with shown(progress) as stop:
        outcome = compare_job.compare(
            configs,
            args.out,
            workers=workers(args),
            group=not args.no_group,
            resume=args.resume,
            detect_anomaly=args.detect_anomaly,
            data=data_options(args),
            progress=progress,
            stop=stop,
        )
    print()
    print(outcome.table)
    print(f"\nruns and summary.csv in {args.out}; report in {outcome.report}")
    return 0


def sweep(args: argparse.Namespace) -> int:
    spec, name = grid.spec_of(args.preset, args.config, grid_given(args))
    out = Path(args.out) if args.out else sweep_job.default_out(name)
    progress = RunBar(out)
    with shown(progress) as stop:
        outcome = sweep_job.sweep(
            spec,
            out,
            workers=workers(args),
            backend=args.backend,
            address=args.address,
            retry_failed=args.retry_failed,
            resume=args.resume,
            group=not args.no_group,
            data=data_options(args),
            progress=progress,
            stop=stop,
        )
    counts = {status: list(outcome.statuses.values()).count(status) for status in
              ("ok", "diverged", "failed")}  # fmt: skip
    print(
        f"{len(outcome.runs)} runs: {outcome.skipped} already done, {outcome.ran} ran now "
        f"({counts['ok']} ok, {counts['diverged']} diverged, {counts['failed']} failed)"
    )
    print(f"runs.csv, points.csv and pairs.csv in {out}; report in {outcome.report}")
    return 0


def report(args: argparse.Namespace) -> int:
    # matplotlib and scipy load only when a report is drawn
    from vanishing import reporting

    html, markdown = reporting.write_report(args.dirs, args.out, note=stderr)
    print(f"report in {html} and {markdown}")
    return 0


def export(args: argparse.Namespace) -> int:
    # tensorboardX, mlflow and wandb load only when their export is written
    from vanishing.reporting import export

    exported = export.export_runs(
        args.dirs,
        to=args.to,
        logdir=args.logdir,
        uri=args.uri,
        experiment=args.experiment,
        wandb_dir=args.wandb_dir,
    )
    for note in exported.notes:
        stderr(note)
    print(exported.written)
    print(exported.open_with)
    return 0


def live(args: argparse.Namespace) -> int:
    port = codec.integer("port", args.port)
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0 (any free one) to 65535, got {port}")
    count = workers(args)
    if count is not None:
        check_workers(count)  # the executor's own check
    from vanishing.frontends import live  # starlette and uvicorn load only for the live page

    return live.serve(
        args.dirs,
        args.out,
        host=args.host,
        port=port,
        open_browser=not args.no_browser,
        workers=count,
        data_options={**data_options(args).to_dict(), "report": stderr},
    )


def run(args: argparse.Namespace) -> int:
    """Run the command the parsed options name (`action`, set by `parser.build_parser`)."""
    commands = {
        "data_fetch": data_fetch,
        "data_info": data_info,
        "data_verify": data_verify,
        "train": train,
        "compare": compare,
        "sweep": sweep,
        "report": report,
        "export": export,
        "live": live,
    }
    return commands[args.action](args)
