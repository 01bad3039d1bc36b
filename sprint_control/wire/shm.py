"""Shared memory for the matrices: only a small descriptor crosses the pipe.

The parent creates one ``SharedRegion`` per pool: an anonymous memory file (``memfd_create`` on
Linux; elsewhere a temporary file that is unlinked at once) that every child inherits at spawn
(``pass_fds``) and maps after the ``use_protocol`` negotiation. Nothing has a name in /dev/shm,
so nothing can be left behind: the memory goes away with the last fd and mapping, whoever dies.

Per segment the parent sends a LOSS_REQUEST frame with ``FLAG_SHM`` whose array is a descriptor
(``uint64 (8,)``, see ``Descriptor``): where the posteriors lie in the region and where the child
shall write the error signal. The child validates every field against the bounds of its mapping
before it touches memory, reads the posteriors in place (a view; copied once only when their rows
are not adjacent, because RASR wants a column-major matrix), writes the error signal straight to
the destination and answers with the descriptor echoed and the loss in the header. The parent
checks the echo, so a stale or foreign answer cannot be taken for the current one.

``SharedRegion.empty`` allocates arrays inside the region: a training framework that writes its
(time, batch, label) log-posteriors there, and takes its error signals in a region array, moves
no matrix byte through the kernel at all.
"""

from __future__ import annotations

import bisect
import logging
import mmap
import os
import sys
import tempfile
import threading
import weakref
from typing import NamedTuple, Optional

import numpy as np

from ..errors import ProtocolError

__all__ = ["SharedRegion", "Descriptor", "available", "DEFAULT_MAX_SIZE"]

logger = logging.getLogger("sprint_control.shm")

#: Default cap on a region: enough for a (3500, 12001) float32 batch slice in and out many times over.
#: Initial size of a region that ``create`` makes (it grows up to ``max_size`` on demand).
DEFAULT_SIZE = 64 << 20
DEFAULT_MAX_SIZE = 8 << 30
#: Matrices smaller than this travel inline through the pipe even when a region is shared: below it
#: a pipe round trip costs less than the descriptor bookkeeping (measured in docs/shm.md).
DEFAULT_INLINE_BELOW = 128 * 1024
#: Allocations start on 64-byte boundaries (cache lines, and any SIMD load the criterion may do).
ALIGN = 64
_F32 = np.dtype(np.float32)


def available() -> bool:
    """Whether this platform can share a region through an inherited fd."""
    return hasattr(os, "memfd_create") or sys.platform.startswith(("linux", "darwin", "freebsd"))


def _anonymous_fd(size: int) -> int:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("sprint_control", os.MFD_CLOEXEC)
    else:  # an unlinked file: no name stays behind
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        handle, path = tempfile.mkstemp(prefix="sprint_control-", dir=folder)
        os.unlink(path)
        fd = handle
    os.ftruncate(fd, size)
    return fd


class Descriptor(NamedTuple):
    """Where one segment's matrices lie in the region (the uint64 (8,) array of a FLAG_SHM frame)."""

    generation: int  # the region's size generation the sender used
    in_offset: int  # byte offset of the (time, label) float32 posteriors
    in_row_stride: int  # bytes from one frame's row to the next
    out_offset: int  # byte offset where the error signal goes
    out_row_stride: int
    time: int
    labels: int
    seq: int  # the request's sequence number, echoed in the answer

    def to_array(self) -> np.ndarray:
        return np.array(self, dtype=np.uint64)

    @classmethod
    def from_array(cls, arr: Optional[np.ndarray]) -> Descriptor:
        if arr is None or arr.dtype != np.uint64 or arr.shape != (8,):
            got = None if arr is None else (arr.shape, arr.dtype)
            raise ProtocolError(f"a shared-memory frame must carry a uint64 (8,) descriptor, got {got}")
        return cls(*(int(x) for x in arr))


class _Mapping:
    """One mmap of the region's fd (the region keeps older ones while arrays still use them)."""

    def __init__(self, fd: int, size: int):
        self.size = size
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.bytes = np.frombuffer(self.mm, dtype=np.uint8)
        self.address = self.bytes.ctypes.data


class SharedRegion:
    """A memory file mapped into this process; the other end maps the same file by its fd.

    Parent: ``SharedRegion.create(size)``; pass ``region.fd`` to the children. Child:
    ``SharedRegion.attach(fd, size, generation)``. The size only grows (``grow``), up to ``max_size``;
    each growth bumps ``generation`` and the peer remaps before it sees a descriptor of it.
    """

    def __init__(self, fd: int, size: int, *, generation: int = 0, max_size: int = DEFAULT_MAX_SIZE,
                 owns_fd: bool = True, inline_below: int = DEFAULT_INLINE_BELOW):
        if size <= 0:
            raise ValueError(f"region size must be positive, got {size}")
        self.fd = fd
        self.max_size = max(max_size, size)
        self.generation = generation
        #: matrices of fewer bytes go through the pipe (the parent decides; see DEFAULT_INLINE_BELOW)
        self.inline_below = inline_below
        self._owns_fd = owns_fd
        self._lock = threading.Lock()
        self._mapping = _Mapping(fd, size)
        self._older: list = []  # weakrefs of older mappings still used by arrays
        self._free: list[tuple[int, int]] = [(0, size)]  # sorted (offset, length) holes, for ``empty``
        self._closed = False

    # -- life cycle ------------------------------------------------------------------------------

    @classmethod
    def create(cls, size: int = DEFAULT_SIZE, max_size: int = DEFAULT_MAX_SIZE,
               inline_below: int = DEFAULT_INLINE_BELOW) -> SharedRegion:
        """A new, zero-filled region of ``size`` bytes (rounded up to whole pages)."""
        size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        return cls(_anonymous_fd(size), size, max_size=max_size, inline_below=inline_below)

    @classmethod
    def attach(cls, fd: int, size: int, generation: int = 0) -> SharedRegion:
        """Maps a region created by the peer, after checking the fd really holds ``size`` bytes."""
        try:
            actual = os.fstat(fd).st_size
        except OSError as exc:
            raise ProtocolError(f"shared-memory fd {fd} is not usable here: {exc}") from None
        if size <= 0 or actual < size:
            raise ProtocolError(f"shared-memory fd {fd} holds {actual} bytes, the peer announced {size}")
        return cls(fd, size, generation=generation, owns_fd=False)

    @property
    def size(self) -> int:
        return self._mapping.size

    def snapshot(self) -> tuple[int, int]:
        """(size, generation), read together: a growth by another thread changes both at once
        under the lock, so reading the two properties one after the other may pair them wrongly."""
        with self._lock:
            return self._mapping.size, self.generation

    def close(self) -> None:
        """Drops this side's mapping and (for the creator) the fd; arrays still alive keep their pages."""
        if self._closed:
            return
        self._closed = True
        self._mapping = None  # type: ignore[assignment]
        self._older.clear()
        if self._owns_fd:
            try:
                os.close(self.fd)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def grow(self, min_size: int) -> None:
        """Parent: makes the region at least ``min_size`` bytes (doubling), or raises MemoryError at the cap."""
        with self._lock:
            self._grow_locked(min_size)

    def _grow_locked(self, min_size: int) -> None:
        old = self._mapping.size
        if min_size <= old:
            return
        new = min(max(min_size, 2 * old), self.max_size)
        new = -(-new // mmap.PAGESIZE) * mmap.PAGESIZE
        if new < min_size:
            raise MemoryError(f"shared region would need {min_size} bytes, its cap is {self.max_size}")
        os.ftruncate(self.fd, new)
        mapping = _Mapping(self.fd, new)
        self._older.append(weakref.ref(self._mapping.mm))
        self._mapping = mapping
        self._release(old, new - old)
        self.generation += 1
        logger.debug("shared region grown to %d bytes (generation %d)", new, self.generation)

    def remap(self, size: int, generation: int) -> None:
        """Child: follows a growth announced by the parent."""
        try:
            actual = os.fstat(self.fd).st_size
        except OSError as exc:
            raise ProtocolError(f"shared-memory fd {self.fd} is gone: {exc}") from None
        if size < self._mapping.size or actual < size:
            raise ProtocolError(
                f"shared region remap to {size} bytes is invalid (mapped {self._mapping.size}, file {actual})"
            )
        self._mapping = _Mapping(self.fd, size)
        self.generation = generation

    # -- arrays inside the region ----------------------------------------------------------------

    def empty(self, shape, dtype=np.float32) -> np.ndarray:
        """An uninitialised array that lives in the region (its block is freed with the last view)."""
        dt = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        length = max(-(-nbytes // ALIGN) * ALIGN, ALIGN)
        with self._lock:
            offset = self._take(length)
            if offset is None:
                self._grow_locked(self._mapping.size + length)
                offset = self._take(length)
                assert offset is not None
            mapping = self._mapping
        # numpy collapses a view's ``base`` to the first array whose own base is not an array; an
        # array over a memoryview is such a stop, so every view of the result keeps ``owner`` alive
        # and the block returns to the free list only with the last of them.
        owner = np.frombuffer(memoryview(mapping.mm)[offset : offset + length], dtype=np.uint8)
        weakref.finalize(owner, self._give_back, offset, length)
        view: np.ndarray = owner[:nbytes].view(dt).reshape(shape)
        return view

    def zeros(self, shape, dtype=np.float32) -> np.ndarray:
        arr = self.empty(shape, dtype)
        arr[...] = 0
        return arr

    def _take(self, length: int) -> Optional[int]:
        for i, (off, size) in enumerate(self._free):
            if size >= length:
                if size == length:
                    del self._free[i]
                else:
                    self._free[i] = (off + length, size - length)
                return off
        return None

    def _give_back(self, offset: int, length: int) -> None:
        with self._lock:
            self._release(offset, length)

    def _release(self, offset: int, length: int) -> None:
        i = bisect.bisect_left(self._free, (offset, 0))
        self._free.insert(i, (offset, length))
        # merge with the neighbours, so large blocks come back after a batch is freed
        if i + 1 < len(self._free) and offset + length == self._free[i + 1][0]:
            self._free[i] = (offset, length + self._free[i + 1][1])
            del self._free[i + 1]
        if i > 0 and self._free[i - 1][0] + self._free[i - 1][1] == offset:
            self._free[i - 1] = (self._free[i - 1][0], self._free[i - 1][1] + self._free[i][1])
            del self._free[i]

    def free_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._free)

    def locate(self, arr: np.ndarray) -> Optional[tuple]:
        """(offset, row_stride) of a float32 (time, label) matrix with adjacent elements in each row
        that lies inside this region, in any of its mappings; None when it does not."""
        if (not isinstance(arr, np.ndarray) or arr.dtype != _F32 or arr.ndim != 2
                or arr.strides[1] != 4 or arr.strides[0] < 0):
            return None
        rows, cols = arr.shape
        start = arr.__array_interface__["data"][0]
        row_stride = arr.strides[0] if rows > 1 else cols * 4
        extent = (rows - 1) * row_stride + cols * 4 if rows and cols else 0
        mappings = [self._mapping] + [m for m in (self._lookup_older()) if m is not None]
        for m in mappings:
            if m.address <= start and start + extent <= m.address + m.size:
                if row_stride < cols * 4:
                    return None
                return start - m.address, row_stride
        return None

    def _lookup_older(self):
        for ref in self._older:
            mm = ref()
            if mm is not None:
                yield _Wrapped(mm)

    def view(self, offset: int, rows: int, cols: int, row_stride: int, what: str) -> np.ndarray:
        """A float32 (rows, cols) view at ``offset``; every field is checked against the mapping first."""
        size = self._mapping.size
        if rows < 0 or cols < 0 or rows > size or cols > size:
            raise ProtocolError(f"shared-memory {what}: impossible shape ({rows}, {cols})")
        if offset % 4 or row_stride % 4:
            raise ProtocolError(f"shared-memory {what}: offset {offset} / row stride {row_stride} not 4-aligned")
        if rows > 1 and row_stride < cols * 4:
            raise ProtocolError(f"shared-memory {what}: row stride {row_stride} overlaps rows of {cols} floats")
        extent = (rows - 1) * row_stride + cols * 4 if rows and cols else 0
        if offset > size or extent > size - offset:
            raise ProtocolError(
                f"shared-memory {what}: {extent} bytes at offset {offset} exceed the region of {size} bytes"
            )
        if not rows or not cols:
            return np.empty((rows, cols), np.float32)
        return np.ndarray((rows, cols), dtype=np.float32, buffer=self._mapping.mm, offset=offset,
                          strides=(row_stride if rows > 1 else cols * 4, 4))


class _Wrapped:
    """Address and size of an older mmap, for ``locate``."""

    def __init__(self, mm: mmap.mmap):
        self.size = len(mm)
        self.address = np.frombuffer(mm, dtype=np.uint8).ctypes.data
