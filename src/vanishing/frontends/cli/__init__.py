"""The `vanishing` command line: an adapter that parses options (`parser`), calls the library
(`commands`: a job of `vanishing.jobs`, the report, the export, the live server) and turns what
goes wrong into one line and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vanishing import records
from vanishing.errors import UsageError
from vanishing.executor import WorkerError
from vanishing.frontends.cli import commands
from vanishing.frontends.cli.parser import build_parser
from vanishing.jobs.common import Interrupted


def prog_name(args: argparse.Namespace) -> str:
    """`vanishing COMMAND [ACTION]`, for error lines."""
    return " ".join(
        ["vanishing", args.command] + ([args.data_command] if args.command == "data" else [])
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vanishing` console script."""
    args = build_parser().parse_args(argv)
    try:
        return commands.run(args)
    except UsageError as e:
        print(f"{prog_name(args)}: error: {e}", file=sys.stderr)
        return 2
    except records.WriteError as e:  # a full disk: the file is named, no record is left torn
        print(f"{prog_name(args)}: error: {e.strerror}", file=sys.stderr)
        return 2
    except WorkerError as e:  # a worker died, or failed in a way that is not the user's
        print(f"{prog_name(args)}: error: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:  # stopped between two steps: what was kept, and how to go on
        print(f"{prog_name(args)}: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
