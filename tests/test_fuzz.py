"""Mutated MNIST files, crafted pickles and a tampered mirror: each is refused cleanly."""

from __future__ import annotations

import ast
import dataclasses
import functools
import gzip
import http.server
import pickle
import random
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import FILE_NAMES, make_arrays, write_arrays
from vanishing.data import datasets as data
from vanishing.data.idx import idx_bytes, read_bytes
from vanishing.errors import DataError

SRC = Path(data.__file__).parent


def tiny_spec(arrays, **changes) -> data.DatasetSpec:
    """MNIST with the tiny set's checksums and no network or system sources."""
    spec = dataclasses.replace(
        data.DATASETS["mnist"],
        md5=data.checksums(arrays),
        mirrors=(),
        wheel=None,
        system_dirs=(),
    )
    return dataclasses.replace(spec, **changes)


def mutate(rng: random.Random, raw: bytes, gz: bytes) -> tuple[str, bytes]:
    """One seeded mutation of a file: (what was done, the new bytes on disk, gzip-compressed)."""
    kind = rng.choice(
        ["bit flip", "gz bit flip", "truncate", "gz truncate", "header", "append", "gz append"]
    )
    if kind == "bit flip":
        i = rng.randrange(len(raw))
        return kind, gzip.compress(
            raw[:i] + bytes([raw[i] ^ (1 << rng.randrange(8))]) + raw[i + 1 :]
        )
    if kind == "gz bit flip":
        i = rng.randrange(len(gz))
        return kind, gz[:i] + bytes([gz[i] ^ (1 << rng.randrange(8))]) + gz[i + 1 :]
    if kind == "truncate":
        return kind, gzip.compress(raw[: rng.randrange(len(raw))])
    if kind == "gz truncate":
        return kind, gz[: rng.randrange(len(gz))]
    if kind == "header":
        i = rng.randrange(min(16, len(raw)))
        return kind, gzip.compress(raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1 :])
    extra = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    if kind == "append":
        return kind, gzip.compress(raw + extra)
    return kind, gz + extra


def test_mutated_files_end_in_a_clean_error_or_a_consistent_load(tmp_path, monkeypatch):
    arrays = make_arrays(20, 10)
    monkeypatch.setitem(data.DATASETS, "mnist", tiny_spec(arrays))
    raws = {role: idx_bytes(arrays[role]) for role in FILE_NAMES}
    gzs = {role: gzip.compress(raw) for role, raw in raws.items()}
    rng = random.Random(1234)
    outcomes: dict[str, int] = {}
    for case in range(300):
        folder = tmp_path / f"case{case}"
        folder.mkdir()
        for role, name in FILE_NAMES.items():
            (folder / (name + ".gz")).write_bytes(gzs[role])
        role = rng.choice(list(FILE_NAMES))
        kind, spoiled = mutate(rng, raws[role], gzs[role])
        target = folder / (FILE_NAMES[role] + ".gz")
        target.write_bytes(spoiled)
        verify = rng.random() < 0.5
        try:
            found, source, verified = data.load_arrays(data_dir=folder, verify=verify)
        except DataError as e:
            message = str(e)
            assert "\n" not in message, (case, kind, message)
            # Names the spoiled file, or the folder when the mismatch is between files.
            assert str(target) in message or str(folder) in message, (case, kind, message)
            outcomes["error"] = outcomes.get("error", 0) + 1
        else:
            assert verified is verify and source == str(folder)
            for split in ("train", "test"):
                images, labels = found[f"{split}_images"], found[f"{split}_labels"]
                assert images.shape == (len(labels), 28, 28) and labels.max() <= 9
            if verify:  # a verified load is byte for byte the original
                assert data.checksums(found) == data.checksums(arrays)
            outcomes["loaded"] = outcomes.get("loaded", 0) + 1
        shutil.rmtree(folder)
    # Both outcomes happen: the fuzz reaches past the header checks.
    assert outcomes["error"] > 100 and outcomes["loaded"] > 10, outcomes


def unicode(text: bytes) -> bytes:
    """The SHORT_BINUNICODE opcode pushing `text`."""
    return b"\x8c" + bytes([len(text)]) + text


def marker_commands(marker: Path) -> dict[str, bytes]:
    """Hand-made pickles, one per opcode route to a call, each trying to create `marker`."""
    cmd = f"touch {marker}".encode()
    code = f"__import__('os').system('touch {marker}')".encode()
    return {
        "GLOBAL os.system REDUCE": b"cos\nsystem\n(S'" + cmd + b"'\ntR.",
        "GLOBAL posix.system REDUCE": b"cposix\nsystem\n(S'" + cmd + b"'\ntR.",
        "GLOBAL builtins.eval REDUCE": b'cbuiltins\neval\n(S"' + code + b'"\ntR.',
        "GLOBAL __builtin__.exec": b'c__builtin__\nexec\n(S"' + code + b'"\ntR.',
        "GLOBAL subprocess.call": b"csubprocess\ncall\n((S'touch'\nS'"
        + str(marker).encode()
        + b"'\nltR.",
        "INST os.system": b"(S'" + cmd + b"'\nios\nsystem\n.",
        "OBJ os.system": b"(cos\nsystem\nS'" + cmd + b"'\no.",
        "getattr on an allowed class": b"cbuiltins\ngetattr\n(cnumpy\nndarray\nS'__reduce__'\ntR.",
        # protocol 4: STACK_GLOBAL, with a dotted name reaching past an allowed class.
        "STACK_GLOBAL numpy ndarray.__init__": b"\x80\x04"
        + unicode(b"numpy")
        + unicode(b"ndarray.__init__")
        + b"\x93.",
        "STACK_GLOBAL os system REDUCE": b"\x80\x04"
        + unicode(b"os")
        + unicode(b"system")
        + b"\x93"
        + unicode(cmd)
        + b"\x85R.",
    }


class Reducer:
    """Pickles as a call of `func(*args)`, as any malicious object would."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def reducer_pickles(marker: Path) -> dict[str, bytes]:
    """The same attacks written by pickle itself, in every protocol."""
    import builtins
    import os
    import subprocess

    attacks = {
        "os.system": Reducer(os.system, f"touch {marker}"),
        "subprocess.Popen": Reducer(subprocess.Popen, ["touch", str(marker)]),
        "builtins.eval": Reducer(builtins.eval, f"open({str(marker)!r}, 'w')"),
        "builtins.exec": Reducer(builtins.exec, f"open({str(marker)!r}, 'w')"),
        "nested in a tuple of arrays": ((np.zeros(2), Reducer(os.system, f"touch {marker}")),),
    }
    return {
        f"{name} protocol {p}": pickle.dumps(obj, protocol=p)
        for name, obj in attacks.items()
        for p in range(0, pickle.HIGHEST_PROTOCOL + 1)
    }


def test_restricted_unpickler_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    cases = {**marker_commands(marker), **reducer_pickles(marker)}
    assert len(cases) >= 30
    for name, raw in cases.items():
        with pytest.raises(DataError, match="refusing to load") as e:
            data.load_pickle(raw, "evil.pkl")
        assert str(e.value).startswith("evil.pkl: refusing to load "), name
        assert "only numpy arrays are allowed" in str(e.value)
        assert not marker.exists(), name
    # The same unpickler still reads what it is for: arrays, protocols 0-4 (5 writes arrays
    # through numpy's _frombuffer, which it does not allow; mnist.pkl.gz is protocol 2).
    for p in range(0, 5):
        back = data.load_pickle(
            pickle.dumps((np.arange(3.0), [np.ones(2, np.int64)]), protocol=p), "ok"
        )
        np.testing.assert_array_equal(back[0], np.arange(3.0))


def test_garbage_pickles_are_a_data_error():
    rng = random.Random(7)
    valid = pickle.dumps((np.zeros(3),), protocol=2)
    for _ in range(200):
        raw = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        try:
            data.arrays_from_pickle(data.load_pickle(bytes(raw), "p"), "p")
        except DataError as e:
            assert str(e).startswith("p: ") and "\n" not in str(e)


def unchecked_calls(source: str) -> list[int]:
    """Lines of calls that ruff's S rules do not flag but we refuse in the package.

    ruff flags eval, exec, pickle.load(s) and shell=True (S307, S102, S301, S602/S604); it has
    no rule for compile() or __import__(), nor for a torch.load without weights_only=True.
    """
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        weights_only = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
        if name in ("compile", "__import__") or (
            name == "torch.load"
            and not (isinstance(weights_only, ast.Constant) and weights_only.value is True)
        ):
            lines.append(node.lineno)
    return lines


def test_the_source_loads_weights_only_and_compiles_no_code():
    bad = (
        "torch.load(path)\n"
        "torch.load(\n    path, weights_only=False\n)\n"
        "compile('1', 'x', 'eval')\n"
        "__import__('os')\n"
        "torch.load(path, map_location='cpu', weights_only=True)\n"
        "torch.compile(model)\n"
    )
    assert unchecked_calls(bad) == [1, 2, 5, 6]
    for path in sorted(SRC.rglob("*.py")):
        assert unchecked_calls(path.read_text()) == [], path.name


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local HTTP mirror on 127.0.0.1 serving tmp_path/served; yields (folder, base URL)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.delenv("VANISHING_OFFLINE")
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_tampered_mirror_is_refused_and_nothing_is_cached(mirror, tmp_path, monkeypatch):
    served, base = mirror
    arrays = make_arrays(20, 10)
    tampered = {**arrays, "test_labels": (arrays["test_labels"] + 1) % 10}
    write_arrays(served, tampered, gz=True)
    monkeypatch.setitem(data.DATASETS, "mnist", tiny_spec(arrays, mirrors=(base,)))
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as e:
        data.load_dataset(cache_dir=cache)
    message = str(e.value)
    assert f"mirror {base}" in message or base in message
    assert "t10k-labels-idx1-ubyte is not the canonical mnist file" in message
    assert not cache.exists() or not any(cache.rglob("*"))


def test_correct_mirror_is_accepted_and_cached(mirror, tmp_path, monkeypatch):
    served, base = mirror
    arrays = make_arrays(20, 10)
    write_arrays(served, arrays, gz=True)
    monkeypatch.setitem(data.DATASETS, "mnist", tiny_spec(arrays, mirrors=(base,)))
    cache = tmp_path / "cache"
    first = data.load_dataset(cache_dir=cache)
    assert first.verified and first.source == f"mirror {base}"
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(FILE_NAMES.values())
    shutil.rmtree(served)  # the mirror is gone: the cache answers
    second = data.load_dataset(cache_dir=cache)
    assert second.verified and second.source.startswith("cache ")
    np.testing.assert_array_equal(second.test_labels.numpy(), arrays["test_labels"])


def test_gzip_bomb_from_a_mirror_is_refused_without_filling_memory(mirror, monkeypatch):
    import tracemalloc

    served, base = mirror
    limit = 1_000_000
    monkeypatch.setattr(data, "MAX_BYTES", limit)
    monkeypatch.setattr(data, "gunzip", functools.partial(data.gunzip, limit=limit))
    (served / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(50 * limit)))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="larger than 1000000 bytes"):
            data.from_mirror(data.DATASETS["mnist"], base)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * limit


@pytest.mark.parametrize("shape, descr", [((10**12,), "|u1"), ((10**9,), "<f8"), ((3,), "|O")])
def test_npz_with_a_huge_declared_shape_is_refused_before_allocating(tmp_path, shape, descr):
    """numpy would reserve the declared size first (931 GiB: a MemoryError traceback)."""
    import io
    import tracemalloc
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    path = tmp_path / "mnist.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for key in ("x_train", "y_train", "x_test", "y_test"):
            zf.writestr(key + ".npy", header.getvalue() + bytes(10))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="truncated or corrupt") as e:
            data.read_npz(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(e.value).startswith(f"{path}: x_train declares shape") and peak < 1_000_000


def test_npz_that_is_not_a_zip_is_a_data_error(tmp_path):
    path = tmp_path / "mnist.npz"
    np.save(path.with_suffix(".npy"), np.zeros(3))
    path.with_suffix(".npy").rename(path)
    with pytest.raises(DataError, match="not a readable .npz file"):
        data.read_npz(path)


def test_each_data_message(tmp_path, tiny_arrays):
    """The messages that the fuzz reaches only by chance, each produced on purpose once."""
    with pytest.raises(DataError, match=r"data directory \S+ does not exist"):
        data.load_dataset(data_dir=tmp_path / "nowhere", verify=False)
    (tmp_path / "dir.idx").mkdir()
    with pytest.raises(DataError, match=r"dir\.idx: cannot read \("):
        read_bytes(tmp_path / "dir.idx")
    (tmp_path / "big").write_bytes(bytes(101))
    with pytest.raises(DataError, match="larger than 100 bytes uncompressed; not an IDX data"):
        read_bytes(tmp_path / "big", limit=100)
    flat = {**tiny_arrays, "train_images": tiny_arrays["train_images"].reshape(320, 784)}
    with pytest.raises(DataError, match=r"train images have shape \(320, 784\), need"):
        data.check_arrays(flat, "src")
    empty = {**tiny_arrays, "test_images": np.zeros((0, 28, 28), np.uint8)}
    empty["test_labels"] = np.zeros(0, np.uint8)
    with pytest.raises(DataError, match="src: the test split is empty"):
        data.check_arrays(empty, "src")
    np.savez(
        tmp_path / "mnist.npz",
        x_train=tiny_arrays["train_images"].astype(np.float32),
        y_train=tiny_arrays["train_labels"],
        x_test=tiny_arrays["test_images"],
        y_test=tiny_arrays["test_labels"],
    )
    with pytest.raises(DataError, match="train_images must hold integers 0-255, found dtype"):
        data.read_npz(tmp_path / "mnist.npz")
    with pytest.raises(DataError, match=r"w\.whl:m: cannot read \("):
        data.read_wheel_pickle(tmp_path / "w.whl", "m")
    nan = (np.full((1, 784), np.nan), np.zeros(1))
    with pytest.raises(DataError, match=r"p: image values outside \[0, 255/256\]"):
        data.arrays_from_pickle((nan, nan, nan), "p")
