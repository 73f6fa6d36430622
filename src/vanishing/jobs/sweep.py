"""Sweeps: expand a grid of settings into runs, run the missing ones, tabulate all of them.

The grid's keys are TrainConfig's fields (`config.settings()`): a field with an axis (activations,
inits, optimizers, lrs, seeds) takes a list of values, every other one value shared by every run;
`depths` x `widths` give network shapes instead of `hidden`. A preset, a TOML file and the command
line all use these keys.

A sweep directory holds one run directory per grid point and seed, named from its config (readable
parts plus a stable hash), so the same config is never run twice. The runs go through the one
executor (`runs.execute`): finished runs are kept, unfinished ones continue from their checkpoints
(a sweep is meant to be resumed), a run that raises is recorded with status "failed" and its error
and one that diverges with "diverged" (neither stops the sweep), and each run is locked while it
trains, so that sweeps sharing a directory split its runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vanishing import records
from vanishing.data.datasets import Dataset
from vanishing.errors import UsageError, choices_error
from vanishing.executor import (
    Policy,
    Run,
    check_memory,
    execute,
    group_size,
    is_pending,
    plan,
    workers_for,
)
from vanishing.model.mlp import DEFAULT_WIDTH, hidden_widths
from vanishing.reporting import summary
from vanishing.settings.config import TrainConfig, kind_of, settings, value_of
from vanishing.settings.naming import run_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SHAPE_KEYS = ("depths", "widths")  # network shapes: (width,) * depth, instead of `hidden`


def key_of(setting: dataclasses.Field) -> str:
    """A field's key in a grid: its axis name (a list) or its own name (one shared value)."""
    return setting.metadata["axis"] or setting.name


def grid_keys() -> list[str]:
    """Every key a grid takes, in TrainConfig's order (the shapes beside `hidden`)."""
    keys: list[str] = []
    for setting in settings():
        if setting.name == "hidden":
            keys += SHAPE_KEYS
        keys.append(key_of(setting))
    return [*keys, "description"]


@dataclass(frozen=True)
class SweepSpec:
    """A grid: every combination of the settings' values, each a run."""

    values: dict[str, tuple[Any, ...]]  # TrainConfig field -> its values (one: shared by all)
    depths: tuple[int, ...] = ()  # empty: the networks have the `hidden` widths
    widths: tuple[int, ...] = (DEFAULT_WIDTH,)  # with depths: units per hidden layer
    description: str = ""  # what the sweep shows and where it comes from (presets)

    def __getattr__(self, key: str) -> Any:
        """A grid key as an attribute: `spec.seeds` (an axis: its values), `spec.epochs` (shared:
        its one value)."""
        for setting in settings():
            if key == setting.metadata["axis"]:
                return self.values[setting.name]
            if key == setting.name and not setting.metadata["axis"]:
                return self.values[key][0]
        raise AttributeError(f"a sweep has no key {key!r}")

    def to_dict(self) -> dict[str, Any]:
        """The grid by its keys, as a TOML file or sweep.json gives it."""
        out: dict[str, Any] = {}
        for setting in settings():
            if setting.name == "hidden":
                out.update(depths=list(self.depths), widths=list(self.widths))
            values = self.values[setting.name]
            out[key_of(setting)] = list(values) if setting.metadata["axis"] else values[0]
        out["hidden"] = list(out["hidden"])
        return {**out, "description": self.description}


def shapes(spec: SweepSpec) -> list[tuple[int, ...]]:
    """The hidden widths of every network shape in the grid."""
    if not spec.depths:
        return [tuple(spec.hidden)]
    return [
        hidden_widths(depth=depth, width=width) for depth in spec.depths for width in spec.widths
    ]


def expand(spec: SweepSpec) -> list[TrainConfig]:
    """Every run of the grid, validated (a bad value raises UsageError before anything runs).

    Shapes vary slowest, then the settings in TrainConfig's order (activation ... seed)."""
    names = [setting.name for setting in settings() if setting.name != "hidden"]
    return [
        TrainConfig(hidden=hidden, **dict(zip(names, combination, strict=True)))
        for hidden in shapes(spec)
        for combination in itertools.product(*(spec.values[name] for name in names))
    ]


def spec_from_dict(values: dict[str, Any], source: str = "sweep") -> SweepSpec:
    """A SweepSpec from TOML-like values; unknown keys and wrong types are UsageErrors. A key
    not given takes the field's default values (`config.setting`'s `values`)."""
    known = grid_keys()
    unknown = sorted(set(values) - set(known))
    if unknown:
        names = ", ".join(map(repr, unknown))  # quoted: a key may hold any character
        raise UsageError(f"{source}: unknown key(s) {names}; valid keys: {', '.join(known)}")
    grid: dict[str, tuple[Any, ...]] = {}
    for setting in settings():
        key = key_of(setting)
        where, kind = f"{source}: {key}", kind_of(setting)
        if key not in values:
            grid[setting.name] = setting.metadata["values"]
        elif setting.metadata["axis"]:
            items = values[key] if isinstance(values[key], (list, tuple)) else [values[key]]
            if not items:
                raise UsageError(f"{where}: give at least one value")
            grid[setting.name] = tuple(value_of(setting, item, where) for item in items)
        elif kind is tuple:
            grid[setting.name] = (ints(where, values[key], allow_empty=False),)
        else:
            grid[setting.name] = (value_of(setting, values[key], where),)
    shape = {key: ints(f"{source}: {key}", values[key]) for key in SHAPE_KEYS if key in values}
    if not shape.get("widths", (DEFAULT_WIDTH,)):
        raise UsageError(f"{source}: widths: give at least one value")
    description = check_type(f"{source}: description", values.get("description", ""), str)
    spec = SweepSpec(grid, description=description, **shape)
    expand(spec)  # validates every value against the registries
    return spec


def ints(where: str, value: Any, allow_empty: bool = True) -> tuple[int, ...]:
    """A list of integers >= 1 (depths, widths, hidden widths)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    checked = tuple(check_type(where, item, int) for item in items)
    if any(item < 1 for item in checked):
        raise UsageError(
            f"{where} must be integers >= 1, got {next(i for i in checked if i < 1)!r}"
        )
    if not checked and not allow_empty:
        raise UsageError(f"{where}: give at least one value")
    return checked


def check_type(where: str, value: Any, kind: type) -> Any:
    """The value as `kind`, or a UsageError saying what was expected."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise UsageError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def read_toml(path: Path | str) -> dict[str, Any]:
    """The table of a TOML file, or a UsageError naming the file and the problem."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not valid TOML ({e})") from None


def preset_names() -> list[str]:
    """The presets shipped with the package."""
    folder = resources.files("vanishing") / "presets"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> SweepSpec:
    """A named preset (`vanishing sweep --preset NAME`)."""
    names = preset_names()
    if name not in names:
        raise choices_error("preset", name, names)
    text = (resources.files("vanishing") / "presets" / f"{name}.toml").read_text()
    return spec_from_dict(tomllib.loads(text), f"preset {name}")


Done = Callable[[TrainConfig, Path, str], None]


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep call did: every run of the grid, and how many ran now."""

    configs: list[TrainConfig]
    ran: int
    skipped: int
    rows: list[dict[str, Any]] = field(default_factory=list)


def run_sweep(
    spec: SweepSpec,
    out: Path,
    *,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    retry_failed: bool = False,
    resume: bool = True,
    data_options: dict[str, Any] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_done: Done | None = None,
    dataset: Dataset | None = None,
    stop: threading.Event | None = None,
    group: bool | int = True,
) -> SweepOutcome:
    """Run every unfinished run of the grid, then write runs.csv, points.csv and pairs.csv.

    Runs of one shape train together in units of up to `runs.group_size` runs for the device
    (1 on the CPU), or of up to `group` when it is a number; False trains them one at a time.
    Local runs share `dataset` (loaded when not given); Ray tasks load their own. Setting `stop`
    (e.g. from a signal handler) ends the sweep with KeyboardInterrupt, resumable. With `resume`
    (the default) unfinished local runs continue from their checkpoints; without, they start
    afresh. `ran` counts the runs this call finished; runs that a concurrent sweep on the same
    directory claimed are left to it.
    """
    count = workers_for(spec.device, workers, backend)  # before anything is written
    configs = expand(spec)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    policy = Policy(
        workers=count,
        threads=1,  # a sweep's children use one thread each: more runs at once, not faster ones
        group=group_size(spec.device, group, backend),
        resume=resume,
        keep_finished=True,
        retry_failed=retry_failed,
        failures="record",
        claim=True,
        backend=backend,
        address=address,
    )
    runs = [Run(config, out / run_name(config)) for config in configs]
    check_memory(plan(runs, policy), policy)  # a grid that cannot fit writes nothing
    records.write_json(out / "sweep.json", spec.to_dict())
    skipped = sum(not is_pending(run, policy) for run in runs)
    if on_start is not None:
        on_start(len(configs), skipped)
    ran = execute(
        runs,
        policy,
        dataset=dataset,
        data_options=data_options,
        on_done=(lambda run, status: on_done(run.config, run.run_dir, status)) if on_done else None,
        stop=stop,
    )
    rows = summary.tabulate(out, [run.run_dir for run in runs])
    return SweepOutcome(configs, len(ran), skipped, rows)
