"""What every export target is given and gives back: a `Run` (its records, its name below the
directory given, its label as the report shows it) and the `Target` protocol."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vanishing.reporting.results import RunRecords


@dataclass(frozen=True)
class Run:
    """One run to export."""

    records: RunRecords
    name: str  # its path below the directory given: TensorBoard's directory, a tag elsewhere
    label: str  # as the report and the page label it: MLflow's run name, W&B's display name
    # A data-parallel run's rank (D/rank{r}, exported after D): D's run, of which it is a child
    # (MLflow's parent run, W&B's group) with no verdict of its own; None for any other run.
    parent: Run | None = None
    ranks: int = 0  # how many of its ranks' runs are exported after it (a combined run's)

    @property
    def group(self) -> str | None:
        """The key of the combined run that a data-parallel run and its ranks share (W&B's
        group); None for a run without ranks."""
        if self.parent is not None:
            return self.parent.key
        return self.key if self.ranks else None

    @property
    def key(self) -> str:
        """The same 16 hex digits at every export of this run directory (its resolved path's
        SHA-256): how a later export finds the MLflow run or W&B offline run it replaces."""
        path = str(Path(self.records.path).resolve())
        return hashlib.sha256(path.encode()).hexdigest()[:16]

    def verdict(self) -> str:
        """The report's headline verdict of this run alone; a failed run (which the report
        leaves out) has none, and says why; a rank's run has none either: the verdict is its
        combined run's."""
        from vanishing.reporting.loading import cut
        from vanishing.reporting.verdict.judging import headline

        if self.parent is not None:
            rank, size = self.records.rank, self.records.world_size
            return (
                f"rank {rank} of {size} of {self.parent.label}: its own signals and unit "
                "statistics; the verdict is the run's"
            )
        if self.records.status == "failed":
            error = (self.records.result or {}).get("error")
            return f"The run failed ({cut(str(error))}): no verdict."
        return headline([self.records])


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """The environment variables `values` set while a target's library is imported and called
    (what it reads to stay off the network), then put back as they were."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Target(Protocol):
    """An open export destination: one `write` per run, then `close`."""

    @property
    def where(self) -> Path | str:
        """The log directory, the MLflow store's URI, the W&B directory."""
        ...

    def write(self, run: Run) -> Path | str:
        """Export one run; where it went (its event directory, MLflow run id, offline run)."""
        ...

    def close(self) -> None:
        """Release what the export held (W&B's service process)."""
        ...

    def written(self, count: int) -> str:
        """One line: how many runs went where."""
        ...

    def open_with(self) -> str:
        """One line: the command that shows them."""
        ...
