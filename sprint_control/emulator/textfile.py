"""Reading the emulator's input files (config, corpus, lexicon, segment list) within bounds.

Every input file goes through ``open_input``: it must be a regular file (a FIFO would block, a
device such as ``/dev/zero`` never ends), a gzip'd file (by content, whatever its name) is
decompressed as a stream, and no file yields more than ``max_input_bytes()`` bytes (after
decompression): a small ``.gz`` holding gigabytes is refused when the limit is reached, not after
running out of memory. The limit is 4 GiB unless ``SPRINT_CONTROL_MAX_INPUT_BYTES`` says otherwise.
Errors are one line naming the file.
"""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from collections.abc import Iterator
from typing import NoReturn

#: Bytes read at a time.
CHUNK = 1 << 20
DEFAULT_MAX_INPUT_BYTES = 4 << 30
_GZIP_MAGIC = b"\x1f\x8b"


def max_input_bytes() -> int:
    """The most bytes one input file may yield: ``SPRINT_CONTROL_MAX_INPUT_BYTES`` or 4 GiB."""
    raw = os.environ.get("SPRINT_CONTROL_MAX_INPUT_BYTES", "")
    try:
        value = int(raw) if raw.strip() else DEFAULT_MAX_INPUT_BYTES
    except ValueError:
        raise ValueError(f"SPRINT_CONTROL_MAX_INPUT_BYTES={raw!r}: expected a whole number of bytes") from None
    return value if value > 0 else DEFAULT_MAX_INPUT_BYTES


class InputError(ValueError):
    """An input file the emulator refuses; ``reason`` is the message without the file's name."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def _raise(error: type[Exception], what: str, path: str, reason: str) -> NoReturn:
    message = f"{what} {path}: {reason}"
    err: BaseException = error(message, reason) if issubclass(error, InputError) else error(message)
    err.__suppress_context__ = True  # one line: not "during handling of ..."
    raise err


def _open_regular(path: str, what: str, error: type):
    """The file opened for reading, refusing what is not a regular file without blocking on it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except IsADirectoryError:
        _raise(error, what, path, "is a directory; expected a regular file")
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                    else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "a directory" if stat.S_ISDIR(mode) else "not a regular file")
            _raise(error, what, path, f"is {kind}; expected a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def iter_input(path: str, what: str = "file", error: type = ValueError, limit: int | None = None) -> Iterator[bytes]:
    """The file's bytes in chunks, gunzipped when it is gzip'd, at most ``limit`` (default
    ``max_input_bytes()``) in all; more, a broken gzip stream or a file that is not regular raises
    ``error`` naming the file. OSError (no such file, no permission) passes through."""
    limit = max_input_bytes() if limit is None else limit
    with _open_regular(path, what, error) as raw:
        magic = raw.read(2)
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if magic == _GZIP_MAGIC else raw
        total = 0
        while True:
            try:
                chunk = stream.read(CHUNK)
            except (OSError, EOFError, zlib.error) as exc:
                _raise(error, what, path, f"not a readable gzip file ({exc})")
            if not chunk:
                return
            total += len(chunk)
            if total > limit:
                how = "decompresses to" if magic == _GZIP_MAGIC else "holds"
                _raise(error, what, path, f"{how} more than {limit} bytes, the emulator's limit for one input "
                       "file (SPRINT_CONTROL_MAX_INPUT_BYTES)")
            yield chunk


def read_input(path: str, what: str = "file", error: type = ValueError, limit: int | None = None) -> bytes:
    """All of ``iter_input``: for the small files (config, text corpus, segment list)."""
    return b"".join(iter_input(path, what, error, limit))


def decode_utf8(data: bytes, path: str, what: str, expected: str, error: type = ValueError) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        _raise(error, what, path, f"byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8;"
               f" expected {expected}")


def read_utf8(path: str, what: str, expected: str, error: type = ValueError) -> str:
    """The text of ``path`` (read as ``read_input``); a file that is not UTF-8 raises ``error``
    naming the file (``what``: e.g. "config file"), the first bad byte, its offset and what was
    ``expected``. OSError passes through."""
    return decode_utf8(read_input(path, what, error), path, what, expected, error)
