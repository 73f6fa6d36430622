"""Ways a run directory's records get damaged: by hand, by a full disk, by a foreign tool, by an
attacker. Each is a function of the run directory; `CATALOGUE` names every one the readers are
tried on (tests/test_records_fuzz.py), `json_values` draws any JSON value for the rest."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from vanishing import records

Damage = Callable[[Path], None]
DEEP = "[" * 100_000 + "]" * 100_000  # deeper than any JSON parser recurses
FILES = (records.CONFIG, records.RESULT, records.METRICS)


def replace(name: str, data: bytes | str) -> Damage:
    """The file's bytes replaced."""

    def damage(run_dir: Path) -> None:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return damage


def directory(name: str) -> Damage:
    """The file replaced by a directory of that name."""

    def damage(run_dir: Path) -> None:
        (run_dir / name).unlink(missing_ok=True)
        (run_dir / name).mkdir()

    return damage


def fifo(name: str) -> Damage:
    """The file replaced by a FIFO (a named pipe) no process writes: a reader must not wait."""

    def damage(run_dir: Path) -> None:
        (run_dir / name).unlink(missing_ok=True)
        os.mkfifo(run_dir / name)

    return damage


def removed(name: str) -> Damage:
    return lambda run_dir: (run_dir / name).unlink(missing_ok=True)


def set_key(name: str, key: str, value: Any) -> Damage:
    """One key of a JSON record (config.json, result.json) set to `value`."""

    def damage(run_dir: Path) -> None:
        path = run_dir / name
        if not path.is_file():
            return
        record = json.loads(path.read_text())
        record[key] = value
        path.write_text(json.dumps(record))

    return damage


def rows(change: Callable[[list[dict[str, Any]]], list[Any]]) -> Damage:
    """metrics.jsonl's rows changed: each item of the new list a row (bytes: a raw line)."""

    def damage(run_dir: Path) -> None:
        path = run_dir / records.METRICS
        old = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_bytes(
            b"".join(
                item if isinstance(item, bytes) else (json.dumps(item) + "\n").encode()
                for item in change(old)
            )
        )

    return damage


def set_in_rows(key: str, value: Any) -> Damage:
    """One key of every metrics row set to `value`."""
    return rows(lambda old: [{**row, key: value} for row in old])


def catalogue() -> dict[str, Damage]:
    """Every damage by name: whole files, each setting and result field of a wrong type or
    value, and metrics lines of every wrong kind."""
    cases: dict[str, Damage] = {}
    whole = {
        "empty": "",
        "not JSON": "{",
        "null": "null",
        "a list": "[1]",
        "a string": '"x"',
        "a number": "3",
        "nested too deeply": DEEP,
        "not UTF-8": b'{"activation": "\xff\xfe"}',
        "NaN": '{"a": NaN}',
        "an integer of 5000 digits": '{"a": ' + "9" * 5000 + "}",
        "NUL bytes": b"\0" * 64,
    }
    for name in (records.CONFIG, records.RESULT):
        for what, data in whole.items():
            cases[f"{name} {what}"] = replace(name, data)
        cases[f"{name} a directory"] = directory(name)
        cases[f"{name} a FIFO"] = fifo(name)
    wrong: dict[str, list[Any]] = {
        "activation": [["relu"], {"a": 1}, 3, None, "nope", "x" * 200_000],
        "init": [["x"], 3, "nope", None, "x" * 200_000],
        "hidden": [8, "8", [8, "x"], [True], [-1], [], [0], [1.5], None, {"a": 1}, [2**70]],
        "optimizer": [["adam"], 3, "nope"],
        "lr": ["x", [1], -1, None, 1e400],
        "seed": ["x", [0], -1, 2**70, 1.5],
        "dataset": [["mnist"], 3, "nope"],
        "batch_size": ["x", 0, [1]],
        "epochs": ["x", -1, [1]],
        "norm": [["batch"], 3, "nope"],
        "residual": ["x", [1]],
        "momentum": ["x", [1], 2],
        "probe_every": ["x", 0],
        "probe_size": [0, "x"],
        "device": [["cpu"], 3],
        "negative_slope": ["x", -1],
        "clip_grad_norm": ["x", [1], 0],
        "init_gain": ["x", 0],
        "prelu_mode": [["x"], "nope"],
    }
    for key, values in wrong.items():
        for value in values:
            cases[f"config {key}={json.dumps(value)[:24]}"] = set_key(records.CONFIG, key, value)
    results: dict[str, list[Any]] = {
        "status": ["weird", None, ["ok"], 3],
        "config": ["x", [1], None, 3, {"activation": ["relu"]}],
        "test_accuracy": ["x", [1], None, {"a": 1}, True],
        "test_loss": ["x", [1]],
        "history": ["x", [1], [None], [{"epoch": "x"}], {"a": 1}, None, [{"epoch": 1, "x": []}]],
        "grad_norms_init": ["x", [None], {"a": 1}, 3],
        "signal_norms_init": ["x", {"a": 1}],
        "grad_norms_final": [[["a"]], None],
        "dead_fraction": ["x", [["a"]]],
        "saturated_fraction": [3, None],
        "steps": ["x", None, -1],
        "diverged_step": ["x", [1]],
        "norms_before_divergence": ["x", [1], {"grad_norms": "x"}],
        "error": [[1], 3],
        "train_seconds": ["x", None],
        "versions": ["x", [1]],
        "device": [[1], None],
        "vanishing_ratio_init": ["x", [1]],
        "clipped_steps": ["x", -1],
        "run_dir": [[1], 3],
        # a recurrent run's time profile and a regression's task (an MLP's records gain them)
        "time_signal_norms_init": ["x", [["a", None]], [None, 3], {"a": 1}],
        "time_signal_norms_final": [[[1.0], [1.0, 2.0, 0.0]], [[]]],
        "time_layers": [3, [1, None]],
        "gates_final": ["x", [3], [{"forget": "x"}], [{"forget": 0.5}, None]],
        "task": [3, "x", ["regression"], "regression"],
        "baseline_loss": ["x", [1], -1],
    }
    for key, values in results.items():
        for value in values:
            cases[f"result {key}={json.dumps(value)[:24]}"] = set_key(records.RESULT, key, value)
    cases["result.json lacking fields"] = replace(records.RESULT, '{"status": "ok"}')
    cases["result.json gone"] = removed(records.RESULT)
    lines: dict[str, Damage] = {
        "a line not UTF-8": rows(lambda old: old[:1] + [b"\xff\xfe\n"] + old[1:]),
        "a row with a byte not UTF-8": rows(
            lambda old: old[:1] + [b'{"kind": "probe", "step": 1, "x": "\xff"}\n'] + old[1:]
        ),
        "NUL bytes": rows(lambda old: [b"\0" * 100] + old),
        "rows that are lists": rows(lambda old: [[1, 2]] + old),
        "rows that are null, a number, a string": rows(lambda old: [None, 3, "x"] + old),
        "a row nested too deeply": rows(lambda old: [DEEP.encode() + b"\n"] + old),
        "a torn last row": rows(lambda old: [*old, b'{"kind": "pro']),
        "empty": replace(records.METRICS, ""),
        "gone": removed(records.METRICS),
        "a directory": directory(records.METRICS),
        "a FIFO": fifo(records.METRICS),
    }
    for what, damage in lines.items():
        cases[f"metrics.jsonl {what}"] = damage
    row_values: dict[str, list[Any]] = {
        "kind": [["probe"], "zzz", None],
        "step": ["x", None, -1, 10**30, 1.5],
        "epoch": ["x", [1], None],
        "grad_norms": [{"a": 1}, [[1, 2], [3]], [1.0] * 1000, [1.0], "x"],
        "signal_norms": ["x", [None]],
        "activation_histogram": ["x", [["x"], {"a": 1}], [{"edges": "x", "counts": [1]}]],
        "train_loss": ["x", [1]],
        "test_accuracy": [[1], "x"],
        "update_ratio": ["x", [[1]]],
        # a recurrent run's time profile (an MLP's rows gain it), every shape of wrong
        "time_signal_norms": ["x", [[None, 1.0]], [[1.0], [2.0, 3.0]], [3], [["a"]], [[]]],
        "time_layers": [[1], "x", ["a", "b", "c"]],
        "gates": ["x", [{"forget": "x"}], [3], [{"forget": 2.0}]],
        "gates_saturated": ["x", [{"input": [1]}]],
        "recurrent_norms": ["x", [[1]], [None]],
    }
    for key, values in row_values.items():
        for value in values:
            cases[f"rows {key}={json.dumps(value)[:24]}"] = set_in_rows(key, value)
    return cases


CATALOGUE = catalogue()

# Any JSON value, as a damaged or hostile record may hold one (nan and huge numbers included).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
