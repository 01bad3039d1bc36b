"""Type stub of the compiled framing core (``_framing.pyx``); the pure-Python twin ``_framing_py`` has
the same API (``framing.API``)."""

from typing import Literal, Optional

import numpy as np
import numpy.typing as npt

from .constants import FrameHeader

IMPLEMENTATION: Literal["cython"]
#: how many arrays were converted (copied) on the way out
stats: dict[str, int]

def encode_frame(
    msg_type: int, name: str | bytes = ..., array: Optional[npt.ArrayLike] = ..., value: float = ...,
    seq: int = ..., flags: int = ...,
) -> bytes: ...
def decode_frame(
    buffer: bytes | bytearray | memoryview, max_payload: int = ..., max_name: int = ...,
) -> tuple[FrameHeader, Optional[np.ndarray]]: ...
def write_frame(
    fd: int, msg_type: int, name: str | bytes = ..., array: Optional[npt.ArrayLike] = ..., value: float = ...,
    seq: int = ..., flags: int = ..., timeout: Optional[float] = ...,
) -> int: ...
def read_frame(
    fd: int, out: Optional[np.ndarray] = ..., max_payload: int = ..., max_name: int = ...,
    timeout: Optional[float] = ...,
) -> tuple[FrameHeader, Optional[np.ndarray]]: ...
def read_answer(
    fd: int, out: Optional[np.ndarray], msg_type: int, seq: int, max_payload: int = ..., max_name: int = ...,
    timeout: Optional[float] = ...,
) -> tuple[FrameHeader, Optional[np.ndarray]]: ...
def read_header(
    fd: int, max_payload: int = ..., max_name: int = ..., timeout: Optional[float] = ...,
) -> FrameHeader: ...
def read_payload(
    fd: int, header: FrameHeader, out: Optional[np.ndarray] = ..., timeout: Optional[float] = ...,
) -> Optional[np.ndarray]: ...
def grow_pipe(fd: int, size: Optional[int] = ...) -> Optional[int]: ...
def _spliced_bytes() -> int: ...
def _set_tuning(
    spin_us: Optional[int] = ..., splice: Optional[bool] = ..., spin_yield: Optional[bool] = ...,
) -> None: ...
