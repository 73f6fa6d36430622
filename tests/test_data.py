"""The IDX reader and the data layer: round trips, every bad input, sources, verification, cache."""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import shutil
import socket
import struct
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import FILE_NAMES, make_arrays, write_arrays
from vanishing.data import datasets as data
from vanishing.data.idx import idx_bytes, parse_idx, read_idx, write_idx
from vanishing.errors import DataError
from vanishing.frontends.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def tiny_spec(arrays, base: str = "mnist", **changes) -> data.DatasetSpec:
    """A spec with the tiny data set's checksums and no network or system sources but `changes`."""
    spec = dataclasses.replace(
        data.DATASETS[base],
        md5=data.checksums(arrays),
        mirrors=(),
        wheel=None,
        deb=None,
        system_dirs=(),
    )
    return dataclasses.replace(spec, **changes)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3, 4, 5)])
def test_idx_round_trip(tmp_path, gz, shape):
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == shape
    np.testing.assert_array_equal(back, array)


def test_idx_header_layout():
    # The canonical MNIST label header: magic 0x00000801, then the count, big-endian.
    raw = idx_bytes(np.array([1, 2, 3], dtype=np.uint8))
    assert raw == bytes.fromhex("00000801 00000003") + bytes([1, 2, 3])


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x00\x00", "truncated IDX header"),
        (bytes.fromhex("00000803 00000002 0000001c"), "truncated IDX header"),
        (bytes.fromhex("00000901 00000001") + b"\x00", "wrong IDX magic number 0x00000901"),
        (bytes.fromhex("00000d01 00000001") + b"\x00" * 4, "wrong IDX magic number"),
        (bytes.fromhex("00000801 00000005") + b"\x00" * 3, "declares shape (5,)"),
        # A header declaring ~4 GB must be refused without allocating it.
        (bytes.fromhex("00000803 ffffffff 0000001c 0000001c"), "truncated or corrupt"),
    ],
)
def test_parse_idx_rejects(raw, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_idx(raw, "f")


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"0123456789" * 100)[:30])
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(path)


def test_load_from_data_dir_plain_and_gz(tmp_path, tiny_arrays):
    for gz in (False, True):
        folder = write_arrays(tmp_path / f"d{gz}", tiny_arrays, gz=gz)
        ds = data.load_dataset(data_dir=folder, verify=False)
        assert (
            ds.train_images.shape == (320, 28, 28) and str(ds.train_images.dtype) == "torch.uint8"
        )
        assert str(ds.train_labels.dtype) == "torch.int64"
        np.testing.assert_array_equal(ds.test_images.numpy(), tiny_arrays["test_images"])
        assert not ds.verified


def test_torchvision_root_and_npz(tmp_path, tiny_arrays):
    write_arrays(tmp_path / "root" / "MNIST" / "raw", tiny_arrays, gz=True)
    ds = data.load_dataset(data_dir=tmp_path / "root", verify=False)
    assert ds.source.endswith("MNIST/raw")
    np.savez(
        tmp_path / "mnist.npz",
        x_train=tiny_arrays["train_images"],
        y_train=tiny_arrays["train_labels"],
        x_test=tiny_arrays["test_images"],
        y_test=tiny_arrays["test_labels"],
    )
    for where in (tmp_path, tmp_path / "mnist.npz"):
        ds = data.load_dataset(data_dir=where, verify=False)
        assert ds.source.endswith("mnist.npz")
        np.testing.assert_array_equal(ds.train_labels.numpy(), tiny_arrays["train_labels"])


def test_verification_names_file_source_and_fix(tiny_dir):
    with pytest.raises(DataError) as e:
        data.load_dataset(data_dir=tiny_dir)
    message = str(e.value)
    assert "train-images-idx3-ubyte is not the canonical mnist file" in message
    assert str(tiny_dir) in message and "--no-verify" in message


def test_verified_load_is_cached_and_reported_in_order(tmp_path, tiny_arrays, monkeypatch):
    system = write_arrays(tmp_path / "system", tiny_arrays, gz=True)
    monkeypatch.setitem(data.DATASETS, "mnist", tiny_spec(tiny_arrays, system_dirs=(str(system),)))
    cache = tmp_path / "cache"
    said: list[str] = []
    first = data.load_dataset(cache_dir=cache, report=said.append)
    assert first.verified and first.source == str(system)
    assert [s for s in said if "trying" in s] == [
        f"mnist: trying cache {cache / 'mnist'}",
        f"mnist: trying system files {system}",
    ]
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(FILE_NAMES.values())
    said.clear()
    start = time.perf_counter()
    second = data.load_dataset(cache_dir=cache, report=said.append)
    assert time.perf_counter() - start < 1.0
    assert second.source == f"cache {cache / 'mnist'}" and second.verified
    assert said[-1].endswith("(verified)") and len(said) == 2


def test_failed_cache_write_leaves_no_partial_file(tmp_path, tiny_arrays, monkeypatch):
    calls = {"n": 0}
    real = data.idx_bytes

    def failing(array):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(array)

    monkeypatch.setattr(data, "idx_bytes", failing)
    with pytest.raises(OSError):
        data.write_cache(data.DATASETS["mnist"], tmp_path, tiny_arrays)
    names = [p.name for p in (tmp_path / "mnist").iterdir()]
    assert not [n for n in names if n.endswith(".tmp")]
    # Two complete files, no third: the cache is not taken as present.
    assert data.read_cache(data.DATASETS["mnist"], tmp_path) is None


def test_every_source_failing_lists_what_was_tried(tmp_path, monkeypatch):
    spec = dataclasses.replace(data.DATASETS["fashion-mnist"], system_dirs=(str(tmp_path / "no"),))
    monkeypatch.setitem(data.DATASETS, "fashion-mnist", spec)
    with pytest.raises(DataError) as e:
        data.load_dataset("fashion-mnist", cache_dir=tmp_path / "empty", remote=False)
    message = str(e.value)
    assert (
        "no source has fashion-mnist" in message and "cache" in message and "--data-dir" in message
    )


def test_mirror_fails_fast_when_unreachable(tiny_arrays):
    with socket.socket() as s:  # a port on loopback that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(DataError, match=f"127.0.0.1:{port}"):
        data.from_mirror(data.DATASETS["mnist"], f"http://127.0.0.1:{port}/")
    assert time.perf_counter() - start < 5


def pickle_bytes(arrays) -> bytes:
    """The mnist.pkl.gz layout: (train, valid, test) pairs of float32 pixel/256 and int64 labels."""

    def pair(images, labels):
        return images.reshape(len(images), -1).astype(np.float32) / 256, labels.astype(np.int64)

    n = len(arrays["train_images"]) * 5 // 6
    train = pair(arrays["train_images"][:n], arrays["train_labels"][:n])
    valid = pair(arrays["train_images"][n:], arrays["train_labels"][n:])
    test = pair(arrays["test_images"], arrays["test_labels"])
    return pickle.dumps((train, valid, test), protocol=2)


def make_wheel(path: Path, pickled: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickled))
    return path


def test_wheel_pickle_gives_the_original_bytes(tmp_path, tiny_arrays):
    wheel = make_wheel(tmp_path / "m.whl", pickle_bytes(tiny_arrays))
    arrays = data.read_wheel_pickle(wheel, "mnist/data/mnist.pkl.gz")
    assert data.checksums(arrays) == data.checksums(tiny_arrays)


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned-by-pickle",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wheel = make_wheel(tmp_path / "evil.whl", pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(DataError, match=r"refusing to load (posix|os|nt)\.system"):
        data.read_wheel_pickle(wheel, "mnist/data/mnist.pkl.gz")
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_pickle_of_wrong_shape_is_a_clear_error(tmp_path):
    wheel = make_wheel(tmp_path / "w.whl", pickle.dumps([np.zeros(3)], protocol=2))
    with pytest.raises(DataError, match="three \\(images, labels\\) pairs"):
        data.read_wheel_pickle(wheel, "mnist/data/mnist.pkl.gz")


def corrupt(folder: Path, role: str, raw: bytes) -> None:
    (folder / (FILE_NAMES[role] + ".gz")).write_bytes(gzip.compress(raw))


BAD_INPUTS = {
    "missing file": (
        lambda d: (d / "t10k-labels-idx1-ubyte.gz").unlink(),
        "missing t10k-labels-idx1-ubyte",
    ),
    "truncated file": (
        lambda d: corrupt(d, "train_images", idx_bytes(np.zeros((320, 28, 28), np.uint8))[:5000]),
        "truncated or corrupt",
    ),
    "wrong magic": (
        lambda d: corrupt(d, "train_labels", b"\x00\x00\x09\x01" + bytes(324)),
        "wrong IDX magic number",
    ),
    "count mismatch": (
        lambda d: corrupt(d, "train_labels", idx_bytes(np.zeros(319, np.uint8))),
        "320 train images but 319 train labels",
    ),
    "label out of range": (
        lambda d: corrupt(d, "test_labels", idx_bytes(np.full(80, 10, np.uint8))),
        "test labels outside 0-9",
    ),
    "corrupt gzip": (
        lambda d: (d / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage"),
        "corrupt gzip",
    ),
    "npz missing keys": (
        lambda d: (
            [p.unlink() for p in d.iterdir()]
            and np.savez(d / "mnist.npz", x_train=np.zeros((1, 28, 28), np.uint8))
        ),
        "without key(s) y_train",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2(capsys, tiny_dir, case):
    spoil, message = BAD_INPUTS[case]
    spoil(tiny_dir)
    code, out, err = run_cli(capsys, "data", "fetch", "--data-dir", str(tiny_dir), "--no-verify")
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("vanishing data fetch: error: ") and message in last
    assert "Traceback" not in err


def test_cli_unknown_dataset_and_option(capsys):
    code, _, err = run_cli(capsys, "data", "info", "--dataset", "cifar")
    assert code == 2
    assert err.strip() == (
        "vanishing data info: error: unknown data set 'cifar'; choose from: mnist, "
        "fashion-mnist, adding"
    )
    with pytest.raises(SystemExit) as e:
        main(["data", "fetch", "--bogus"])
    assert e.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_cli_fetch_info_verify_on_tiny_data(capsys, tmp_path, tiny_arrays, monkeypatch):
    system = write_arrays(tmp_path / "system", tiny_arrays, gz=False)
    monkeypatch.setitem(data.DATASETS, "mnist", tiny_spec(tiny_arrays, system_dirs=(str(system),)))
    code, out, _ = run_cli(capsys, "data", "fetch")
    assert code == 0 and f"320 train + 80 test images from {system}, verified" in out
    code, out, _ = run_cli(capsys, "data", "info")
    assert code == 0 and "verified (all four MD5s match)" in out and "320 images" in out
    counts = np.bincount(tiny_arrays["train_labels"], minlength=10)
    assert f"0:{counts[0]}, 1:{counts[1]}" in out
    code, out, _ = run_cli(capsys, "data", "verify")
    assert code == 0 and out.count(" OK ") == 4
    # A file changed in the cache is caught by verify (exit 1) and by loading (exit 2).
    cached = Path(data.default_cache_dir()) / "mnist" / "t10k-labels-idx1-ubyte"
    labels = tiny_arrays["test_labels"].copy()
    labels[0] = (labels[0] + 1) % 10
    write_idx(cached, labels)
    code, out, err = run_cli(capsys, "data", "verify")
    assert code == 1 and "t10k-labels-idx1-ubyte" in out and "MISMATCH" in out
    code, _, err = run_cli(capsys, "data", "info")
    assert code == 2 and "not the canonical mnist file" in err


def test_data_dir_from_environment(tiny_dir, monkeypatch):
    monkeypatch.setenv("VANISHING_DATA", str(tiny_dir))
    assert data.load_dataset(verify=False).source == str(tiny_dir)


@pytest.mark.realdata
def test_real_mnist_through_the_registry(tmp_path, monkeypatch):
    monkeypatch.delenv("VANISHING_OFFLINE")
    spec = data.DATASETS["mnist"]
    arrays = data.from_registry(spec)
    assert data.checksums(arrays) == spec.md5
    assert np.bincount(arrays["train_labels"]).tolist() == list(spec.train_counts)
    data.write_cache(spec, tmp_path, arrays)
    start = time.perf_counter()
    ds = data.load_dataset(cache_dir=tmp_path, remote=False)
    assert time.perf_counter() - start < 1.0
    assert ds.verified and ds.train_images.shape == (60000, 28, 28)


FASHION_DEB = data.DATASETS["fashion-mnist"].deb  # (package, folder inside it)
BY_HAND = (
    "by hand: `apt-get download dataset-fashion-mnist && "
    "dpkg-deb -x dataset-fashion-mnist_*.deb DIR`, "
    "then pass --data-dir DIR/usr/share/datasets/fashion-mnist"
)
needs_dpkg_deb = pytest.mark.skipif(
    shutil.which("dpkg-deb") is None, reason="dpkg-deb builds and unpacks the test's .deb"
)


def make_deb(folder: Path, arrays, inside: str = FASHION_DEB[1]) -> Path:
    """A tiny `dataset-fashion-mnist` package with the arrays as `.gz` IDX files in `inside`."""
    root = folder / "root"
    write_arrays(root / inside, arrays, gz=True)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(
        "Package: dataset-fashion-mnist\nVersion: 1\nArchitecture: all\n"
        "Maintainer: Tests <tests@localhost>\nDescription: tiny Fashion-MNIST for tests\n"
    )
    deb = folder / "dataset-fashion-mnist_1_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


def fake_apt_get(monkeypatch, bin_dir: Path, script: str) -> Path:
    """An `apt-get` first on PATH that runs the shell `script` (and logs its arguments and cwd)."""
    bin_dir.mkdir(exist_ok=True)
    log = bin_dir / "apt-get.log"
    tool = bin_dir / "apt-get"
    tool.write_text(f'#!/bin/sh\necho "$PWD $*" >> {log}\n{script}\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


@needs_dpkg_deb
def test_fashion_mnist_through_apt_get_download(capsys, tmp_path, tiny_arrays, monkeypatch):
    monkeypatch.delenv("VANISHING_OFFLINE")
    spec = tiny_spec(tiny_arrays, "fashion-mnist", deb=FASHION_DEB)
    monkeypatch.setitem(data.DATASETS, "fashion-mnist", spec)
    deb = make_deb(tmp_path / "deb", tiny_arrays)
    log = fake_apt_get(monkeypatch, tmp_path / "bin", f"cp {deb} .")
    code, out, err = run_cli(capsys, "data", "fetch", "--dataset", "fashion-mnist")
    source = "Debian package dataset-fashion-mnist via apt-get download"
    assert code == 0 and f"320 train + 80 test images from {source}, verified" in out
    assert f"fashion-mnist: trying {source}" in err
    # apt-get ran once, to download this package, in a temporary folder removed afterwards.
    (line,) = log.read_text().splitlines()
    cwd, args = line.split(" ", 1)
    assert args.startswith("download ") and args.endswith(" dataset-fashion-mnist")
    assert not Path(cwd).exists()
    cache = data.default_cache_dir() / "fashion-mnist"
    cached = data.read_cache(spec, cache.parent)
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILE_NAMES.values())
    assert data.checksums(cached) == data.checksums(tiny_arrays)
    # Offline, the download is not tried: with the cache gone, nothing has the data.
    monkeypatch.setenv("VANISHING_OFFLINE", "1")
    with pytest.raises(DataError, match="no source has fashion-mnist"):
        data.load_arrays("fashion-mnist", cache_dir=tmp_path / "empty")
    assert len(log.read_text().splitlines()) == 1


@needs_dpkg_deb
def test_a_package_without_the_files_is_a_clear_error(tmp_path, tiny_arrays, monkeypatch):
    monkeypatch.delenv("VANISHING_OFFLINE")
    spec = tiny_spec(tiny_arrays, "fashion-mnist", deb=FASHION_DEB)
    monkeypatch.setitem(data.DATASETS, "fashion-mnist", spec)
    deb = make_deb(tmp_path / "deb", tiny_arrays, inside="usr/share/elsewhere")
    fake_apt_get(monkeypatch, tmp_path / "bin", f"cp {deb} .")
    with pytest.raises(DataError) as e:
        data.load_arrays("fashion-mnist")
    message = "dataset-fashion-mnist_1_all.deb: no IDX files in /usr/share/datasets/fashion-mnist"
    assert message in str(e.value)
    # A download that is no package at all: dpkg-deb's own error, in one line.
    monkeypatch.setenv("LC_ALL", "C")  # dpkg-deb's message in English
    fake_apt_get(monkeypatch, tmp_path / "bin", "echo junk > dataset-fashion-mnist_1_all.deb")
    with pytest.raises(DataError) as e:
        data.load_arrays("fashion-mnist")
    message = "via apt-get download: dpkg-deb -x dataset-fashion-mnist_1_all.deb: dpkg-deb: error: "
    assert message in str(e.value) and "is not a Debian format archive" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "present, missing",
    [((), "apt-get or dpkg-deb"), (("apt-get",), "dpkg-deb")],
    ids=["no apt-get", "no dpkg-deb"],
)
def test_apt_route_without_debian_tools_names_the_command(
    capsys, tmp_path, tiny_arrays, monkeypatch, present, missing
):
    monkeypatch.delenv("VANISHING_OFFLINE")
    monkeypatch.setitem(
        data.DATASETS, "fashion-mnist", tiny_spec(tiny_arrays, "fashion-mnist", deb=FASHION_DEB)
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in present:
        (bin_dir / tool).symlink_to(shutil.which("true"))
    monkeypatch.setenv("PATH", str(bin_dir))
    start = time.perf_counter()
    code, _, err = run_cli(capsys, "data", "fetch", "--dataset", "fashion-mnist")
    assert time.perf_counter() - start < 5
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("vanishing data fetch: error: no source has fashion-mnist (")
    assert (
        f"apt-get download dataset-fashion-mnist: no {missing} here (not Debian?); {BY_HAND}"
    ) in last


@needs_dpkg_deb
def test_apt_get_download_failing_or_hanging_names_the_command(tmp_path, monkeypatch):
    spec = data.DATASETS["fashion-mnist"]
    fake_apt_get(
        monkeypatch,
        tmp_path / "bin",
        "echo 'W: a warning' >&2; echo 'E: Unable to locate package dataset-fashion-mnist' >&2; "
        "echo 'W: another warning' >&2; exit 100",
    )
    with pytest.raises(DataError) as e:
        data.from_deb(spec)
    assert str(e.value) == (
        "apt-get download dataset-fashion-mnist: E: Unable to locate package "
        "dataset-fashion-mnist (no package lists: `apt-get update` as root); " + BY_HAND
    )
    fake_apt_get(monkeypatch, tmp_path / "bin", "exec sleep 30")
    monkeypatch.setattr(data, "APT_TIMEOUT", 0.5)
    start = time.perf_counter()
    with pytest.raises(DataError, match="timed out after 0.5 seconds") as e:
        data.from_deb(spec)
    assert time.perf_counter() - start < 5
    assert str(e.value).startswith("apt-get download dataset-fashion-mnist: ")
    assert str(e.value).endswith(BY_HAND)


@pytest.mark.realdata
@needs_dpkg_deb
def test_real_fashion_mnist_through_apt_get_download(tmp_path, monkeypatch):
    monkeypatch.delenv("VANISHING_OFFLINE")
    real = data.DATASETS["fashion-mnist"]
    # Only the apt route: not the mirrors, nor a copy that Debian's package installed system-wide.
    monkeypatch.setitem(
        data.DATASETS, "fashion-mnist", dataclasses.replace(real, mirrors=(), system_dirs=())
    )
    said: list[str] = []
    arrays, source, verified = data.load_arrays(
        "fashion-mnist", cache_dir=tmp_path, report=said.append
    )
    assert source == "Debian package dataset-fashion-mnist via apt-get download" and verified
    assert said[-1].endswith("via apt-get download (verified)")
    assert data.checksums(arrays) == real.md5
    assert len(arrays["train_labels"]) == 60000 and len(arrays["test_labels"]) == 10000
    assert np.bincount(arrays["train_labels"]).tolist() == list(real.train_counts)
    assert np.bincount(arrays["test_labels"]).tolist() == [1000] * 10
    cached = data.load_dataset("fashion-mnist", cache_dir=tmp_path, remote=False)
    assert cached.verified and cached.source == f"cache {tmp_path / 'fashion-mnist'}"


def test_idx_header_is_big_endian():
    raw = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    assert struct.unpack(">IIII", raw[:16]) == (0x803, 2, 28, 28)
    assert make_arrays(20, 10)["train_images"].shape == (20, 28, 28)
