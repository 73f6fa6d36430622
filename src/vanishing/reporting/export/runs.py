"""`export_runs`: every run under the directories given, read and skipped as the report reads
them, written to one target (TensorBoard, MLflow or W&B)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vanishing.errors import UsageError, choices_error
from vanishing.reporting.export.target import Run, Target
from vanishing.reporting.loading import RANK_DIR, read_run, run_dirs_under
from vanishing.reporting.results import RunRecords
from vanishing.settings.naming import label

FORMATS = ("tensorboard", "mlflow", "wandb")
# Each target's own options (keyword: its command-line flag, the target it applies to); an
# option given to another target would do nothing, so it is refused.
OPTIONS = {
    "logdir": ("--logdir", "tensorboard"),
    "uri": ("--uri", "mlflow"),
    "experiment": ("--experiment", "mlflow"),
    "wandb_dir": ("--dir", "wandb"),
}


@dataclass
class Exported:
    """What `export_runs` wrote: where, each run's own place there, notes on the runs it
    skipped, and two lines to print (how many went where, how to open them)."""

    to: str
    where: Path | str  # the log directory, the MLflow store's URI, the W&B directory
    runs: list[tuple[Path, Path | str]] = field(default_factory=list)  # (run dir, its place)
    notes: list[str] = field(default_factory=list)
    written: str = ""
    open_with: str = ""


def event_names(dirs: Sequence[Path], found: list[list[Path]]) -> list[str]:
    """Each run's name below the destination: its path below the directory given (a run given
    itself: its name, and its ranks' below it), below that directory's name when several are
    given; a name taken twice is numbered."""
    names = []
    for given, run_dirs in zip(dirs, found, strict=True):
        base = given.resolve().name or "run"
        for run_dir in run_dirs:
            relative = run_dir.relative_to(given).as_posix() if run_dir != given else base
            below = len(dirs) > 1 or given in run_dirs  # a run given itself: its ranks below it
            names.append(f"{base}/{relative}" if below and run_dir != given else relative)
    taken: dict[str, int] = {}
    result = []
    for name in names:
        taken[name] = taken.get(name, 0) + 1
        result.append(name if taken[name] == 1 else f"{name}-{taken[name]}")
    return result


def find_runs(paths: Sequence[Path | str]) -> tuple[list[Path], list[str]]:
    """Every run directory under the given directories (each once), with its name; a
    data-parallel run's ranks (D/rank{r}) each a run of their own, below their run's."""
    found = run_dirs_under(paths, ranks=True)
    return [run for runs in found for run in runs], event_names([Path(p) for p in paths], found)


def combined(run: RunRecords, read: dict[Path, RunRecords]) -> RunRecords | None:
    """The combined run that `run` is a rank of (D/rank{r} of D, its world size and rank as
    `with_ranks` reads them), when D's records were read too; else None."""
    path = Path(run.path).resolve()
    parent = read.get(path.parent)
    if parent is None or run.rank is None or not RANK_DIR.fullmatch(path.name):
        return None
    if (path.name, run.world_size) != (f"rank{run.rank}", parent.world_size):
        return None
    if run.world_size < 2 or parent.rank is not None:
        return None
    return parent


def open_target(
    to: str,
    first: Path,
    logdir: Path | str | None,
    uri: str | None,
    experiment: str | None,
    wandb_dir: Path | str | None,
) -> Target:
    """The target `to`, opened with its options (the others refused by `export_runs`); each
    target's library is imported here, only when its export is written."""
    if to == "mlflow":
        from vanishing.reporting.export.mlflow import MLflowTarget

        return MLflowTarget.open(first, uri, experiment)
    if to == "wandb":
        from vanishing.reporting.export.wandb import WandbTarget

        return WandbTarget(Path(wandb_dir) if wandb_dir is not None else first)
    from vanishing.reporting.export.tensorboard import LOGDIR, TensorBoardTarget

    return TensorBoardTarget(Path(logdir) if logdir is not None else first / LOGDIR)


def export_runs(
    dirs: Sequence[Path | str],
    to: str = "tensorboard",
    logdir: Path | str | None = None,
    *,
    uri: str | None = None,
    experiment: str | None = None,
    wandb_dir: Path | str | None = None,
) -> Exported:
    """Write the records of every run under `dirs` (a run, a compare, a sweep, a watch run) to
    one target, each run once, a run whose records cannot be used skipped with a note:

    - "tensorboard": event files, a directory per run under `logdir` (default DIR/tensorboard
      of the first DIR), named by the run directory's path below DIR;
    - "mlflow": an MLflow run per run, in experiment `experiment` (default "vanishing") of the
      local store `uri` (default sqlite:///DIR/mlflow.db);
    - "wandb": an offline W&B run per run, under `wandb_dir`/wandb (default DIR/wandb), for
      `wandb sync`.
    """
    if to not in FORMATS:
        raise choices_error("export format", to, FORMATS)
    if not dirs:
        raise UsageError("give at least one directory of runs")
    given = {"logdir": logdir, "uri": uri, "experiment": experiment, "wandb_dir": wandb_dir}
    for key, value in given.items():
        flag, applies = OPTIONS[key]
        if value is not None and applies != to:
            raise UsageError(f"{flag} applies to --to {applies} only")
    run_dirs, names = find_runs(dirs)
    target = open_target(to, Path(dirs[0]), logdir, uri, experiment, wandb_dir)
    exported = Exported(to, target.where)
    try:
        read = []
        for run_dir, name in zip(run_dirs, names, strict=True):
            run = read_run(run_dir, failed=True)  # the report's reader; a failed run's rows too
            if isinstance(run, RunRecords):
                read.append((run, name))
            else:
                exported.notes.append(run)
        configs = [run.config for run, _ in read]
        paths = {Path(run.path).resolve(): run for run, _ in read}
        parents = {id(run): combined(run, paths) for run, _ in read}
        counts: dict[int, int] = {}
        for parent in parents.values():
            if parent is not None:
                counts[id(parent)] = counts.get(id(parent), 0) + 1
        made: dict[int, Run] = {}
        for run, name in read:
            others = [c for c in configs if c is not run.config]
            parent = parents[id(run)]
            made[id(run)] = Run(
                run,
                name,
                label(run.config, others),
                parent=made.get(id(parent)) if parent is not None else None,
                ranks=counts.get(id(run), 0),
            )
            place = target.write(made[id(run)])
            exported.runs.append((run.path, place))
    finally:
        target.close()
    exported.written = target.written(len(exported.runs))
    exported.open_with = target.open_with()
    return exported
