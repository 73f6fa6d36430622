"""Finding run directories and reading their records (`RunRecords`), with a note for each one that
cannot be used. A data-parallel watched run (SPEC23: config.json's "world_size" W) may hold a run
directory per rank, D/rank0 .. D/rank{W-1}, each with its config's "rank": those are ranks of
D's run (`with_ranks` attaches them), never runs or seeds of their own; D/rank1 given alone is
read as a run ("rank 1 of 2" in its label)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vanishing import records
from vanishing.errors import UsageError
from vanishing.model.activations import ACTIVATIONS
from vanishing.reporting.results import RunRecords
from vanishing.settings import codec
from vanishing.settings.config import completed
from vanishing.settings.naming import rank_of, watched, world_size

RANK_DIR = re.compile(r"rank(\d+)")  # a data-parallel run's rank directory: D/rank{r}
RANKS = ("one", "all")  # config.json's "ranks": which processes wrote records


def find_run_dirs(path: Path) -> list[Path]:
    """`path` itself when it is a run directory, else every run directory below it."""
    if (path / records.CONFIG).is_file():
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        if records.CONFIG in files:
            found.append(Path(root))
            dirs.clear()  # a run directory holds no runs
        dirs.sort()
    return sorted(found)


# A regression's test_accuracy is null, as a diverged run's is: read as missing alike.
RESULT_NUMBERS = ("test_accuracy", "test_loss", "vanishing_ratio_init", "train_seconds",
                  "eval_seconds", "probe_seconds", "baseline_loss")  # fmt: skip
TASKS = ("classification", "regression")  # result.json's `task`; older records have none
RESULT_COUNTS = ("steps", "diverged_step", "clipped_steps")
# A watched model's config.json (`measure.watch.rows`): the keys the readers index into, each a
# list of layer names; its other values (the model's name, the optimizer's, a user's own
# `settings=`) are shown as they are.
WATCHED_NAMES = ("layers", "activation_layers", "activation_kinds", "layer_labels",
                 "recurrent_layers", "sequence_layers")  # fmt: skip


def is_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(name, str) for name in value)


def config_problem(config: Any, measured: bool = True) -> str | None:
    """Why a config.json (with the settings it predates filled in, or as written) cannot be read
    as a run's settings, None when it can: a trained run's is checked as any config given to
    the tool (`codec.recorded`; a key it does not know holds one value, as a setting does), a
    watched model's key by key. Without `measured`, a watched model without an activation
    module vanishing measures passes (the live page streams its gradients)."""
    if not isinstance(config, dict):
        return "config.json holds no settings"
    problem = distributed_problem(config)
    if problem is not None:
        return problem
    name = config.get("activation")
    if watched(config):
        if measured and (name is None or (isinstance(name, str) and name not in ACTIVATIONS)):
            return (
                "the watched model has no activation module vanishing measures "
                f"(activation {shown(name)} in config.json)"
            )
        if name is not None and not isinstance(name, str):
            return f"config.json: activation holds {shown(name)}"
        for key in WATCHED_NAMES:
            if key in config and not is_names(config[key]):
                return f"config.json: {key} holds {shown(config[key])}"
        tied = config.get("tied", {})
        if not isinstance(tied, dict) or not all(is_names(names) for names in tied.values()):
            return f"config.json: tied holds {shown(tied)}"
        hidden = config.get("hidden")
        if not isinstance(hidden, list) or not all(
            isinstance(w, int) and not isinstance(w, bool) for w in hidden
        ):
            return "config.json has no list of hidden widths"
        return None
    if isinstance(name, str) and name not in ACTIVATIONS:
        return f"unknown activation {shown(name)} in config.json"
    missing = [key for key in ("activation", "hidden") if key not in config]
    if missing:  # the others read as their defaults (a hand-written record may leave them out)
        return f"config.json lacks {' and '.join(missing)}"
    try:
        codec.recorded(config)
    except UsageError as e:
        return f"config.json: {cut(str(e))}"
    known = codec.known_keys()
    for key, value in config.items():
        if key not in known and not isinstance(value, (str, int, float, bool, type(None))):
            return f"config.json: {named(key)} holds {shown(value)}, not one value"
    return None


def distributed_problem(config: dict[str, Any]) -> str | None:
    """Why a config's data-parallel keys (SPEC23: "world_size", "rank", "ranks") cannot be read,
    None when they can or it has none (one process)."""
    for key, fits in (
        ("world_size", lambda size: world_size({"world_size": size}) == size),
        ("rank", lambda rank: rank is not None and rank_of({**config, "rank": rank}) == rank),
        ("ranks", lambda ranks: ranks in RANKS),
    ):
        if key in config and not fits(config[key]):
            return f"config.json: {key} holds {shown(config[key])}"
    return None


def shown(value: Any, limit: int = 60) -> str:
    """A record's value as a note shows it: its repr, cut to `limit` characters."""
    return cut(repr(value), limit)


def named(key: str) -> str:
    """A record's key as a note names it: as it is, or quoted with its escapes where it holds a
    character that is not printable (a line separator would split the note's one line)."""
    return cut(key, 60) if key.isprintable() else shown(key)


def cut(text: str, limit: int = 200) -> str:
    """A note's text cut to `limit` characters (a damaged record may hold a value of any size)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def checked_result(result: Any, failed: bool, complete: bool = True) -> dict[str, Any] | str:
    """result.json as the readers take it, or why it cannot be used. Its shape is checked (a
    table with a known status and its run's config); a value of the wrong type inside (a damaged
    or hand-edited number, a per-layer list, a history row) reads as missing (None), as
    `results.numbers` reads a damaged item of a list. Without `complete`, the fields of a
    finished run may be missing (the live list needs the status alone)."""
    if not isinstance(result, dict):
        return "result.json holds no result"
    status = result.get("status")
    if status not in records.STATUSES:
        known = ", ".join(records.STATUSES)
        return f"result.json has an unknown status {shown(status)} (known: {known})"
    if "config" in result and not isinstance(result["config"], dict):
        return f"result.json: config holds {shown(result['config'])}"
    if status == "failed" and not failed:  # it measured nothing to report
        return f"the run failed ({cut(str(result.get('error')))})"
    finished = not (failed and status == "failed")  # a failed run's result holds its error
    if complete and finished and not all(key in result for key in records.REQUIRED_FIELDS):
        return "result.json lacks fields of a finished run"
    result = dict(result)
    for key in RESULT_NUMBERS:
        if not is_number(result.get(key)):
            result[key] = None
    for key in RESULT_COUNTS:
        if not is_count(result.get(key)):
            result[key] = None
    for key in LAYER_FIELDS:
        if key in result and not isinstance(result[key], list):
            result[key] = None
    if "task" in result and result["task"] not in TASKS:
        result["task"] = None  # read by its data set, as an older record's
    history = result.get("history")
    result["history"] = [
        row
        for row in (history if isinstance(history, list) else [])
        if isinstance(row, dict) and is_count(row.get("epoch"))
    ]
    for key, kind in (("norms_before_divergence", dict), ("versions", dict), ("error", str)):
        if key in result and result[key] is not None and not isinstance(result[key], kind):
            result[key] = None
    if not isinstance(result.get("device", ""), str):
        result["device"] = None
    return result


# result.json's per-layer lists (a recurrent run's per recurrent layer)
LAYER_FIELDS = ("grad_norms_init", "signal_norms_init", "grad_norms_final",
                "saturated_fraction", "dead_fraction", "time_signal_norms_init",
                "time_signal_norms_final", "time_layers", "gates_init", "gates_final")  # fmt: skip
# A probe row's time profile (`measure.time`): each key's check of its shape, one item per
# recurrent layer; a key of another shape is dropped from its row (the report reads the row
# without it, as an MLP's).
TIME_KEYS = {
    "time_signal_norms": lambda item: isinstance(item, list),
    "time_layers": lambda item: isinstance(item, str),
    "gates": lambda item: isinstance(item, dict),
    "gates_saturated": lambda item: isinstance(item, dict),
    "recurrent_norms": lambda item: item is None or is_number(item),
}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_count(value: Any) -> bool:
    """A step, an epoch: a whole number >= 0 that fits a 64-bit integer (as event files keep)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def usable_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The metrics rows the readers can place: a probe at a step, an epoch end at an epoch
    (a damaged row without its place is dropped); an activation histogram that is not a list of
    {edges, counts} lists is dropped from its row."""
    usable = []
    for row in rows:
        kind = row.get("kind")
        if not (
            (kind == "probe" and is_count(row.get("step")))
            or (kind == "epoch" and is_count(row.get("epoch")) and is_count(row.get("step", 0)))
        ):
            continue
        damaged = [
            key
            for key, fits in TIME_KEYS.items()
            if key in row and not (isinstance(row[key], list) and all(map(fits, row[key])))
        ]
        if damaged:
            row = {key: value for key, value in row.items() if key not in damaged}
        histogram = row.get("activation_histogram")
        if histogram is not None and not (
            isinstance(histogram, list)
            and all(
                isinstance(h, dict)
                and isinstance(h.get("edges"), list)
                and isinstance(h.get("counts"), list)
                for h in histogram
            )
        ):
            row = {key: value for key, value in row.items() if key != "activation_histogram"}
        usable.append(row)
    return usable


def read_record(run_dir: Path, name: str) -> Any:
    """A JSON record of the run (`records.read_json`); why it cannot be read is a ValueError
    that names it: `config.json: not UTF-8 text`."""
    try:
        return records.read_json(run_dir / name)
    except OSError as e:
        raise ValueError(f"{name}: cannot read ({e.strerror or e})") from None
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def read_run(path: Path, failed: bool = False, metrics: bool = True) -> RunRecords | str:
    """The run's records, or a note saying why they cannot be used. With `failed`, a run that
    raised counts as finished too (its result.json holds its error, no measurements; the tables
    count it), and one that failed before it wrote config.json (a sweep records it with
    result.json alone) has its result's config. Without `metrics`, metrics.jsonl is not read
    (the tables need only config.json and result.json)."""
    complete = records.is_complete(path)  # once: a run may finish while it is read
    try:
        result = read_record(path, records.RESULT) if complete else None
        source = records.CONFIG
        if failed and isinstance(result, dict) and not (path / records.CONFIG).exists():
            config, source = result.get("config"), f"{records.RESULT}'s config"
        else:
            config = read_record(path, records.CONFIG)
        try:
            rows = records.read_metrics(path) if metrics else []
        except OSError as e:
            raise ValueError(f"{records.METRICS}: cannot read ({e.strerror or e})") from None
        except ValueError as e:
            raise ValueError(f"{records.METRICS}: {e}") from None
    except ValueError as e:
        return f"{path}: {e}; skipped"
    filled: tuple[str, ...] = ()
    if isinstance(config, dict) and not watched(config):
        full = completed(config)  # an older run reads as the settings' defaults
        filled = tuple(key for key in full if key not in config)
        config = full
    problem = config_problem(config)
    if problem is not None or not isinstance(config, dict):
        return f"{path}: {str(problem).replace(records.CONFIG, source, 1)}; skipped"
    if complete:
        result = checked_result(result, failed)
        if isinstance(result, str):
            return f"{path}: {result}; skipped"
    return RunRecords(path, config, usable_rows(rows), result, filled)


def rank_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """The rank directories in a run directory (rank0, rank1, ... holding a config.json, of any
    kind: one that is not a file is `read_run`'s to refuse, with a note), by rank."""
    try:
        children = list(run_dir.iterdir())
    except OSError:
        return []
    found = []
    for child in children:
        match = RANK_DIR.fullmatch(child.name)
        if (
            match
            and len(match.group(1)) < 10
            and not child.is_symlink()  # records are never links: one could lead anywhere
            and os.path.lexists(child / records.CONFIG)
        ):
            found.append((int(match.group(1)), child))
    return sorted(found)


def with_ranks(
    run: RunRecords, failed: bool = False, metrics: bool = True, expected: bool = True
) -> tuple[RunRecords, list[str]]:
    """The run with its ranks' runs attached (`RunRecords.ranks`, by rank): each rank directory
    in it whose records read (`read_run`) as that rank of the run's world size; a note for each
    one that does not (skipped), and with `expected` (not while it trains: a rank's first row
    may come after the run's) for each rank a run with ranks="all" lacks."""
    if rank_of(run.config) is not None:  # a rank's own run, read alone: it holds no ranks
        return run, []
    size = world_size(run.config)
    ranks: list[RunRecords] = []
    notes: list[str] = []
    found = rank_dirs(run.path)
    for number, path in found:
        rank = read_run(path, failed, metrics)
        if isinstance(rank, str):
            notes.append(rank)
        elif (rank_of(rank.config), world_size(rank.config)) != (number, size) or size == 1:
            said = (
                f"rank {rank_of(rank.config)} of {world_size(rank.config)}"
                if rank_of(rank.config) is not None
                else "no rank"
            )
            whole = f"{size} processes" if size > 1 else "one process"
            notes.append(
                f"{path}: config.json says {said}, not rank {number} of {run.path}'s run "
                f"({whole}); skipped"
            )
        else:
            ranks.append(rank)
    if expected and run.config.get("ranks") == "all":
        there = {number for number, _ in found}
        missing = [r for r in range(size) if r not in there]
        if missing:
            listed = ", ".join(map(str, missing))
            notes.append(
                f"{run.path}: no records of rank {listed} of {size} (written with "
                'ranks="all"); the per-rank table leaves it out'
            )
    return dataclasses.replace(run, ranks=ranks), notes


def run_dirs_under(paths: Sequence[Path | str], ranks: bool = False) -> list[list[Path]]:
    """Per directory given, its run directories that no earlier one holds (each run once, in
    the order given); a rank directory (D/rank{r}) whose run D is among them is read as D's
    rank (`with_ranks`), not again as a run, or with `ranks` (the export's reading: each rank
    its own run, below its run's) listed right after D. A missing directory, or none holding a
    run, is a UsageError."""
    dirs = [Path(given) for given in paths]
    for path in dirs:
        if not path.is_dir():
            raise UsageError(f"no such directory: {path}")
    seen: set[Path] = set()
    found = []
    for path in dirs:
        fresh = [d for d in find_run_dirs(path) if d.resolve() not in seen]
        seen.update(d.resolve() for d in fresh)
        found.append(fresh)
    found = [
        [d for d in fresh if not (RANK_DIR.fullmatch(d.name) and d.parent.resolve() in seen)]
        for fresh in found
    ]
    if ranks:
        found = [[r for d in fresh for r in [d, *(p for _, p in rank_dirs(d))]] for fresh in found]
    if not any(found):
        shown = ", ".join(str(p) for p in paths)
        raise UsageError(f"no run directories (with config.json) under {shown}")
    return found


def load_runs(paths: Sequence[Path | str]) -> tuple[list[RunRecords], list[str]]:
    """Every run under the given directories (deduplicated, in the order given), each with its
    ranks (`with_ranks`), and notes on what was skipped."""
    runs: list[RunRecords] = []
    notes: list[str] = []
    for run_dirs in run_dirs_under(paths):
        for run_dir in run_dirs:
            run = read_run(run_dir)
            if isinstance(run, RunRecords):
                run, skipped = with_ranks(run)
                runs.append(run)
                notes += skipped
            else:
                notes.append(run)
    return runs, notes
