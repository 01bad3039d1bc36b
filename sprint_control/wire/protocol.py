"""The messages between parent and child, protocol v1 (RETURNN's) and v2 (ours), and the switch:
the public names of the wire's message layer, gathered from the modules that implement them.

Version 1 (``v1``): a 4-byte little-endian signed length, then a pickle of a tuple, read by a safe
unpickler. Version 2: the binary frames of ``csrc/frame.h`` (``framing``); the hot pair
LOSS_REQUEST / LOSS_RESULT never touches pickle.

Negotiation keeps v1's handshake byte for byte: the parent sends ``("init", name, 1)``; our child
answers ``("ok", name, 1, capabilities)`` (RETURNN's parent ignores the 4th item). Only a parent
that sees ``2`` in ``capabilities["protocols"]`` sends ``("use_protocol", 2, options)``; after the
child's ``("ok", 2, options)`` both ends speak v2. Every other pairing stays on v1.

The two ends: ``ParentLink`` (``parent_link``) asks and matches every answer to its request;
``ChildLink`` (``child_link``) answers, and ``CommandServer`` (``server``) is the child's loop.
"""

from __future__ import annotations

from .child_link import LOSS_COMMAND, ChildLink
from .limits import DEFAULT_MAX_NAME, DEFAULT_MAX_PAYLOAD, MAX_PAYLOAD_OPTION, check_name, check_payload
from .link import PROTOCOL_V1, PROTOCOL_V2, SUPPORTED_PROTOCOLS
from .parent_link import UNMATCHED, ParentLink, PendingRequest
from .server import CommandServer, Reply
from .v1 import INIT_VERSION, V1_MAX_MESSAGE, SafeUnpickler, array_from_bytes, decode_v1, encode_v1

__all__ = [
    "PROTOCOL_V1",
    "PROTOCOL_V2",
    "SUPPORTED_PROTOCOLS",
    "INIT_VERSION",
    "V1_MAX_MESSAGE",
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_MAX_NAME",
    "MAX_PAYLOAD_OPTION",
    "check_payload",
    "check_name",
    "SafeUnpickler",
    "encode_v1",
    "decode_v1",
    "array_from_bytes",
    "ParentLink",
    "ChildLink",
    "PendingRequest",
    "CommandServer",
    "Reply",
    "Link",
]


class Link(ParentLink, ChildLink):
    """Either end, for code written before the link was split by side: it offers the parent's
    requests and the child's answers. New code names its side (``ParentLink``, ``ChildLink``).

    Unlike a ParentLink it lets a caller read a loss answer while no request is pending (tests that
    write both ends by hand do): such an answer is matched to nothing but ``shape``.
    """

    def recv_loss_result(self, shape, out=None):
        if self._pending is None:
            self._pending = PendingRequest(LOSS_COMMAND, "", UNMATCHED, tuple(shape))
        return super().recv_loss_result(shape, out)
