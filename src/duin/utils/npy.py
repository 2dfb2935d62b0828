"""Write a large float32 ``(n_rows, n_times)`` ``.npy`` file block by block with plain file I/O.

A writable memory map (``open_memmap(mode="w+")``) charges every page it touches to the
process's resident memory until the map is closed, so writing hours of signal that way makes
peak RSS grow with the recording's length (and a full disk shows up as SIGBUS, not an error).
:class:`NpyBlockWriter` instead ``pwrite``\\ s each row's part of a time block at its offset in
the C-ordered file: memory holds one block, and errors are ordinary ``OSError``\\ s naming the
file. The file is written under a temporary name and renamed into place by :meth:`finish`.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
from pathlib import Path

import numpy as np

from duin.utils.io import named_write_error

__all__ = ["NpyBlockWriter", "release_pages"]


class NpyBlockWriter:
    """Fill a C-ordered float32 ``.npy`` of shape ``(n_rows, n_times)`` by time blocks.

    Supports ``writer[:, start:stop] = block`` (``block`` ``(n_rows, stop - start)``), so code
    that fills a numpy array column block by column block can fill the file instead.

    Parameters
    ----------
    path : path-like
        Destination file (its folder is created).
    shape : tuple of int
        ``(n_rows, n_times)``.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int]) -> None:
        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype("<f4")
        header = {"descr": self.dtype.str, "fortran_order": False, "shape": self.shape}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
            )
        except OSError as err:
            raise named_write_error(err, self.path) from err
        self._tmp = Path(tmp)
        self._fd: int | None = fd
        try:
            with os.fdopen(os.dup(fd), "wb") as handle:
                np.lib.format.write_array_header_1_0(handle, header)
                self._offset = handle.tell()
            os.ftruncate(fd, self._offset + self.shape[0] * self.shape[1] * self.dtype.itemsize)
        except BaseException as err:
            self._abort()
            if isinstance(err, OSError):
                raise named_write_error(err, self.path) from err
            raise

    def __setitem__(self, key: tuple[slice, slice], block: np.ndarray) -> None:
        rows, cols = key
        if rows != slice(None) or not isinstance(cols, slice) or cols.step not in (None, 1):
            raise TypeError("NpyBlockWriter supports only writer[:, start:stop] = block")
        start, stop, _ = cols.indices(self.shape[1])
        block = np.asarray(block, dtype=self.dtype)
        if block.shape != (self.shape[0], stop - start):
            raise ValueError(
                f"{self.path}: block of shape {block.shape} does not fit [:, {start}:{stop}] of "
                f"{self.shape}"
            )
        if self._fd is None:
            raise ValueError(f"{self.path}: writer already finished")
        row_bytes = self.shape[1] * self.dtype.itemsize
        try:
            for r in range(self.shape[0]):
                data = np.ascontiguousarray(block[r]).tobytes()
                offset = self._offset + r * row_bytes + start * self.dtype.itemsize
                while data:
                    written = os.pwrite(self._fd, data, offset)
                    data, offset = data[written:], offset + written
        except OSError as err:
            self._abort()
            raise named_write_error(err, self.path) from err

    def read(self, start: int, stop: int) -> np.ndarray:
        """Read back columns ``[start, stop)`` written so far (``(n_rows, stop - start)`` float32).

        With ``pread``, not a memory map, so reading a block back does not keep it resident:
        the file can serve as bounded-memory scratch space between passes.
        """
        if self._fd is None:
            raise ValueError(f"{self.path}: writer already finished")
        start, stop, _ = slice(start, stop).indices(self.shape[1])
        n = max(0, stop - start)
        out = np.empty((self.shape[0], n), dtype=self.dtype)
        row_bytes = self.shape[1] * self.dtype.itemsize
        try:
            for r in range(self.shape[0]):
                want = n * self.dtype.itemsize
                offset = self._offset + r * row_bytes + start * self.dtype.itemsize
                data = bytearray()
                while len(data) < want:
                    chunk = os.pread(self._fd, want - len(data), offset + len(data))
                    if not chunk:
                        raise OSError(f"{self._tmp}: unexpected end of file")
                    data += chunk
                out[r] = np.frombuffer(data, dtype=self.dtype)
        except OSError as err:
            self._abort()
            raise named_write_error(err, self.path) from err
        return out

    def discard(self) -> None:
        """Remove the unfinished file (e.g. scratch space that is no longer needed)."""
        self._abort()

    def finish(self) -> np.ndarray:
        """Flush, rename into place and return a read-only memory map of the file."""
        if self._fd is None:
            raise ValueError(f"{self.path}: writer already finished")
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            os.replace(self._tmp, self.path)
        except OSError as err:
            self._abort()
            raise named_write_error(err, self.path) from err
        return np.load(self.path, mmap_mode="r")

    def _abort(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        self._tmp.unlink(missing_ok=True)

    def __del__(self) -> None:  # an abandoned writer leaves no temporary behind
        with contextlib.suppress(Exception):
            self._abort()


def release_pages(array: np.ndarray) -> None:
    """Drop the pages a read of a memory-mapped array brought into this process's RSS.

    Scanning a multi-hour ``numpy.memmap`` block by block keeps every touched page mapped, so
    peak RSS grows with the file even though the data are never copied. After each block,
    ``madvise(MADV_DONTNEED)`` unmaps them (the data stay in the file and the page cache;
    the next access faults them back in). No-op for ordinary arrays, copy-on-write maps and
    platforms without ``madvise``.

    Parameters
    ----------
    array : numpy.ndarray
        A ``numpy.memmap`` (or a view of one); anything else is ignored.
    """
    handle = getattr(array, "_mmap", None)
    if not isinstance(handle, mmap.mmap) or getattr(array, "mode", "c") == "c":
        return
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None or not hasattr(handle, "madvise"):
        return
    with contextlib.suppress(OSError, ValueError):
        handle.madvise(advice)
