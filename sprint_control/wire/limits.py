"""What a receiving end accepts, and the checks a sender runs before it writes anything.

A child refuses a message over its limits, but by then the bytes are on their way: a v2 child
ends, a v1 child has to read and discard the whole message. So the parent checks the same limits
before it sends and refuses with a message naming the option that raises them. The child's payload
limit is set from its pymod-config key ``max_payload`` (bytes); the parent passes the same number.
"""

from __future__ import annotations

from typing import Union

from ..errors import ProtocolError
from .constants import DEFAULT_MAX_NAME, DEFAULT_MAX_PAYLOAD

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_MAX_NAME",
    "MAX_PAYLOAD_OPTION",
    "V1_SLACK",
    "check_payload",
    "check_name",
    "v1_message_limit",
]

#: The option (pymod-config key and parent keyword) that sets the payload limit.
MAX_PAYLOAD_OPTION = "max_payload"
#: A v1 message carries its matrix plus a pickle around it: this much more than the payload limit
#: is accepted, so a segment that fits the limit on v2 fits on v1 too.
V1_SLACK = 1 << 20


def v1_message_limit(max_payload: int) -> int:
    """The largest v1 message (length prefix value) a reader with payload limit ``max_payload`` takes."""
    return max_payload + V1_SLACK


def check_payload(nbytes: int, limit: int, what: str = "payload", hint: str = "") -> None:
    """Raises ProtocolError unless ``nbytes`` fit the receiver's payload ``limit``.

    ``what`` names the thing, e.g. ``"posteriors of segment 'a/1'"``; ``hint`` says where the caller
    sets the option.
    """
    if nbytes > limit:
        raise ProtocolError(
            f"{what} of {nbytes} bytes exceed {MAX_PAYLOAD_OPTION} = {limit} bytes, the largest matrix the child"
            f" takes: raise the option {MAX_PAYLOAD_OPTION}{hint} (the child gets it as"
            f" {MAX_PAYLOAD_OPTION}:<bytes> in --*.pymod-config) if such segments are real"
        )


def check_name(name: Union[str, bytes], limit: int = DEFAULT_MAX_NAME, what: str = "segment name") -> None:
    """Raises ProtocolError (a ValueError) unless ``name`` (str or bytes) fits in ``limit`` bytes of UTF-8.

    The v2 frame header bounds a name to ``DEFAULT_MAX_NAME`` bytes; a longer one would end the child,
    so both protocols refuse it before anything is sent.
    """
    if isinstance(name, str) and 4 * len(name) <= limit:  # at most 4 bytes a character: no need to encode
        return
    size = len(name.encode("utf-8")) if isinstance(name, str) else len(name)
    if size > limit:
        raise ProtocolError(
            f"{what} {name[:40]!r}... has {size} bytes of UTF-8; a {what} may have at most {limit} bytes"
            " (the limit of a protocol-2 frame); it is refused before anything is sent"
        )
