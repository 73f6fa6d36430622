"""Read and write IDX files (the MNIST format), plain or gzip-compressed, with strict checks."""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np

from vanishing.errors import DataError

# IDX header: two zero bytes, a type code, the number of dimensions, then one big-endian
# uint32 per dimension. MNIST uses only unsigned bytes (0x08).
UBYTE = 0x08
# The largest file we will decompress: the MNIST training images are 47 MB, so anything far
# larger is not a data set of this kind (and must not be allowed to fill memory).
MAX_BYTES = 256 * 1024 * 1024
CHUNK = 1024 * 1024  # read in pieces: `f.read(MAX_BYTES + 1)` would reserve 256 MB up front


class ByteStream(Protocol):
    """Anything `read_limited` reads: a file, a GzipFile, an HTTP response."""

    def read(self, size: int, /) -> bytes: ...


def read_limited(f: ByteStream, limit: int = MAX_BYTES) -> bytes:
    """At most `limit + 1` bytes of a stream, read in chunks so memory follows the real size."""
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = f.read(min(CHUNK, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def gunzip(data: bytes, limit: int = MAX_BYTES) -> bytes:
    """Decompress gzip bytes, stopping past `limit` bytes (a gzip bomb must not fill memory)."""
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
        return read_limited(f, limit)


def read_bytes(path: Path, limit: int = MAX_BYTES) -> bytes:
    """The uncompressed bytes of a file; `.gz` files are decompressed, at most `limit` bytes."""
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            if path.suffix == ".gz":
                with gzip.GzipFile(fileobj=raw) as f:
                    data = read_limited(f, limit)
            else:
                data = read_limited(raw, limit)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        # A truncated stream raises EOFError; a damaged one BadGzipFile or zlib.error.
        raise DataError(f"{path}: corrupt gzip file ({e}); delete it and fetch again") from None
    except OSError as e:  # a directory, no permission, an I/O error
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(data) > limit:
        raise DataError(f"{path}: larger than {limit} bytes uncompressed; not an IDX data file")
    return data


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array that IDX bytes hold (uint8), after checking the header against the length."""
    if len(data) < 4:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != UBYTE or ndim not in (1, 2, 3, 4):
        raise DataError(
            f"{name}: wrong IDX magic number 0x{int.from_bytes(data[:4], 'big'):08x} "
            f"(expected 0x00000801 for labels or 0x00000803 for images)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    # Checked before anything is allocated: a header may declare gigabytes.
    if len(data) - header != expected:
        raise DataError(
            f"{name}: IDX header declares shape {shape} ({expected} bytes) but the file holds "
            f"{len(data) - header} bytes: truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (plain or `.gz`) as a uint8 array."""
    return parse_idx(read_bytes(path), str(path))


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: the canonical byte layout that checksums are taken on."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"IDX arrays must be uint8, got {array.dtype}")
    header = struct.pack(">HBB", 0, UBYTE, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file; gzip-compressed when the name ends in `.gz`."""
    data = idx_bytes(array)
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
