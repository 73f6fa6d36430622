"""The one parser of settings: a value given as text (the command line, the live page's form), in
TOML, in a JSON record or as a Python keyword argument becomes its TrainConfig field's type here,
and each check is written once, so the same wrong value gets the same message wherever it was
given (`tests/test_settings.py` walks the four front doors).

Text is parsed (`0.01`, `none`, `yes`, `520,320`); any other value is checked as it is (an int
where a float is expected is taken as that float). A list-valued setting (an axis: `seeds`,
`activations`, a sweep's `depths`) takes comma-separated text, a list or one value. The range
checks (a learning rate > 0, widths >= 1) are TrainConfig's own, made when the configs are built.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from vanishing.errors import UsageError
from vanishing.model.mlp import check_depth, hidden_widths
from vanishing.model.recurrent import arch_defaults
from vanishing.settings.config import (
    TrainConfig,
    choices_of,
    field_named,
    kind_of,
    optional,
    settings,
    shown,
)

SHAPE_KEYS = ("depth", "width")  # one network's shape, instead of `hidden`
GRID_SHAPE_KEYS = ("depths", "widths")  # a sweep's shapes: (width,) * depth for each pair
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def given(value: Any) -> bool:
    """Whether a value was given (None is not; empty text is, and is wrong for most settings:
    the live page leaves its empty fields out before they get here)."""
    return value is not None


def wrong(name: str, expected: str, value: Any) -> typing.NoReturn:
    """The one message for a value of the wrong type."""
    raise UsageError(f"{name}: expected {expected}, got {value!r}")


def parse(setting: dataclasses.Field, value: Any, name: str | None = None) -> Any:
    """One value of `setting` as its type, from text or a typed value; `none` (or None) for an
    optional one. `name` is what the message calls it (default: the field's name)."""
    name = name or setting.name
    if setting.name == "hidden":
        return widths(value, name)
    kind = kind_of(setting)
    if optional(setting) and (
        value is None or (isinstance(value, str) and value.strip().lower() == "none")
    ):
        return None
    expected = f"{kind.__name__}{' or none' if optional(setting) else ''}"
    if kind is str and isinstance(value, str) and not value.strip():
        wrong(name, "a name", value)
    if isinstance(value, str) and kind is not str:
        word = value.strip().lower()
        if kind is bool:
            if word in TRUE + FALSE:
                return word in TRUE
            wrong(name, expected, value)
        try:
            return kind(word)
        except ValueError:
            wrong(name, expected, value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        wrong(name, expected, value)
    return value


def optional_integer(name: str, value: Any) -> int | None:
    """`integer`, or None where no value was given (`--workers`, `workers=`: the executor's
    default)."""
    return integer(name, value) if given(value) else None


def integer(name: str, value: Any) -> int:
    """A whole number (a depth, a width, a count of workers) from text or an int."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    wrong(name, "int", value)


def items(value: Any) -> list[Any]:
    """A list's items: comma-separated text split (blank text: none; an empty part between two
    commas is an item, and wrong), a list or tuple as it is, anything else one item."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")] if value.strip() else []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def widths(value: Any, name: str = "hidden") -> tuple[int, ...]:
    """Hidden widths from `520,320,240,120` or a list of ints (each >= 1: TrainConfig checks)."""
    if not isinstance(value, (str, list, tuple)):
        wrong(name, "widths such as 520,320,240,120", value)
    return tuple(integer(name, item) for item in items(value))


def values(setting: dataclasses.Field, value: Any) -> tuple[Any, ...]:
    """An axis's values (`--seeds 0,1,2`, TOML `seeds = [0, 1, 2]`), each once; `all` where the
    field declares what it stands for (every activation)."""
    axis = setting.metadata["axis"]
    every = setting.metadata["all"]
    if every is not None and isinstance(value, str) and value.strip().lower() == "all":
        return tuple(every())
    parsed = tuple(parse(setting, item, axis) for item in items(value))
    if not parsed:
        raise UsageError(f"{axis}: give at least one value")
    if len(set(parsed)) != len(parsed):
        raise UsageError(f"{axis}: each value once, got {shown(parsed)}")
    return parsed


def numbers(name: str, value: Any) -> tuple[int, ...]:
    """A sweep's depths or widths: whole numbers, each once."""
    parsed = tuple(integer(name, item) for item in items(value))
    if len(set(parsed)) != len(parsed):
        raise UsageError(f"{name}: each value once, got {shown(parsed)}")
    return parsed


def shape(values: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The hidden widths `values` give: `hidden`, or `depth` and/or `width`; None when neither."""
    hidden = widths(values["hidden"]) if given(values.get("hidden")) else None
    depth, width = (integer(k, values[k]) if given(values.get(k)) else None for k in SHAPE_KEYS)
    if hidden is None and depth is None and width is None:
        return None
    return hidden_widths(hidden, depth, width)


def grid_shapes(depths: Sequence[int], widths: Sequence[int]) -> list[tuple[int, ...]]:
    """A sweep's shapes: (width,) * depth for every depth and width, each checked."""
    if not widths:
        raise UsageError("widths: give at least one value")
    for depth in depths:
        check_depth(depth)
    return [hidden_widths(depth=depth, width=width) for depth in depths for width in widths]


def check_momentum(values: Mapping[str, Any]) -> None:
    """Momentum other than 0 needs sgd, the one optimizer that uses it (train, compare and the
    page: one optimizer; a sweep shares one momentum among several and is not checked)."""
    optimizer = values.get("optimizer", TrainConfig.optimizer)
    if optimizer not in choices_of("optimizer"):
        return  # an unknown optimizer: the config names it and the choices
    if values.get("momentum", 0.0) != 0.0 and optimizer != "sgd":
        raise UsageError("--momentum applies to --optimizer sgd only")


def known_keys(lists: Sequence[str] = ()) -> list[str]:
    """The keys `configs` takes: every field's name (an axis's name for the fields in `lists`),
    and depth and width beside hidden."""
    keys = []
    for setting in settings():
        keys.append(setting.metadata["axis"] if setting.name in lists else setting.name)
        if setting.name == "hidden":
            keys += SHAPE_KEYS
    return keys


def configs(values: Mapping[str, Any], lists: Sequence[str] = ()) -> list[TrainConfig]:
    """Every run that `values` describe: one per combination of the values of the fields named
    in `lists` (given under their axis names, e.g. `seeds`, else their default values), every
    other field one value (else its default), validated. What is not given (None, empty text)
    is left to the default. Unknown keys are a UsageError naming the known ones."""
    known = known_keys(lists)
    unknown = [key for key in values if key not in known]
    if unknown:
        raise UsageError(
            f"unknown setting(s) {', '.join(map(str, unknown))}; known: {', '.join(known)}"
        )
    one: dict[str, Any] = {}
    axes: dict[str, tuple[Any, ...]] = {}
    for setting in settings():
        if setting.name in lists:
            raw = values.get(setting.metadata["axis"])
            axes[setting.name] = values_of(setting, raw)
        elif setting.name == "hidden":
            hidden = shape(values)
            if hidden is not None:
                one["hidden"] = hidden
        elif given(values.get(setting.name)):
            one[setting.name] = parse(setting, values[setting.name])
    check_momentum(one)
    names = list(axes)
    runs = []
    for combination in itertools.product(*axes.values()):
        chosen = {**one, **dict(zip(names, combination, strict=True))}
        given_here = set(one) | {
            name for name in axes if given(values.get(field_named(name).metadata["axis"]))
        }
        defaults = arch_defaults(chosen.get("arch", TrainConfig.arch))
        chosen.update({k: v for k, v in defaults.items() if k not in given_here})
        runs.append(TrainConfig(**chosen))
    return list(dict.fromkeys(runs))  # a recurrent network's default activation: once


def values_of(setting: dataclasses.Field, raw: Any) -> tuple[Any, ...]:
    """An axis's values as given, else its declared default values."""
    return values(setting, raw) if given(raw) else setting.metadata["values"]


def config(values: Mapping[str, Any]) -> TrainConfig:
    """The one run `values` describe (`configs` without lists)."""
    (only,) = configs(values)
    return only


def recorded(values: Mapping[str, Any]) -> TrainConfig:
    """The run a record's config (config.json, a result's `config`) describes, each value
    checked as one given at any front door, so that a damaged or hand-edited one is the same
    UsageError; text is not parsed (JSON holds a number as a number, widths as a list). What it
    leaves out reads as the default, a key it does not know (a later version's setting) is left
    aside. The front doors' checks of settings given together (`check_momentum`) do not apply:
    a record holds what ran."""
    parsed = {}
    for setting in settings():
        if setting.name not in values:
            continue
        value = values[setting.name]
        if setting.name == "hidden":
            if not isinstance(value, list):
                wrong("hidden", "a list of widths", value)
            text = [width for width in value if isinstance(width, str)]
            if text:
                wrong("hidden", "int", text[0])
        elif isinstance(value, str) and kind_of(setting) is not str:
            wrong(setting.name, kind_of(setting).__name__, value)
        parsed[setting.name] = parse(setting, value)
    return TrainConfig(**parsed)


def changed(config: TrainConfig) -> dict[str, Any]:
    """The settings of `config` that differ from the defaults, as `configs` takes them."""
    return {
        name: value
        for name, value in config.to_dict().items()
        if value != field_named(name).default
    }
