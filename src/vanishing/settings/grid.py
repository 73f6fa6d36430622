"""A sweep's grid: `SweepSpec`, its keys (derived from the config's fields), presets and TOML.

The grid's keys are TrainConfig's fields: a field with an axis (activations, inits, optimizers,
lrs, seeds, ...) takes a list of values, every other one value shared by every run; `depths` x
`widths` give network shapes instead of `hidden`. A preset, a TOML file, the command line and
the Python API all use these keys, and `settings.codec` parses their values.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import stat
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from vanishing.errors import UsageError, choices_error
from vanishing.model.mlp import DEFAULT_WIDTH, SEED_HIDDEN
from vanishing.model.recurrent import arch_defaults
from vanishing.settings import codec
from vanishing.settings.config import TrainConfig, field_named, settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MAX_TOML_BYTES = 1_000_000  # a grid's file is a few hundred bytes; a bound keeps a device out


def key_of(setting: dataclasses.Field) -> str:
    """A field's key in a grid: its axis name (a list) or its own name (one shared value)."""
    return setting.metadata["axis"] or setting.name


def grid_keys() -> list[str]:
    """Every key a grid takes, in TrainConfig's order (the shapes beside `hidden`)."""
    keys: list[str] = []
    for setting in settings():
        if setting.name == "hidden":
            keys += codec.GRID_SHAPE_KEYS
        keys.append(key_of(setting))
    return [*keys, "cases", "description"]


@dataclass(frozen=True)
class SweepSpec:
    """A grid: every combination of the settings' values, each a run."""

    values: dict[str, tuple[Any, ...]]  # TrainConfig field -> its values (one: shared by all)
    depths: tuple[int, ...] = ()  # empty: the networks have the `hidden` widths
    widths: tuple[int, ...] = (DEFAULT_WIDTH,)  # with depths: units per hidden layer
    description: str = ""  # what the sweep shows and where it comes from (presets)
    # Settings that change together, each case a run of every combination of the axes: e.g.
    # each optimizer at its own learning rate ({"optimizer": "sgd", "lr": 0.1}, ...). Empty: one.
    cases: tuple[dict[str, Any], ...] = ()

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
        by_cases = {key for case in self.cases for key in case}  # the cases give these
        for setting in settings():
            if setting.name == "hidden":
                out.update(depths=list(self.depths), widths=list(self.widths))
            if setting.name in by_cases:
                continue
            values = self.values[setting.name]
            out[key_of(setting)] = list(values) if setting.metadata["axis"] else values[0]
        out["hidden"] = list(out["hidden"])  # never set by cases: shapes are the grid's
        if self.cases:
            out["cases"] = [dict(case) for case in self.cases]
        return {**out, "description": self.description}


def shapes(spec: SweepSpec) -> list[tuple[int, ...]]:
    """The hidden widths of every network shape in the grid."""
    if not spec.depths:
        return [tuple(spec.hidden)]
    return codec.grid_shapes(spec.depths, spec.widths)


def expand(spec: SweepSpec) -> list[TrainConfig]:
    """Every run of the grid, validated (a bad value raises UsageError before anything runs).

    Shapes vary slowest, then the settings in TrainConfig's order (activation ... seed), then
    the cases."""
    names = [setting.name for setting in settings() if setting.name != "hidden"]
    runs = [
        TrainConfig(
            **arch_defaulted(
                spec, {"hidden": hidden, **dict(zip(names, combination, strict=True)), **case}, case
            )
        )
        for hidden in shapes(spec)
        for combination in itertools.product(*(spec.values[name] for name in names))
        for case in spec.cases or ({},)
    ]
    return list(dict.fromkeys(runs))  # a recurrent network's default activation: once


def arch_defaulted(spec: SweepSpec, values: dict[str, Any], case: dict[str, Any]) -> dict[str, Any]:
    """A run's settings with a recurrent network's own defaults (`arch_defaults`) where the grid
    left the activation or the shape at an MLP's defaults."""
    defaults = arch_defaults(values["arch"])
    # Not given: the axis's default values, or the placeholder of a key that other cases set.
    unset = spec.values["activation"] == field_named("activation").metadata["values"] or any(
        "activation" in other for other in spec.cases
    )
    if "activation" in defaults and "activation" not in case and unset:
        values["activation"] = defaults["activation"]
    if "hidden" in defaults and not spec.depths and spec.values["hidden"] == (SEED_HIDDEN,):
        values["hidden"] = defaults["hidden"]
    for name, default in defaults.items():
        if name not in ("activation", "hidden", *case) and spec.values[name] == (
            field_named(name).default,
        ):
            values[name] = default
    return values


def parse_cases(values: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """A grid's `cases`: a list of tables of settings (their singular names), each parsed by
    `codec`; a setting set by the cases and by a key of the grid is refused (one place each)."""
    cases = values.get("cases", [])
    if not isinstance(cases, list) or not all(isinstance(case, dict) for case in cases):
        codec.wrong("cases", "a list of tables of settings", cases)
    parsed: list[dict[str, Any]] = []
    for index, case in enumerate(cases, 1):
        where = f"cases[{index}]"
        if not case:
            raise UsageError(f"{where}: give at least one setting")
        own: dict[str, Any] = {}
        # Seeds are always an axis and shapes the grid's (hidden, or depths x widths).
        names = [s.name for s in settings() if s.name not in ("seed", "hidden")]
        for key, value in case.items():
            if key not in names:
                raise UsageError(f"{where}: unknown setting {key!r}; settings: {', '.join(names)}")
            setting = codec.field_named(key)
            if key_of(setting) in values:
                raise UsageError(
                    f"{where}: {key} is set by the grid's {key_of(setting)} too; give it in one "
                    "place"
                )
            own[key] = codec.parse(setting, value, f"{where}.{key}")
        codec.check_momentum(own)
        parsed.append(own)
    if len({tuple(sorted(case.items())) for case in parsed}) != len(parsed):
        raise UsageError("cases: each case once")
    return tuple(parsed)


def spec_from_dict(values: dict[str, Any], source: str = "sweep") -> SweepSpec:
    """A SweepSpec from a grid's keys (TOML, the command line, keyword arguments; each value
    parsed by `codec`); unknown keys and wrong values are UsageErrors naming `source`. A key not
    given takes the field's default values (`config.setting`'s `values`)."""
    known = grid_keys()
    unknown = sorted(set(values) - set(known))
    if unknown:
        names = ", ".join(map(repr, unknown))  # quoted: a key may hold any character
        raise UsageError(f"{source}: unknown key(s) {names}; valid keys: {', '.join(known)}")
    try:
        grid: dict[str, tuple[Any, ...]] = {}
        for setting in settings():
            key = key_of(setting)
            if key not in values:
                grid[setting.name] = setting.metadata["values"]
            elif setting.metadata["axis"]:
                grid[setting.name] = codec.values(setting, values[key])
            else:
                grid[setting.name] = (codec.parse(setting, values[key], key),)
        shape = {
            key: codec.numbers(key, values[key]) for key in codec.GRID_SHAPE_KEYS if key in values
        }
        for key, numbers in shape.items():
            if not numbers:
                raise UsageError(f"{key}: give at least one value")
        if "hidden" in values and shape:
            raise UsageError(
                "give either the hidden widths (hidden) or depths and widths, not both"
            )
        description = values.get("description", "")
        if not isinstance(description, str):
            codec.wrong("description", "str", description)
        cases = parse_cases(values)
        for name in {key for case in cases for key in case}:
            # Not an axis: a case that leaves it out takes its default (not every default value)
            grid[name] = (codec.field_named(name).default,)
    except UsageError as e:
        raise UsageError(f"{source}: {e}") from None
    spec = SweepSpec(grid, description=description, cases=cases, **shape)
    expand(spec)  # validates every value against the registries
    return spec


def read_toml(path: Path | str) -> dict[str, Any]:
    """The table of a TOML file, or a UsageError naming the file and the problem."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: a pipe's open would wait
            raise UsageError(f"{path}: not a regular file; a sweep file is a TOML file")
        with open(path, "rb") as f:
            data = f.read(MAX_TOML_BYTES + 1)  # one byte over is enough to refuse it
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(data) > MAX_TOML_BYTES:
        raise UsageError(f"{path}: larger than {MAX_TOML_BYTES} bytes; not a TOML sweep file")
    try:
        return tomllib.loads(data.decode())
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


def spec_of(
    preset: str | None = None,
    file: Path | str | None = None,
    given: dict[str, Any] | None = None,
    given_source: str = "command line",
) -> tuple[SweepSpec, str]:
    """The grid of a preset or a TOML file, with the keys `given` (the command line's, the API's:
    `given_source` names them in messages) on top; and the grid's name (the preset's, the file's
    stem, or `grid`). Explicit `hidden` widths replace the preset's or file's depths."""
    if preset and file:
        raise UsageError("give either --preset or --config, not both")
    values: dict[str, Any] = {}
    name = "grid"
    if preset:
        values, name = grid_values(load_preset(preset)), preset
    elif file:
        values, name = read_toml(file), Path(file).stem
        spec_from_dict(values, str(file))  # the file's own mistakes, named by the file
    given = {key: value for key, value in (given or {}).items() if codec.given(value)}
    if given and values.get("cases"):
        values = {**values, "cases": cases_without(values["cases"], given)}
    if not given:
        return (spec_from_dict(values, str(file)) if file else spec_from_dict(values, name)), name
    if "hidden" in given:  # the widths given replace the preset's or file's shapes
        values = {k: v for k, v in values.items() if k not in codec.GRID_SHAPE_KEYS}
    elif given.keys() & set(codec.GRID_SHAPE_KEYS):  # and shapes given replace its widths
        values.pop("hidden", None)
    return spec_from_dict({**values, **given}, given_source), name


def cases_without(cases: Any, given: dict[str, Any]) -> Any:
    """A preset's or file's cases less the settings `given` again (the command line's, the
    API's: they win), each case once; the cases as they are if they are not a list of tables
    (`parse_cases` says what is wrong with them)."""
    if not isinstance(cases, list) or not all(isinstance(case, dict) for case in cases):
        return cases
    names = {setting.name for setting in settings() if key_of(setting) in given}
    kept: list[dict[str, Any]] = []
    for case in cases:
        rest = {key: value for key, value in case.items() if key not in names}
        if rest and rest not in kept:
            kept.append(rest)
    return kept


def grid_values(spec: SweepSpec) -> dict[str, Any]:
    """A spec's keys as a grid gives them: its shapes only where it has depths (else its
    `hidden`), so that they can be given again."""
    values = spec.to_dict()
    if spec.depths:
        values.pop("hidden")
    else:
        values.pop("depths")
        values.pop("widths")
    return values
