"""Every training setting is declared once, on TrainConfig: each field reaches `train --help`,
`compare --help`, `sweep --help`, the command line's configs, TOML and the sweep tables by itself.

These tests walk the config's fields, so a field added to TrainConfig is checked here with no
change to this file; a field the derivations miss fails them.
"""

from __future__ import annotations

import dataclasses
import os
import stat

import pytest

from conftest import swept
from vanishing import records
from vanishing.frontends.cli.parser import build_parser, grid_given, settings_given
from vanishing.jobs import compare
from vanishing.settings import codec, grid, naming
from vanishing.settings.config import (
    SECTIONS,
    TrainConfig,
    choices_of,
    kind_of,
    older_defaults,
    settings,
    shown,
)

FIELDS = [setting.name for setting in settings()]


def field(name: str) -> dataclasses.Field:
    return next(setting for setting in settings() if setting.name == name)


def other_value(setting: dataclasses.Field):
    """A valid value other than the default, as Python and as the command line writes it."""
    default, kind = setting.default, kind_of(setting)
    if choices_of(setting.name):
        value = next(c for c in choices_of(setting.name) if c != default)
        if setting.name == "device":
            value = "cpu"  # a valid choice on every machine
    elif kind is tuple:
        value = (8, 4)
    elif kind is bool:
        value = not default
    elif kind is int:
        value = default + 1 if default is not None else 100
    else:
        value = default / 2 if default else 0.5
    return value, shown(value)


# What another value of a setting needs beside it: equal widths for a skip; a recurrent network
# for a sequence, an LSTM for a forget-gate bias, the adding problem for a length.
COMPANIONS: dict[str, dict[str, object]] = {
    "residual": {"depth": 3, "width": 8},
    "sequence": {"arch": "rnn"},
    "forget_bias": {"arch": "lstm"},
    "length": {"arch": "rnn", "dataset": "adding"},
}
GRID_COMPANIONS: dict[str, dict[str, object]] = {  # the same, as a sweep's keys
    "residual": {"depths": [3], "widths": [8]},
    "sequence": {"archs": ["rnn"]},
    "forget_bias": {"archs": ["lstm"]},
    "length": {"archs": ["rnn"], "dataset": "adding"},
}
# The settings whose default follows the network's (`model.recurrent.arch_defaults`).
ARCH_DEPENDENT = ("activation", "hidden", "sequence", "probe_size")


def help_of(command: str) -> str:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
    return " ".join(subparsers.choices[command].format_help().split())


@pytest.mark.parametrize("name", FIELDS)
def test_every_field_has_help_a_section_and_valid_default_values(name):
    meta = field(name).metadata
    assert meta["help"] and meta["section"] in SECTIONS
    shape = {"hidden": (8, 8)} if name == "residual" else {}  # a skip needs equal widths
    for value in meta["values"]:  # an axis's default values each make a valid run
        assert getattr(TrainConfig(**{name: value, **shape}), name) == value


@pytest.mark.parametrize("name", FIELDS)
@pytest.mark.parametrize("command", ["train", "compare", "sweep"])
def test_every_field_is_an_option_with_its_default_in_help(command, name):
    setting = field(name)
    axis = setting.metadata["axis"]
    lists = {"train": (), "compare": compare.AXES, "sweep": FIELDS}[command]
    text = help_of(command)
    if name in lists and axis:
        assert f"--{axis.replace('_', '-')} " in text
        assert f"(default: {shown(setting.metadata['values'])}" in text
    else:
        assert f"--{name.replace('_', '-')} " in text
        assert f"(default: {shown(setting.default)}" in text


@pytest.mark.parametrize("name", FIELDS)
def test_every_field_given_on_the_command_line_reaches_the_config(name, tmp_path):
    setting = field(name)
    value, text = other_value(setting)
    flag = f"--{name.replace('_', '-')}"
    flags = [flag if value else f"--no-{name.replace('_', '-')}"]
    argv = ["train", *(flags if isinstance(value, bool) else [flag, text])]
    if name == "momentum":
        argv += ["--optimizer", "sgd"]
    companions = COMPANIONS.get(name, {})
    for key, companion in companions.items():
        argv += [f"--{key.replace('_', '-')}", str(companion)]
    config = codec.config(settings_given(build_parser().parse_args(argv)))
    assert getattr(config, name) == value
    recurrent = config.arch != "mlp"
    skipped = {name, "optimizer", "hidden", *companions, *(ARCH_DEPENDENT if recurrent else ())}
    unchanged = {f: getattr(TrainConfig(), f) for f in FIELDS if f not in skipped}
    assert {f: getattr(config, f) for f in unchanged} == unchanged


@pytest.mark.parametrize("name", FIELDS)
def test_every_field_is_a_toml_key_and_a_sweep_option(name):
    setting = field(name)
    value, text = other_value(setting)
    axis = setting.metadata["axis"]
    key = axis or name
    toml_value = [value] if axis else (list(value) if isinstance(value, tuple) else value)
    companions = GRID_COMPANIONS.get(name, {})
    spec = grid.spec_from_dict({key: toml_value, **companions})
    assert {getattr(c, name) for c in grid.expand(spec)} == {value}
    assert key in grid.spec_from_dict({}).to_dict()  # sweep.json and presets use the same keys
    option = f"--{key.replace('_', '-')}"
    extra = [
        part
        for key, values in companions.items()
        for part in (f"--{key.replace('_', '-')}", shown(values))
    ]
    args = build_parser().parse_args(["sweep", option, text, *extra])
    spec, _ = grid.spec_of(given=grid_given(args))
    assert {getattr(c, name) for c in grid.expand(spec)} == {value}


def test_an_axis_takes_several_values_and_the_grid_is_their_product():
    axes = {s.name: s for s in settings() if s.metadata["axis"]}
    spec = grid.spec_from_dict({"activations": ["relu", "tanh"], "seeds": [0, 1, 2]})
    configs = grid.expand(spec)
    assert len(configs) == 6 and {(c.activation, c.seed) for c in configs} == {
        (a, s) for a in ("relu", "tanh") for s in (0, 1, 2)
    }
    assert set(axes) >= {"activation", "seed", "init", "optimizer", "lr"}


def test_the_sweep_tables_have_a_column_per_field(tiny_dir, tmp_path):
    spec = grid.spec_from_dict(
        {
            "activations": ["relu"],
            "depths": [1],
            "widths": [8],
            "seeds": [0],
            "epochs": 1,
            "batch_size": 32,
            "probe_every": 5,
            "probe_size": 32,
            "device": "cpu",
        }
    )
    out = tmp_path / "out"
    outcome = swept(spec, out, workers=1, data_options={"data_dir": tiny_dir, "verify": False})
    header = (out / "runs.csv").read_text().splitlines()[0].split(",")
    # The config's fields in their declared order (as config.json has them), the widths last.
    assert header[: len(FIELDS)] == [f for f in FIELDS if f != "hidden"] + ["hidden"]
    assert outcome.ran == 1


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_records_are_written_with_the_umask_mode(tiny_dir, tmp_path, umask):
    out = tmp_path / "out"
    previous = os.umask(umask)
    try:
        spec = grid.spec_from_dict(
            {"activations": ["relu"], "depths": [1], "widths": [8], "seeds": [0], "epochs": 1}
        )
        swept(spec, out, workers=1, data_options={"data_dir": tiny_dir, "verify": False})
    finally:
        os.umask(previous)
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    for path in [run_dir / records.CONFIG, run_dir / records.METRICS, run_dir / records.RESULT]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name
    for path in [run_dir / records.LOCK, out / "sweep.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


def test_settings_added_later_default_to_what_older_records_mean():
    defaults = TrainConfig().to_dict()
    older = older_defaults()
    assert set(older) == {
        "norm", "residual", "init_gain", "clip_grad_norm", "arch", "sequence", "length",
        "forget_bias", "train_size", "test_size",
    }  # fmt: skip
    assert {key: defaults[key] for key in older} == older


def test_run_names_are_those_older_versions_gave():
    # Computed by the version before norm, residual, init_gain and clip_grad_norm existed: a
    # sweep directory of that version resumes under the same names.
    assert (
        naming.run_name(TrainConfig()) == "relu-h520-320-240-120-default-adam-lr0.001-s0-56b33c734b"
    )
    deep = TrainConfig(
        activation="sigmoid", hidden=(256,) * 30, init="kaiming", optimizer="sgd", lr=0.01,
        momentum=0.9, seed=2,
    )  # fmt: skip
    assert naming.run_name(deep) == "sigmoid-d30w256-kaiming-sgd-lr0.01-s2-f59b0ce733"
    cured = dataclasses.replace(
        deep, norm="batch", residual=True, init_gain=2**0.5, clip_grad_norm=1.0
    )
    assert naming.run_name(cured).startswith(
        "sigmoid-d30w256-kaiming-sgd-lr0.01-batchnorm-residual-gain1.41-clip1-s2-"
    )


def test_an_older_record_without_the_later_settings_is_the_same_run(tiny_dir, tmp_path):
    from vanishing import reporting as report
    from vanishing.data import datasets as data
    from vanishing.training.loop import train

    config = TrainConfig(hidden=(8,), epochs=1, batch_size=32, probe_every=5, probe_size=32)
    dataset = data.load_dataset(data_dir=tiny_dir, verify=False)
    run_dir = tmp_path / "run"
    train(config, dataset=dataset, run_dir=run_dir)
    for name in (records.CONFIG, records.RESULT):  # as an older version wrote them
        values = records.read_json(run_dir / name)
        target = values.get("config", values)
        for key in older_defaults():
            del target[key]
        records.write_json(run_dir / name, values)
    assert records.load_result(config, run_dir) is not None  # kept, not trained again
    assert records.load_result(dataclasses.replace(config, norm="layer"), run_dir) is None
    (run,), _ = report.load_runs([run_dir])
    assert {key: run.config[key] for key in older_defaults()} == older_defaults()


@pytest.mark.parametrize("word", ["none", "None", "NONE", " none "])
def test_none_is_written_in_any_case(word):
    args = build_parser().parse_args(["sweep", "--clip-grad-norms", f"{word},1"])
    spec, _ = grid.spec_of(given=grid_given(args))
    assert {c.clip_grad_norm for c in grid.expand(spec)} == {None, 1.0}
