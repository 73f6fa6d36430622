"""Bad input tried systematically (hypothesis): IDX bytes, sweep TOML values, every CLI option."""

from __future__ import annotations

import argparse
import dataclasses
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_arrays, write_arrays
from vanishing.data.idx import idx_bytes, parse_idx, read_idx, write_idx
from vanishing.errors import DataError, UsageError
from vanishing.frontends import cli
from vanishing.frontends.cli.parser import build_parser
from vanishing.jobs import compare, sweep
from vanishing.jobs import train as train_job
from vanishing.settings import grid, naming
from vanishing.settings.config import TrainConfig, shape_token

# Deterministic and quick: the same examples on every run, no per-example deadline.
FAST = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FAST
@given(st.binary(max_size=64))
def test_random_bytes_are_an_array_or_a_data_error(raw):
    try:
        array = parse_idx(raw, "f")
    except DataError as e:
        assert str(e).startswith("f: ") and "\n" not in str(e)
        return
    # Accepted only when the header's shape accounts for every byte after it.
    header = 4 + 4 * raw[3]
    assert array.dtype == np.uint8 and array.size == len(raw) - header
    assert array.shape == struct.unpack(f">{raw[3]}I", raw[4:header])


shapes = st.lists(st.integers(0, 6), min_size=1, max_size=4).map(tuple)


@FAST
@given(shapes, st.data())
def test_round_trip_and_every_truncation_is_refused(shape, draw):
    array = np.arange(int(np.prod(shape)), dtype=np.uint8).reshape(shape)
    raw = idx_bytes(array)
    np.testing.assert_array_equal(parse_idx(raw), array)
    cut = draw.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DataError, match="truncated"):
        parse_idx(raw[:cut])
    extra = draw.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(DataError, match="truncated or corrupt"):
        parse_idx(raw + extra)  # appended bytes are as wrong as missing ones


@FAST
@given(st.lists(st.integers(2**16, 2**32 - 1), min_size=1, max_size=4), st.binary(max_size=32))
def test_huge_declared_sizes_allocate_nothing(dims, payload):
    raw = struct.pack(">HBB", 0, 8, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + payload
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="truncated or corrupt"):
            parse_idx(raw, "huge")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_reading_a_small_file_reserves_no_large_buffer(tmp_path):
    """Reading used to call f.read(256 MB + 1), which reserves the whole limit up front."""
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, np.zeros((3, 28, 28), np.uint8))
        tracemalloc.start()
        try:
            read_idx(tmp_path / name)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 5_000_000, (name, peak)


FIELDS = [f.name for f in dataclasses.fields(grid.SweepSpec)]  # every valid key
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 5),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False),
    st.sampled_from(["relu", "sigmoid", "adam", "sgd", "xavier", "cpu", "mnist", "layer", ""]),
    st.text(max_size=8),
)
toml_values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(), scalars))
# Keys without line breaks: those are test_toml_key_with_a_newline_is_one_line's subject.
keys = st.one_of(st.sampled_from(FIELDS), st.text(alphabet="abcxyz_- .", max_size=10))


@FAST
@given(st.dictionaries(keys, toml_values, max_size=5))
def test_sweep_values_give_a_spec_or_a_usage_error(values):
    try:
        spec = grid.spec_from_dict(values, "f.toml")
    except UsageError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(spec, grid.SweepSpec) and grid.expand(spec)


def test_toml_key_with_a_newline_is_one_line(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('"a\\nb" = 1\n')
    with pytest.raises(UsageError) as e:
        grid.spec_from_dict(grid.read_toml(path), str(path))
    assert len(str(e.value).splitlines()) == 1


@FAST
@given(st.text(max_size=80) | st.binary(max_size=80))
def test_toml_text_gives_a_spec_or_a_usage_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("toml") / "grid.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    try:
        grid.spec_from_dict(grid.read_toml(path), str(path))
    except UsageError as e:
        assert str(e).startswith(str(path)) or "must be" in str(e) or "give at least" in str(e)


class ReachedWork(Exception):
    """Raised in place of training: every option was accepted."""


def subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(argv prefix, leaf parser) for every command that runs something."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        yield prefix, parser
        return
    for name, sub in actions[0].choices.items():
        yield from subcommands(sub, prefix + (name,))


def every_option() -> list[tuple[tuple[str, ...], str, argparse.Action]]:
    cases = []
    for prefix, parser in subcommands(build_parser()):
        if prefix == ("live",):  # a valid value serves until stopped: tests/test_live.py
            continue
        for action in parser._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                cases.append((prefix, action.option_strings[-1], action))
    return cases


OPTIONS = every_option()
# Text drawn from characters that cannot name a place outside the test's directory.
safe_text = st.text(alphabet="abcxyz019_.,-+ eE", max_size=12)
option_values = st.one_of(
    safe_text,
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["0", "-1", "1", "nan", "inf", "-inf", "1e400", "", ",", "all", "0.5"]),
    st.floats(allow_nan=True, allow_subnormal=False).map(repr),
)


def base_argv(prefix: tuple[str, ...], data_dir: Path) -> list[str]:
    """The valid options around the one being fuzzed: the tiny data set, nothing heavy."""
    if prefix == ("report",):
        return ["report", "runs-here"]
    if prefix == ("export",):
        return ["export", "runs-here", "--to", "tensorboard"]
    argv = [*prefix, "--data-dir", str(data_dir), "--no-verify"]
    if prefix in (("compare",), ("train",)):
        argv += ["--hidden", "4", "--epochs", "1", "--device", "cpu"]
    if prefix == ("sweep",):
        argv += ["--hidden", "4", "--epochs", "1", "--seeds", "0", "--workers", "1"]
    return argv


@pytest.fixture(scope="module")
def shared_tiny_dir(tmp_path_factory) -> Path:
    """One tiny data set for every option: made once, never written to (--no-verify)."""
    return write_arrays(tmp_path_factory.mktemp("tiny"), make_arrays(), gz=True)


@pytest.mark.parametrize(
    "prefix, option, action", OPTIONS, ids=[" ".join(p) + " " + o for p, o, _ in OPTIONS]
)
def test_every_option_exits_0_or_2_with_one_line(
    prefix, option, action, shared_tiny_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs-here").mkdir()

    def stop(*args, **kwargs):
        raise ReachedWork

    monkeypatch.setattr(compare, "compare", stop)
    monkeypatch.setattr(sweep, "sweep", stop)
    monkeypatch.setattr(train_job, "train", stop)
    flag = action.nargs == 0

    @settings(FAST, max_examples=1 if flag else 12)
    @given(option_values)
    def check(value):
        argv = base_argv(prefix, shared_tiny_dir) + ([option] if flag else [f"{option}={value}"])
        try:
            code = cli.main(argv)
        except ReachedWork:
            code = 0
        except SystemExit as e:  # argparse's own errors
            code = e.code
        err = capsys.readouterr().err
        assert "Traceback" not in err
        # `data verify` exits 1 when a file differs from the canonical one (the tiny set does).
        assert code in ((0, 1, 2) if prefix == ("data", "verify") else (0, 2)), (argv, code, err)
        if code == 2:
            last = err.strip().splitlines()[-1]
            assert last.startswith("vanishing ") and ": error: " in last, (argv, err)

    check()


@FAST
@given(
    st.integers(2**64, 2**300),
    st.sampled_from(["train --seed", "compare --seeds", "sweep --seeds"]),
)
def test_a_seed_the_generator_cannot_take_exits_2_with_one_line(capsys, tmp_path, seed, where):
    """torch.Generator.manual_seed takes 0 to 2**64-1: a larger seed is refused where it is
    parsed, from every command, not met by the RNG in the middle of a run."""
    command, option = where.split()
    code = cli.main([command, option, str(seed), "--out", str(tmp_path / "never-written")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (
        f"vanishing {command}: error: seed must be an integer 0 to 2**64-1, got {seed}"
    )
    assert not (tmp_path / "never-written").exists()


@FAST
@given(
    st.one_of(  # short lists of widths, and long ones (hypothesis draws few long by itself)
        st.lists(st.integers(1, 10**15), min_size=1, max_size=12),
        st.lists(st.integers(1, 10**15), min_size=40, max_size=300),
    ),
    st.integers(0, 2**64 - 1),
    st.floats(1e-9, 10.0),
)
def test_every_run_name_fits_a_file_name(hidden, seed, lr):
    """A run directory's name is at most 255 bytes whatever the widths (a long --hidden), and
    a name that fits is the settings' tokens and their digest, whole."""
    config = TrainConfig(hidden=tuple(hidden), seed=seed, lr=lr)
    name = naming.run_name(config)
    assert 0 < len(name.encode()) <= 255 and "/" not in name and ".." not in name
    tokens = [config.activation, shape_token(config.hidden), "default", "adam", f"lr{lr:g}"]
    whole = "-".join([*tokens, f"s{seed}", name.rsplit("-", 1)[1]])
    assert name == whole if len(whole) <= 255 else name.endswith(f"-s{seed}-" + whole[-10:])
