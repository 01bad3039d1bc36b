"""Reading the emulator's input files (config, corpus): UTF-8 text, with errors that name the file."""

from __future__ import annotations


def read_utf8(path: str, what: str, expected: str, error: type = ValueError) -> str:
    """The text of ``path``; a file that is not UTF-8 raises ``error`` naming the file (``what``: e.g.
    "config file"), the first bad byte, its offset and what was ``expected``. OSError passes through."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path}: byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8;"
                    f" expected {expected}") from None
