"""The Python API, for scripts and notebooks: `train`, `compare`, `sweep` and `report` run the
command line's own commands and return what they wrote, read back from the records.

Each function takes the command's options as keyword arguments, named as the options are without
their dashes (`batch_size=32` for `--batch-size 32`, `seeds=[0, 1]` or `seeds="0,1"` for
`--seeds 0,1`), and fills them into the very options the command's parser makes, defaults
included; the command then builds the same configs, checks them with the same messages (a
`UsageError`, a `ValueError`) and shows the same progress. Two options read better turned round
in Python: `group=False` is `--no-group` and `verify=False` is `--no-verify`.

What they return shows itself in Jupyter: a run as a small table, a compare or a sweep as its
summary table, verdicts and key figure, a report as the page itself, its figures inline.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vanishing.records import RunResult
    from vanishing.reporting.render import WrittenReport
    from vanishing.settings.config import TrainConfig

# Options whose Python name says the opposite of the command line's flag.
INVERTED = {"group": "no_group", "verify": "no_verify"}
NOT_OPTIONS = ("command", "func")  # what the parser adds besides the options


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


def train(config: TrainConfig | None = None, **settings: Any) -> RunResult:
    """`vanishing train`: one run, from `config` and/or the settings given (those win), its
    records under `out` (default: runs/train); returns its result as written."""
    from vanishing.frontends import cli
    from vanishing.settings import config as configs
    from vanishing.settings import naming

    if config is not None:  # the fields it sets, as if given one by one
        defaults = {field.name: field.default for field in configs.settings()}
        changed = {k: v for k, v in config.to_dict().items() if v != defaults[k]}
        settings = {**changed, **settings}
    args = options("train", settings)
    run(cli.cmd_train, args)
    (trained,) = cli.training_configs(args)
    return read_results([(trained, Path(args.out) / naming.compare_run_name(trained))])[0]


def compare(
    activations: str | Iterable[str] | None = None,
    seeds: str | Iterable[int] | None = None,
    out: str | Path | None = None,
    **settings: Any,
) -> Comparison:
    """`vanishing compare`: one run per activation and seed (default: sigmoid, relu, leaky_relu,
    prelu x seeds 0, 1, 2), into `out` (default: runs/compare), with summary.csv and the report;
    `activations="all"` takes every one registered."""
    from vanishing.frontends import cli
    from vanishing.settings import naming

    args = options("compare", {"activations": activations, "seeds": seeds, "out": out, **settings})
    run(cli.cmd_compare, args)
    out = Path(args.out)
    runs = [
        (c, out / naming.compare_run_name(c)) for c in cli.training_configs(args, cli.COMPARE_AXES)
    ]
    return outcome(out, runs)


def sweep(
    preset: str | None = None,
    config: str | Path | None = None,
    out: str | Path | None = None,
    **axes: Any,
) -> Comparison:
    """`vanishing sweep`: the grid of a preset, a TOML file (`config`) and/or the keys given
    (`depths=[2, 5]`, `activations=["relu", "sigmoid"]`, `epochs=1`, ...; a key given overrides
    the preset's), every unfinished run of it, its CSVs and report, into `out` (default:
    runs/sweep-PRESET, runs/sweep-CONFIGNAME or runs/sweep-grid)."""
    from vanishing.frontends import cli
    from vanishing.jobs import sweep as sweeps
    from vanishing.settings import naming

    if out is None:  # the command's default, named here to read the runs back from it
        out = f"runs/sweep-{preset or (Path(config).stem if config else 'grid')}"
    args = options("sweep", {"preset": preset, "config": config, "out": out, **axes})
    run(cli.cmd_sweep, args)
    out = Path(args.out)
    configs = sweeps.expand(cli.sweep_spec(args))
    return outcome(out, [(c, out / naming.run_name(c)) for c in configs])


def report(*dirs: str | Path, out: str | Path | None = None) -> WrittenReport:
    """`vanishing report DIR...`: the report of the runs under `dirs`, written to `out`
    (default: report.html in the first one) with report.md beside it; nothing is retrained."""
    from vanishing.reporting import write_report

    return write_report(dirs, out)


def options(command: str, given: dict[str, Any]) -> argparse.Namespace:
    """The options `vanishing COMMAND` parses with nothing given, then `given` set on them as
    the parser would hold them; None leaves an option at its default."""
    from vanishing.frontends import cli
    from vanishing.jobs import sweep as sweeps
    from vanishing.settings.config import axes, settings, value_of

    args = cli.build_parser().parse_args([command])
    python_name = {dest: name for name, dest in INVERTED.items()}
    names = {python_name.get(dest, dest): dest for dest in vars(args) if dest not in NOT_OPTIONS}
    fields = {setting.name: setting for setting in settings()}
    # Options holding the command line's comma-separated text: the list-valued ones.
    listed = {*axes().values(), *sweeps.SHAPE_KEYS, "hidden"}
    for name, value in given.items():
        if value is None:
            continue
        if name not in names:
            valid = ", ".join(sorted(names))
            raise TypeError(
                f"{command}() got an unexpected keyword argument {name!r}; valid: {valid}"
            )
        dest = names[name]
        if dest in INVERTED.values():
            value = not value
        elif name in listed:
            value = text(value)
        elif name in fields:  # one value, as its option's type converts it
            value = value_of(fields[name], value, cli.option(name))
        elif isinstance(value, Path):
            value = str(value)
        setattr(args, dest, value)
    return args


def text(value: Any) -> str:
    """A list of values as the command line writes it: `[0, 1]` -> `0,1`; text stays as is."""
    if isinstance(value, str):
        return value
    items = list(value) if isinstance(value, Iterable) else [value]
    return ",".join(word(item) for item in items)


def word(value: Any) -> str:
    """One value as the command line writes it (yes/no, none, a float's shortest repr)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return repr(value) if isinstance(value, float) else str(value)


def run(command: Any, args: argparse.Namespace) -> None:
    """Run a command function; one that was interrupted (Ctrl-C, a notebook's stop button) raises
    KeyboardInterrupt, as Python code does, after the command has said how to resume."""
    if command(args) == 130:
        raise KeyboardInterrupt


def read_results(runs: list[tuple[TrainConfig, Path]]) -> list[RunResult]:
    """The results of the finished runs among `runs` (failed runs have none to read)."""
    from vanishing import records

    results = []
    for config, run_dir in runs:
        if records.is_complete(run_dir):
            if records.read_json(run_dir / records.RESULT).get("status") == "failed":
                continue
            result = records.load_result(config, run_dir)
            if result is not None:
                results.append(result)
    return results


def outcome(out: Path, runs: list[tuple[TrainConfig, Path]]) -> Comparison:
    """A compare's or sweep's Comparison: its runs' results and the report it wrote."""
    from vanishing.reporting.render import WrittenReport

    html = out / "report.html"
    return Comparison(
        out=out,
        run_dirs=[run_dir for _, run_dir in runs],
        results=read_results(runs),
        report=WrittenReport(html, html.with_suffix(".md")),
    )
