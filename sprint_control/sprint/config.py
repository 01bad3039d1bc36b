"""RASR's config string (``--*.pymod-config``) and the values in it."""

from __future__ import annotations

from typing import Any, Optional

from ..errors import SprintControlError

__all__ = ["parse_config", "to_bool", "to_int", "as_str", "version_refusal"]

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", "", "none"}


def to_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SprintControlError(f"config key {key!r} must be a boolean (true/false/1/0), got {value!r}")


def to_int(value: Any, key: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise SprintControlError(f"config key {key!r} must be an integer, got {value!r}") from None


def parse_config(config: Optional[str]) -> dict[str, str]:
    """Parses RASR's config string ``key:value,key:value`` (split on the first ``:``).

    Empty items are ignored; a key given twice keeps its last value, like RASR's own options.
    """
    result: dict[str, str] = {}
    if not config:
        return result
    if isinstance(config, bytes):
        config = config.decode("utf-8")
    for item in str(config).split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition(":")
        if not sep:
            raise SprintControlError(
                f"config item {item!r} has no ':'; the config string must be key:value pairs joined by ','"
            )
        result[key.strip()] = value
    return result


def as_str(value: Any, what: str) -> Optional[str]:
    """RASR builds pass names and orthographies as str or as bytes; both mean UTF-8 text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8")
    raise TypeError(f"{what} must be str or bytes, got {type(value).__name__}")


def version_refusal(config: dict, version_number) -> Optional[str]:
    """Why RASR's PythonControl ``version_number`` is too old for ``minPythonControlVersion`` in
    ``config``, or None when it is not."""
    value = config.get("minPythonControlVersion")
    if value in (None, ""):
        return None
    needed = to_int(value, "minPythonControlVersion")
    if (0 if version_number is None else int(version_number)) >= needed:
        return None
    return (
        f"this RASR's PythonControl has version {version_number!r}, but version >= {needed} is needed"
        f" (minPythonControlVersion:{needed}); use a newer RASR build"
    )
