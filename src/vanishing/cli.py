"""The `vanishing` command line: a thin layer that parses options and calls the library."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from vanishing import data
from vanishing.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse, but a wrong input is one line on stderr and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def stderr(message: str) -> None:
    """Progress and provenance go to stderr, so stdout stays clean for tables."""
    print(message, file=sys.stderr, flush=True)


def add_data_options(parser: argparse.ArgumentParser, all_datasets: bool = False) -> None:
    """--dataset, --data-dir, --cache-dir, --no-verify: shared by every command that loads data."""
    names = list(data.DATASETS) + (["all"] if all_datasets else [])
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vanishing` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        prog = " ".join(
            ["vanishing", args.command] + ([args.data_command] if args.command == "data" else [])
        )
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
