"""One settings parser: the same wrong value gives the same message from the command line, the
Python API, a TOML file and the live page's form; and a setting declared once, with its
metadata, reaches every place that derives from the config with no other edit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vanishing
from conftest import ENV
from vanishing.errors import UsageError
from vanishing.frontends.cli import main
from vanishing.frontends.live.jobs import parse_config
from vanishing.settings import codec, grid, naming
from vanishing.settings.config import TrainConfig

SRC = Path(vanishing.__file__).resolve().parent


def by_cli(capsys, command: str, argv: list[str]) -> str:
    """The message `vanishing COMMAND ARGV` prints (after its `vanishing COMMAND: error: `)."""
    code = main([command, *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    prefix = f"vanishing {command}: error: "
    assert err.startswith(prefix), err
    return err.removeprefix(prefix).removeprefix("command line: ")


def by_api(call) -> str:
    with pytest.raises(UsageError) as raised:
        call()
    return str(raised.value).removeprefix("sweep(): ")


def by_toml(tmp_path: Path, text: str) -> str:
    """The message of a sweep file holding `text`, after the file's name."""
    path = tmp_path / "grid.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as raised:
        grid.expand(grid.spec_of(file=path)[0])
    return str(raised.value).removeprefix(f"{path}: ")


def by_form(values: dict) -> str:
    with pytest.raises(UsageError) as raised:
        parse_config(values)
    return str(raised.value)


# One run's setting, wrong: (option, its text, the Python value, TOML's text, the message).
ONE_RUN = [
    ("lr", "fast", "fast", '"fast"', "lr: expected float, got 'fast'"),
    ("lr", "-1", -1, "-1", "learning rate must be a finite number > 0, got -1.0"),
    ("epochs", "two", "two", '"two"', "epochs: expected int, got 'two'"),
    ("epochs", "0", 0, "0", "epochs must be an integer >= 1, got 0"),
    ("batch_size", "x", "x", '"x"', "batch_size: expected int, got 'x'"),
    ("clip_grad_norm", "off", "off", '"off"', "clip_grad_norm: expected float or none, got 'off'"),
    ("activation", "swish", "swish", '"swish"', "unknown activation 'swish'; choose from: "),
    ("init", "zeros", "zeros", '"zeros"', "unknown init 'zeros'; choose from: "),
    ("hidden", "8,0", [8, 0], "[8, 0]", "every hidden width must be an integer >= 1, got 0"),
    ("hidden", "8,x", [8, "x"], '[8, "x"]', "hidden: expected int, got 'x'"),
    ("seed", "-1", -1, "-1", "seed must be an integer 0 to 2**64-1, got -1"),
    # torch.Generator.manual_seed's limit: one more crashed in the RNG.
    ("seed", str(2**64), 2**64, str(2**64), f"seed must be an integer 0 to 2**64-1, got {2**64}"),
    # As many widths as layers allowed, and one more: --depth's limit.
    (
        "hidden",
        ",".join(["8"] * 10001),
        [8] * 10001,
        str([8] * 10001),
        "depth must be 1 to 10000 hidden layers, got 10001",
    ),
    (
        "hidden",
        "8,10000000000000000",
        [8, 10**16],
        "[8, 10000000000000000]",
        "a hidden width must be at most 1,000,000,000,000,000 units, got 10000000000000000",
    ),
    ("norm", "group", "group", '"group"', "unknown norm 'group'; choose from: none, batch, layer"),
]


@pytest.mark.parametrize(("name", "text", "value", "toml", "message"), ONE_RUN)
def test_one_wrong_value_one_message_at_every_front_door(
    capsys, tmp_path, monkeypatch, name, text, value, toml, message
):
    monkeypatch.chdir(tmp_path)  # nothing may be written; if it were, not into the project
    field = name.replace("_", "-")
    key = grid.key_of(codec.field_named(name))  # a sweep file names an axis by its plural
    messages = {
        "command line": by_cli(capsys, "train", [f"--{field}", text]),
        "API": by_api(lambda: vanishing.train(**{name: value})),
        "form": by_form({name: text}),
    }
    if key == name:  # a setting a sweep shares: the same key in the file
        messages["TOML"] = by_toml(tmp_path, f"{key} = {toml}\n")
    assert all(m.startswith(message) for m in messages.values()), messages
    assert len(set(messages.values())) == 1, messages
    assert not [p for p in tmp_path.iterdir() if p.name != "grid.toml"]


# A sweep's list, wrong: (key, the command line's text, the Python value, TOML's, the message).
LISTS = [
    ("lrs", "0.1,fast", [0.1, "fast"], '[0.1, "fast"]', "lrs: expected float, got 'fast'"),
    ("seeds", "0,0", [0, 0], "[0, 0]", "seeds: each value once, got 0,0"),
    ("seeds", "0,x", [0, "x"], '[0, "x"]', "seeds: expected int, got 'x'"),
    ("seeds", f"0,{2**64}", [0, 2**64], f"[0, {2**64}]",
     f"seed must be an integer 0 to 2**64-1, got {2**64}"),
    ("activations", "relu,swish", ["relu", "swish"], '["relu", "swish"]',
     "unknown activation 'swish'"),
    ("depths", "2,x", [2, "x"], '[2, "x"]', "depths: expected int, got 'x'"),
    ("depths", "0", [0], "[0]", "depth must be 1 to 10000 hidden layers, got 0"),
    ("inits", "", [], "[]", "inits: give at least one value"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "text", "value", "toml", "message"), LISTS)
def test_one_wrong_list_one_message_at_every_front_door(
    capsys, tmp_path, monkeypatch, key, text, value, toml, message
):
    monkeypatch.chdir(tmp_path)
    option = "--" + key.replace("_", "-")
    messages = {
        "command line": by_cli(capsys, "sweep", [option, text]),
        "API": by_api(lambda: vanishing.sweep(**{key: value})),
        "TOML": by_toml(tmp_path, f"{key} = {toml}\n"),
    }
    if key in ("activations", "seeds"):  # compare takes these lists too
        messages["compare"] = by_cli(capsys, "compare", [option, text])
        messages["compare()"] = by_api(lambda: vanishing.compare(**{key: value}))
    assert all(m.startswith(message) for m in messages.values()), messages
    assert len(set(messages.values())) == 1, messages


def test_rules_across_settings_say_the_same_everywhere(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    momentum = "--momentum applies to --optimizer sgd only"
    assert by_cli(capsys, "train", ["--momentum", "0.9"]) == momentum
    assert by_api(lambda: vanishing.train(momentum=0.9)) == momentum
    assert by_form({"momentum": "0.9", "optimizer": "adam"}) == momentum
    assert parse_config({"momentum": "0", "optimizer": "adam"}).momentum == 0  # no momentum
    residual = by_cli(capsys, "train", ["--residual", "--hidden", "8,4"])
    assert residual.startswith("residual connections need equal hidden widths")
    assert by_api(lambda: vanishing.train(residual=True, hidden=[8, 4])) == residual
    assert by_form({"residual": "yes", "hidden": "8,4"}) == residual
    assert by_toml(tmp_path, "residuals = [true]\nhidden = [8, 4]\n") == residual
    depth = by_cli(capsys, "train", ["--depth", "0"])
    assert depth == "depth must be 1 to 10000 hidden layers, got 0"
    assert by_api(lambda: vanishing.train(depth=0)) == depth
    assert by_form({"depth": "0"}) == depth


def test_the_largest_seed_is_taken_and_a_width_beyond_numbers_is_one_line(capsys):
    """2**64-1 is a seed the RNG takes (2**64 is refused above); a width of 10**400 is refused
    by its size: the memory check's float arithmetic would overflow on it, and a width of
    thousands of digits cannot even be printed whole."""
    assert codec.config({"seed": str(2**64 - 1)}).seed == 2**64 - 1
    assert len(naming.run_name(TrainConfig(seed=2**64 - 1)).encode()) < 255
    wide = by_api(lambda: vanishing.train(width=10**400))
    assert (
        wide
        == "a hidden width must be at most 1,000,000,000,000,000 units, got an integer of 1329 bits"
    )
    assert by_form({"width": str(10**400)}) == wide
    assert by_api(lambda: vanishing.train(hidden=[10**5000])).endswith("an integer of 16610 bits")
    assert by_api(lambda: vanishing.train(seed=-(10**5000))).endswith("an integer of 16610 bits")


def test_an_empty_form_field_is_the_default_and_an_empty_option_is_wrong(capsys):
    assert parse_config({"lr": "", "epochs": " ", "activation": "tanh"}).lr == 1e-3
    assert by_cli(capsys, "train", ["--lr", ""]) == "lr: expected float, got ''"
    assert by_api(lambda: vanishing.train(lr="")) == "lr: expected float, got ''"


# A setting added by declaring one field: a cure with an older default, a token and an axis.
NEW_SETTING = """
    dropout: float = setting(
        0.0,
        "a made-up setting that only tests add",
        why="none",
        metavar="P",
        axis="dropouts",
        cure=True,
        per_model=True,
        older=0.0,
        token=Token("drop{:g}", 8.5),
    )
"""

CHECKS = r"""
import json, sys
from pathlib import Path
from vanishing import records
from vanishing.frontends.cli import main
from vanishing.frontends.cli.parser import build_parser
from vanishing.reporting import loading, page
from vanishing.reporting.results import make_points
from vanishing.settings import codec, grid, naming
from vanishing.settings.config import TrainConfig, completed, cure_keys, per_model_fields
from vanishing.training.group import SHARED_FIELDS

data, out, older = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
commands = next(a for a in build_parser()._actions if a.dest == "command").choices
help_text = " ".join(commands["train"].format_help().split())
assert "--dropout P a made-up setting that only tests add (default: 0, none)" in help_text
assert "--dropouts P,.." in " ".join(commands["sweep"].format_help().split())
assert "dropout" in cure_keys() and "dropout" in per_model_fields()
assert "dropout" not in SHARED_FIELDS
spec = grid.spec_from_dict(
    {"dropouts": [0.0, 0.5], "depths": [2], "widths": [8], "activations": ["relu"], "seeds": [0]}
)
assert {c.dropout for c in grid.expand(spec)} == {0.0, 0.5}
assert codec.config({"dropout": "0.25"}).dropout == 0.25
names = {c.dropout: naming.run_name(c) for c in grid.expand(spec)}
assert "-drop" not in names[0.0] and "-clip" not in names[0.0], names
assert "-drop0.5-s0-" in names[0.5], names
assert naming.run_name(TrainConfig(hidden=(8, 8))) == older  # its older value: older names
assert completed({"activation": "relu"})["dropout"] == 0.0
common = ["--data-dir", data, "--no-verify", "--depths", "2", "--widths", "8", "--epochs", "1",
          "--batch-size", "32", "--probe-every", "5", "--probe-size", "32", "--device", "cpu",
          "--activations", "sigmoid", "--seeds", "0", "--out", str(out)]
assert main(["sweep", *common, "--dropouts", "0,0.5"]) == 0
dirs = sorted(p for p in out.iterdir() if (p / "result.json").is_file())
assert len(dirs) == 2
configs = [records.read_json(d / "config.json") for d in dirs]
assert sorted(c["dropout"] for c in configs) == [0.0, 0.5]
header = (out / "runs.csv").read_text().splitlines()[0].split(",")
assert "dropout" in header
# An older record (written before the setting existed) reads as its older value.
for name in ("config.json", "result.json"):
    path = dirs[0] / name
    values = json.loads(path.read_text())
    target = values.get("config", values)
    if target.get("dropout") == 0.0:
        del target["dropout"]
        path.write_text(json.dumps(values))
runs, notes = loading.load_runs([out])
assert sorted(r.config["dropout"] for r in runs) == [0.0, 0.5], notes
report = page.build_report([out])
tables = [b.table for b in report.figures if b.table is not None and b.table.css == "cures"]
assert tables, [b.anchor for b in report.figures]
labels = [row[0] for row in tables[0].rows]
assert any("dropout 0.5" in label for label in labels), labels
print("ok", labels)
"""


def test_a_setting_declared_once_reaches_everything(tmp_path, tiny_dir):
    """Add a field to a copy of the package's config.py, nothing else, and check --help, TOML,
    the records and runs.csv, run names, the groups of stacked models, the report's cure table
    and older records' defaults."""
    copy = tmp_path / "src" / "vanishing"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    config = copy / "settings" / "config.py"
    text = config.read_text()
    anchor = "    probe_every: int = setting("
    assert text.count(anchor) == 1
    config.write_text(text.replace(anchor, NEW_SETTING.lstrip("\n") + anchor))
    script = tmp_path / "checks.py"
    script.write_text(CHECKS)
    env = {**ENV, "PYTHONPATH": str(tmp_path / "src")}
    older = naming.run_name(TrainConfig(hidden=(8, 8)))  # named before the setting existed
    done = subprocess.run(
        [sys.executable, str(script), str(tiny_dir), str(tmp_path / "out"), older],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last == "ok ['Sigmoid, dropout 0', 'Sigmoid, dropout 0.5']", done.stdout
    assert os.path.samefile(SRC, Path(vanishing.__file__).parent)  # the real package untouched
