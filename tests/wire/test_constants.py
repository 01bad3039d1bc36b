"""The wire constants are defined once per side and the sides agree.

``csrc/frame.h`` is the compiled core's definition (``_framing`` declares every number from it and
exposes them as ``WIRE_CONSTANTS``); ``wire/constants.py`` is the twin's. The header is parsed here
independently, so the pure-Python run checks the twin against it too, with no compiled core.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from sprint_control import _env
from sprint_control.wire import constants

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FRAME_H = os.path.join(ROOT, "csrc", "frame.h")

#: header names whose twin name is not the header's name without ``SC_``
RENAMED = {"FLAG_KNOWN": "KNOWN_FLAGS"}


def _c_value(text: str):
    """A #define or enum value of frame.h: a char literal, or a decimal/hex integer with suffixes."""
    text = text.strip()
    char = re.fullmatch(r"'(.)'", text)
    if char:
        return ord(char.group(1))
    return int(re.sub(r"[uUlL]+$", "", text), 0)


def parse_frame_h(path: str = FRAME_H) -> dict:
    """Every ``#define SC_X value`` and every ``SC_X = value`` enum entry of the header."""
    with open(path) as f:
        text = re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
    values = {}
    for name, value in re.findall(r"^#define\s+(SC_[A-Z0-9_]+)\s+(\S+)\s*$", text, flags=re.M):
        values[name] = _c_value(value)
    for body in re.findall(r"\benum\s*\{(.*?)\}", text, flags=re.S):
        for name, value in re.findall(r"(SC_[A-Z0-9_]+)\s*=\s*([^,\s]+)", body):
            assert name not in values, f"{name} is defined twice in frame.h"
            values[name] = _c_value(value)
    return values


def twin_values_by_header_name(header: dict) -> dict:
    """The value wire/constants.py gives each header name (the magic as its four bytes)."""
    out = {}
    for name in header:
        short = name[len("SC_") :]
        m = re.fullmatch(r"MAGIC(\d)", short)
        if m:
            out[name] = constants.MAGIC[int(m.group(1))]
            continue
        attr = RENAMED.get(short, short)
        assert hasattr(constants, attr), f"wire/constants.py has no {attr} for frame.h's {name}"
        out[name] = getattr(constants, attr)
    return out


def test_the_header_is_parsed_completely():
    header = parse_frame_h()
    # a parser that found nothing would let every comparison below pass
    assert header["SC_HEADER_SIZE"] == 64 and header["SC_MAGIC0"] == ord("S")
    assert {n for n in header if n.startswith("SC_ERR_")} and {n for n in header if n.startswith("SC_DTYPE_")}
    assert header["SC_FLAG_SHM"] == 0x2


def test_twin_constants_match_frame_h():
    header = parse_frame_h()
    assert twin_values_by_header_name(header) == header


def test_every_dtype_code_of_the_header_has_its_numpy_dtype():
    header = parse_frame_h()
    types = {n[len("SC_DTYPE_") :].lower(): v for n, v in header.items() if n.startswith("SC_DTYPE_")}
    none, top = types.pop("none"), types.pop("max")
    assert none not in constants.DTYPE_CODES and max(types.values()) == top
    assert {code: np.dtype(name).newbyteorder("<") for name, code in types.items()} == constants.DTYPE_CODES


def test_header_struct_size_matches():
    assert constants.HEADER_STRUCT.size == parse_frame_h()["SC_HEADER_SIZE"]


@pytest.mark.skipif(_env.pure_python_forced(), reason="the twins are forced: no compiled core to compare")
def test_twin_constants_match_the_compiled_core():
    from sprint_control.wire import _framing

    core = _framing.WIRE_CONSTANTS
    assert core, "the compiled core exposes no constants"
    assert {k: getattr(constants, k) for k in core} == core


@pytest.mark.skipif(_env.pure_python_forced(), reason="the twins are forced: no compiled core to compare")
def test_the_compiled_core_exposes_every_header_constant():
    from sprint_control.wire import _framing

    header = parse_frame_h()
    exposed = set(_framing.WIRE_CONSTANTS)
    missing = []
    for name in header:
        short = name[len("SC_") :]
        if re.fullmatch(r"MAGIC\d", short):
            short = "MAGIC"
        if RENAMED.get(short, short) not in exposed:
            missing.append(name)
    assert not missing
