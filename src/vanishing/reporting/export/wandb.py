"""Run records as offline W&B runs (`WandbTarget`): one run directory per run under
DIR/wandb/offline-run-*, as `WANDB_MODE=offline` writes them, for `wandb sync` to upload.

Each run: its label as the display name, config.json as the config, the report's verdict as its
notes, and one history row per step holding every tag of `tags.scalars` at that step (W&B
draws a tag's prefix before "/" as a section: grad_norm/, signal_norm/, ...) and each layer's
activation histogram (`activation/LAYER`). W&B's steps only go forward, so the rows at one step
are merged into one history row. The mode is "offline", set on each run (not read from the
environment): nothing logs in, nothing contacts a server. A run exported again replaces its
earlier offline directory (the same run id, `Run.key`). A data-parallel run's ranks (D/rank{r})
share its group (D's key), with job type "rank" and no verdict of their own in their notes.

wandb starts a service process (wandb-core) for the runs; the export ends it when it is done,
unless a W&B run of the caller's own was active in this process.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

from vanishing.errors import UsageError
from vanishing.reporting.export.tags import row_step, scalars
from vanishing.reporting.export.target import Run, environment
from vanishing.settings.naming import LayerNames

PROJECT = "vanishing"
# Read by wandb when it starts its service (wandb-core inherits them): no error reports sent to
# W&B's servers (`--no-observability`), nothing printed.
ENVIRONMENT = {"WANDB_ERROR_REPORTING": "false", "WANDB_SILENT": "true"}
RUNS = "wandb"  # wandb.init(dir=D) writes its runs to D/wandb


def import_wandb() -> Any:
    """The wandb module; a UsageError saying how to install it when it is missing."""
    try:
        with environment(ENVIRONMENT):
            import wandb
    except ImportError:
        raise UsageError(
            "wandb export needs the optional extra: pip install 'vanishing[wandb]'"
        ) from None
    return wandb


def history(run: Run, wandb: Any) -> list[tuple[int, dict[str, Any]]]:
    """(step, {tag: value}) per step, in step order: every scalar of the rows at that step,
    and each probe's activation histograms as wandb.Histogram."""
    config = run.records.recorded
    steps: dict[int, dict[str, Any]] = {}
    for row in run.records.metrics:
        step = row_step(row)
        if step is None:
            continue
        values = steps.setdefault(step, {})
        values.update(scalars(config, row))
        recorded = row.get("activation_histogram")
        if row.get("kind") == "probe" and isinstance(recorded, list):
            names = LayerNames.of(config).tags("activation", len(recorded))
            for name, h in zip(names, recorded, strict=True):
                if histogram_counts(h):
                    values[f"activation/{name}"] = wandb.Histogram(
                        np_histogram=(h["counts"], h["edges"])
                    )
    return sorted(steps.items())


def histogram_counts(record: Any) -> bool:
    """Whether a recorded histogram is whole: bins + 1 finite edges, counts not all 0 (a
    damaged one is left out, as TensorBoard's export leaves it out)."""
    if not isinstance(record, dict):
        return False
    edges, counts = record.get("edges"), record.get("counts")
    return (
        isinstance(edges, list)
        and isinstance(counts, list)
        and len(edges) == len(counts) + 1
        and all(isinstance(c, int) for c in counts)
        and sum(counts) > 0
        and all(isinstance(e, (int, float)) and math.isfinite(e) for e in edges)
    )


class WandbTarget:
    """Offline W&B runs under `dir`/wandb."""

    def __init__(self, dir: Path) -> None:
        self.wandb = import_wandb()
        self.dir = dir
        self.where = dir / RUNS
        try:
            self.where.mkdir(parents=True, exist_ok=True)
            if not os.access(self.where, os.W_OK):
                raise PermissionError(13, "Permission denied")
        except OSError as e:
            # wandb itself would fall back to a temporary directory, and the runs be lost
            raise UsageError(
                f"cannot write to the W&B directory {self.where}: {e.strerror or e}"
            ) from None
        self.own_service = self.wandb.run is None  # a caller's active run keeps the service

    def write(self, run: Run) -> Path:
        wandb = self.wandb
        for old in self.where.glob(f"offline-run-*-{run.key}"):
            shutil.rmtree(old)
        settings = wandb.Settings(
            silent=True,
            console="off",  # the export's own output is not the run's
            # nothing of the exporting machine (its metrics, hardware, packages): the records
            # were made elsewhere, and their config says where
            x_disable_stats=True,
            x_disable_meta=True,
            x_disable_machine_info=True,
            x_save_requirements=False,
            disable_git=True,
            save_code=False,
        )
        with environment(ENVIRONMENT):
            return self.log(run, settings)

    def log(self, run: Run, settings: Any) -> Path:
        """One run: started offline, its history logged, finished."""
        wandb = self.wandb
        started = wandb.init(
            mode="offline",
            dir=str(self.dir),
            project=PROJECT,
            id=run.key,
            name=run.label,
            notes=run.verdict(),
            config=run.records.recorded,
            tags=[run.records.status],
            # a data-parallel run and its ranks: one group, each rank's job type "rank"
            group=run.group,
            job_type="rank" if run.parent is not None else None,
            settings=settings,
            reinit="create_new",  # leaves any run of the caller's alone
        )
        try:
            for step, values in history(run, wandb):
                started.log(values, step=step)
        finally:
            started.finish(exit_code=1 if run.records.status == "failed" else 0)
        return Path(started.dir).parent

    def close(self) -> None:
        if self.own_service:
            with environment(ENVIRONMENT):
                self.wandb.teardown()

    def written(self, count: int) -> str:
        return f"{count} run(s) written as offline W&B runs to {self.where}"

    def open_with(self) -> str:
        where = shlex.quote(str(self.where))
        return (
            f"upload them with: wandb sync {where}/offline-run-* "
            f"(or view them here: wandb leet {where})"
        )
