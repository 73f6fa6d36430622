"""A data-parallel run's ranks as the report and the live page show them: one table, a row for
the combined run and one per rank (each at its last probe: the signal at the first and the last
activation layer, the dead or saturated share), and what it means (`ranks_note`)."""

from __future__ import annotations

from typing import Any

from vanishing import stats
from vanishing.model.activations import ACTIVATIONS
from vanishing.reporting.formats import MISSING, NOT_APPLICABLE, Table, fixed, scientific
from vanishing.reporting.results import RunRecords, numbers

COMBINED = "all (global batch)"  # the combined run's row


def ranks_note(run: RunRecords) -> str:
    """What the per-rank table shows, and what it does not: the weight gradients."""
    averaged = (
        "reduce-scattered (each rank holds the averaged shard of its weights)"
        if run.config.get("parallel") == "fsdp2"
        else "all-reduced"
    )
    return (
        f"Weight gradients are {averaged} over the {run.world_size} processes: once averaged "
        "they are the same on every rank, so each rank's are the combined run's. "
        "The back-propagated signals and the unit statistics are each rank's own, measured on "
        "its own batch; the combined run's are over the global batch (its signal is the job's "
        "loss's, sqrt(Σ s_r²) / W; a unit is dead there when dead on every rank), and the "
        "verdicts read the combined run."
    )


def last_probe(run: RunRecords) -> dict[str, Any] | None:
    """The run's last probe row that measured signals; None when it has none."""
    rows = [row for row in run.rows("probe") if row.get("signal_norms") is not None]
    return rows[-1] if rows else None


def rank_cells(name: str, run: RunRecords, rectifier: bool) -> tuple[str, ...]:
    """One row of the table: the run's last probe's step, its signal at the first and the last
    activation layer, and its dead (rectifiers) or saturated share of units."""
    row = last_probe(run)
    if row is None:
        return (name, MISSING, MISSING, MISSING, MISSING, MISSING)
    signals = numbers(row["signal_norms"])
    widths = run.config.get("hidden") or []
    dead = stats.percent_of_units(row.get("dead_fraction"), widths)
    saturated = stats.percent_of_units(row.get("saturated_fraction"), widths)
    return (
        name,
        str(row["step"]),
        scientific(float(signals[0])) if signals.size else MISSING,
        scientific(float(signals[-1])) if signals.size else MISSING,
        fixed(dead, 1) if rectifier else NOT_APPLICABLE,
        NOT_APPLICABLE if rectifier else fixed(saturated, 1),
    )


def rank_table(run: RunRecords) -> Table | None:
    """The combined run and each of its ranks at their last probe; None for a run without
    ranks."""
    if not run.ranks:
        return None
    row = last_probe(run)
    count = numbers(row["signal_norms"]).size if row is not None else 0
    names = run.names
    first, last = names.hidden(1), names.hidden(max(count, 1))
    activation = ACTIVATIONS.get(str(run.config.get("activation")))
    rectifier = activation is not None and activation.family == "rectifier"
    header = ("rank", "step", f"signal at {first}", f"signal at {last}", "dead %", "saturated %")
    rows = [rank_cells(COMBINED, run, rectifier)]
    rows += [rank_cells(str(rank.rank), rank, rectifier) for rank in run.ranks]
    return Table(header, tuple(rows), "ranks")
