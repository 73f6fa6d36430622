"""The Python API, for scripts and notebooks: `train`, `compare`, `sweep` and `report` call the
same jobs as the command line (`vanishing.jobs`) and return what they wrote, read back from the
records.

Each function takes the training settings as keyword arguments named as TrainConfig's fields
(`batch_size=32`; a list under its axis's name for compare and sweep: `seeds=[0, 1]` or
`seeds="0,1"`), parsed by the one settings parser (`settings.codec`), so a wrong value gets the
command line's message (a `UsageError`, which is a `ValueError`). The jobs' own options are
named arguments (`out`, `workers`, `resume`, `group=False` for `--no-group`, `verify=False` for
`--no-verify`, ...). Progress shows on stderr as on the command line; Ctrl-C (a notebook's stop
button) stops a job between two steps and raises `jobs.common.Interrupted` (a
KeyboardInterrupt) saying how to resume.

What they return shows itself in Jupyter: a run as a small table, a compare or a sweep as its
summary table, verdicts and key figure, a report as the page itself, its figures inline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vanishing.jobs.common import DataOptions, Outcome
    from vanishing.records import RunResult
    from vanishing.reporting.render import WrittenReport
    from vanishing.settings.config import TrainConfig


@dataclass(frozen=True)
class Comparison:
    """The runs a compare or a sweep wrote and its report, read back from the records; in a
    notebook, the summary table, each activation's verdict and the key figure."""

    out: Path
    run_dirs: list[Path]
    results: list[RunResult]  # the finished runs' result.json (a sweep's failed runs are not)
    report: WrittenReport

    @property
    def path(self) -> Path:
        return self.out

    def _repr_html_(self) -> str:
        from vanishing.reporting.render import notebook_summary

        return notebook_summary(self.run_dirs, self.report.html_path)


def train(
    config: TrainConfig | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    detect_anomaly: bool = False,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    verify: bool = True,
    **settings: Any,
) -> RunResult:
    """`vanishing train`: one run, from `config` and/or the settings given (those win), its
    records under `out` (default: runs/train) in a directory named by its settings; returns its
    result as written."""
    from vanishing.frontends.progress import StepBar, shown
    from vanishing.jobs import train as job
    from vanishing.settings import codec

    check_names("train", settings, codec.known_keys())
    base = codec.changed(config) if config is not None else {}
    if settings.keys() & {"hidden", *codec.SHAPE_KEYS}:  # the shape given replaces the config's
        base.pop("hidden", None)
    values = {**base, **settings}
    run = codec.config(values)
    progress = StepBar([run])
    with shown(progress) as stop:
        _, result = job.train(
            run,
            job.DEFAULT_OUT if out is None else out,
            resume=resume,
            detect_anomaly=detect_anomaly,
            data=data_options(data_dir, cache_dir, verify),
            progress=progress,
            stop=stop,
        )
    return result


def compare(
    activations: str | Iterable[str] | None = None,
    seeds: str | Iterable[int] | None = None,
    out: str | Path | None = None,
    *,
    workers: int | None = None,
    group: bool = True,
    resume: bool = False,
    detect_anomaly: bool = False,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    verify: bool = True,
    **settings: Any,
) -> Comparison:
    """`vanishing compare`: one run per activation and seed (default: sigmoid, relu, leaky_relu,
    prelu x seeds 0, 1, 2), into `out` (default: runs/compare), with summary.csv and the report;
    `activations="all"` takes every one registered."""
    from vanishing.frontends.progress import StepBar, shown
    from vanishing.jobs import compare as job
    from vanishing.settings import codec

    values = {"activations": listed(activations), "seeds": listed(seeds), **settings}
    check_names("compare", values, codec.known_keys(job.AXES))
    configs = codec.configs(values, job.AXES)
    progress = StepBar(configs)
    with shown(progress) as stop:
        outcome = job.compare(
            configs,
            job.DEFAULT_OUT if out is None else out,
            workers=codec.optional_integer("workers", workers),
            group=group,
            resume=resume,
            detect_anomaly=detect_anomaly,
            data=data_options(data_dir, cache_dir, verify),
            progress=progress,
            stop=stop,
        )
    return comparison(outcome)


def sweep(
    preset: str | None = None,
    config: str | Path | None = None,
    out: str | Path | None = None,
    *,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    retry_failed: bool = False,
    resume: bool = True,
    group: bool = True,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    verify: bool = True,
    **keys: Any,
) -> Comparison:
    """`vanishing sweep`: the grid of a preset, a TOML file (`config`) and/or the keys given
    (`depths=[2, 5]`, `activations=["relu", "sigmoid"]`, `epochs=1`, ...; a key given overrides
    the preset's), every unfinished run of it, its CSVs and report, into `out` (default:
    runs/sweep-PRESET, runs/sweep-CONFIGNAME or runs/sweep-grid)."""
    from vanishing.frontends.progress import RunBar, shown
    from vanishing.jobs import sweep as job
    from vanishing.settings import codec, grid

    keys = {key: listed(value) for key, value in keys.items()}
    check_names("sweep", keys, [k for k in grid.grid_keys() if k != "description"])
    spec, name = grid.spec_of(preset, config, keys, given_source="sweep()")
    where = job.default_out(name) if out is None else Path(out)
    progress = RunBar(where)
    with shown(progress) as stop:
        outcome = job.sweep(
            spec,
            where,
            workers=codec.optional_integer("workers", workers),
            backend=backend,
            address=address,
            retry_failed=retry_failed,
            resume=resume,
            group=group,
            data=data_options(data_dir, cache_dir, verify),
            progress=progress,
            stop=stop,
        )
    return comparison(outcome)


def report(*dirs: str | Path, out: str | Path | None = None) -> WrittenReport:
    """`vanishing report DIR...`: the report of the runs under `dirs`, written to `out`
    (default: report.html in the first one) with report.md beside it; nothing is retrained."""
    from vanishing.reporting import write_report

    return write_report(dirs, out)


def listed(value: Any) -> Any:
    """A list-valued setting as the codec takes it: text as is, any iterable as a list."""
    if value is None or isinstance(value, (str, bytes, Mapping)):
        return value
    return list(value) if isinstance(value, Iterable) else value


def check_names(function: str, given: Mapping[str, Any], known: Iterable[str]) -> None:
    """A keyword the function does not take is a TypeError, as Python's own are."""
    valid = sorted(known)
    for name in given:
        if name not in valid:
            raise TypeError(
                f"{function}() got an unexpected keyword argument {name!r}; valid: "
                f"{', '.join(valid)}"
            )


def data_options(
    data_dir: str | Path | None, cache_dir: str | Path | None, verify: bool
) -> DataOptions:
    from vanishing.jobs.common import DataOptions

    return DataOptions(data_dir=data_dir, cache_dir=cache_dir, verify=verify)


def comparison(outcome: Outcome) -> Comparison:
    """A compare's or sweep's Comparison: its runs' results and the report it wrote."""
    from vanishing.reporting.render import WrittenReport

    html = outcome.out / "report.html"
    return Comparison(
        out=outcome.out,
        run_dirs=outcome.run_dirs,
        results=outcome.results(),
        report=WrittenReport(html, html.with_suffix(".md")),
    )
