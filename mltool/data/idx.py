"""Reader for the IDX format used by MNIST and Fashion-MNIST (optionally gzip-compressed).

Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the data in C order.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from mltool.errors import DataError

_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist", "check the path or pass --data DIR") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"IDX file {path} is not a readable gzip file ({exc})",
            "the download is probably incomplete: delete it and fetch it again",
        ) from None


def read_idx(path: str | Path, expect_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file into an array. Raises :class:`DataError` naming the file on any defect."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(
            f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})",
            "expected the MNIST-style IDX format, e.g. train-images-idx3-ubyte.gz",
        )
    ndim = raw[3]
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(
            f"{path} has {ndim} dimensions, expected {expect_ndim}",
            "images files are idx3 and label files idx1: check the file names",
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated (header incomplete)", "fetch the file again")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = _DTYPES[raw[2]]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual < expected:
        raise DataError(
            f"IDX file {path} is truncated: {actual} data bytes, header promises {expected}",
            "the download is probably incomplete: fetch the file again",
        )
    if actual > expected:
        raise DataError(
            f"IDX file {path} has {actual - expected} bytes of trailing data",
            "the file is corrupt: fetch it again",
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)
