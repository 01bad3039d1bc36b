"""The child's command loop, written once: every child (the Sprint side, the bench child, the test
peers) is this loop and a table of handlers.

The server owns what is the transport's business: ``init`` (the capabilities), ``use_protocol``
(the switch and the shared region), ``shm_remap`` and ``exit``. Every other command goes to the
handler of that name, called as ``handler(reply, *args)``; it answers through ``reply`` exactly
once (``reply.loss``, ``reply.fsa``, ``reply.ok``). Whatever a handler raises goes back to the
parent with its traceback and the loop goes on; a malformed message is answered the same way,
and ends the loop when it left the stream out of step (a bad v2 header, a v1 length below 1).
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

import numpy as np

from ..errors import ProtocolError, SprintControlError
from .child_link import FSA_COMMAND, LOSS_COMMAND, ChildLink
from .link import SUPPORTED_PROTOCOLS
from .v1 import INIT_VERSION

__all__ = ["CommandServer", "Reply", "Handler", "LOSS_COMMAND", "FSA_COMMAND"]

logger = logging.getLogger("sprint_control.server")


class Reply:
    """The answer to one command; a handler calls one of its methods exactly once."""

    def __init__(self, server: CommandServer, command: str, seg_name: str = ""):
        self._server = server
        self.command = command
        self.seg_name = seg_name
        self.sent = False

    @property
    def destination(self):
        """For a loss request that came by shared memory: the region's (time, label) view the error
        signal goes to (computing into it saves the copy); else None."""
        return self._server.link.shared_destination if self.command == LOSS_COMMAND else None

    def _send(self, write, *args, **kwargs) -> None:
        if self.sent:
            raise SprintControlError(f"the command {self.command!r} was answered twice")
        with self._server.write_lock:
            write(*args, **kwargs)
        # counted once written: a reply refused before its first byte leaves room for the error
        self.sent = True

    def ok(self, *results) -> None:
        """``("ok", *results)``."""
        self._send(self._server.link.reply_ok, *results)

    def loss(self, loss: float, error_signal: np.ndarray, skipped: bool = False) -> None:
        """The loss and the (time, label) error signal of the requested segment."""
        self._send(self._server.link.reply_loss, self.seg_name, loss, error_signal, skipped=skipped)

    def fsa(self, num_states: int, num_edges: int, edges: np.ndarray, weights: np.ndarray) -> None:
        """The automaton of the requested segment."""
        self._send(self._server.link.reply_fsa, num_states, num_edges, edges, weights)

    def init(self, name: str, capabilities: dict) -> None:
        """The answer to ``init`` (the server's own)."""
        self._send(self._server.link.reply_init, name, capabilities)

    def protocol(self, version: int, options: dict) -> None:
        """The answer to ``use_protocol``, which switches the link (the server's own)."""
        self._send(self._server.link.accept_protocol, version, options)


#: ``handler(reply, *args)``: answers through ``reply``.
Handler = Callable[..., None]


class CommandServer:
    """Serves the parent's commands on ``link`` until ``exit`` or EOF.

    :param handlers: command name -> handler; ``init``, ``use_protocol``, ``shm_remap`` and ``exit``
        are the server's own.
    :param name: the name ``init`` answers with.
    :param capabilities: what ``init`` announces (a dict, or a function returning one when asked);
        ``protocols`` defaults to ``protocols``.
    :param protocols: the protocols this child offers and accepts.
    :param write_lock: taken around every write, when other threads write to the link too.
    :param log: ``log(message, error=False)`` for the loop's events (default: this module's logger).
    """

    def __init__(
        self,
        link: ChildLink,
        handlers: Mapping[str, Handler],
        *,
        name: str = "sprint_control",
        capabilities: Union[dict, Callable[[], dict], None] = None,
        protocols=SUPPORTED_PROTOCOLS,
        write_lock: Optional[Any] = None,
        log: Optional[Callable[..., None]] = None,
    ):
        reserved = {"init", "use_protocol", "shm_remap", "exit"} & set(handlers)
        if reserved:
            raise ValueError(f"the server handles {sorted(reserved)} itself")
        self.link = link
        self.handlers = dict(handlers)
        self.name = name
        self._capabilities = capabilities
        self.protocols = tuple(protocols)
        self.write_lock = write_lock if write_lock is not None else threading.Lock()
        self._log = log or _default_log
        #: why the loop ended: "exit", "eof", "out of step", "broken pipe" (None while it runs)
        self.ended: Optional[str] = None
        #: set when the loop ended because the pipes failed for another reason than the parent
        #: closing its end (an fd that cannot be written, ENOSPC, EBADF): the Sprint side then fails
        self.failure: Optional[str] = None
        self._own = {"init": self._init, "use_protocol": self._use_protocol, "shm_remap": self._shm_remap}

    def serve(self) -> str:
        """Handles commands until the loop ends; returns why it ended (see ``ended``)."""
        while self.handle_next():
            pass
        return self.ended or "ended"

    def handle_next(self) -> bool:
        """Reads one command, handles it and sends the answer; False when the loop should end."""
        try:
            message = self.link.recv_command()
        except EOFError:
            return self._end("eof", "the parent closed the pipe")
        except ProtocolError as exc:
            self._log(f"undecodable message from the parent: {exc}", error=True)
            if not self.send_error(exc, traceback.format_exc()) or not self.link.in_step:
                return self._end("out of step")
            return True
        except OSError as exc:
            self._note_failure(exc, "reading from the parent")
            return self._end("broken pipe", f"reading from the parent failed: {exc!r}", error=True)
        cmd, args = message[0], message[1:]
        if cmd == "exit":
            self._log("the parent sent exit; closing the pipes")
            with self.write_lock:
                self.link.close()
            return self._end("exit")
        reply = Reply(self, cmd, args[0] if cmd == LOSS_COMMAND and args else "")
        try:
            handler = self._own.get(cmd) or self.handlers.get(cmd)
            if handler is None:
                known = ", ".join(["init", "use_protocol", *self.handlers, "exit"])
                raise ProtocolError(f"unknown command {cmd!r}; known: {known}")
            handler(reply, *args)
            if not reply.sent:
                raise SprintControlError(f"the handler of {cmd!r} returned without an answer")
        except (BrokenPipeError, ConnectionError) as exc:
            return self._end("broken pipe", f"the parent is gone ({exc!r}); ending the control loop")
        except Exception as exc:
            text = traceback.format_exc()
            self._log(f"command {cmd!r} failed: {exc!r}\n{text}", error=True)
            if reply.sent:  # the answer is out; a second one would put the stream out of step
                return True
            if not self.send_error(exc, text):
                return self._end("broken pipe")
        return True

    def send_error(self, exc: BaseException, text: str) -> bool:
        """Sends ``exc`` with its traceback ``text`` as the answer; False when the pipe is gone."""
        try:
            with self.write_lock:
                self.link.reply_exception(type(exc).__name__, text)
        except OSError as exc2:
            self._log(f"could not send the error to the parent: {exc2!r}", error=True)
            self._note_failure(exc2, "writing to the parent")
            return False
        return True

    def _note_failure(self, exc: OSError, doing: str) -> None:
        if not isinstance(exc, (BrokenPipeError, ConnectionError)):  # those mean: the parent is gone
            self.failure = self.failure or f"{doing} failed: {exc}"

    def _end(self, why: str, message: str = "", error: bool = False) -> bool:
        if message:
            self._log(message, error=error)
        self.ended = why
        return False

    # -- the server's own commands -------------------------------------------------------------------

    def _init(self, reply: Reply, *args) -> None:
        if len(args) < 2 or args[1] != INIT_VERSION:
            raise ProtocolError(f"init expects (name, {INIT_VERSION}), got {args!r:.200}")
        caps = self._capabilities() if callable(self._capabilities) else dict(self._capabilities or {})
        caps.setdefault("protocols", list(self.protocols))
        reply.init(self.name, caps)

    def _use_protocol(self, reply: Reply, version=None, options=None, *_) -> None:
        if version not in self.protocols:
            raise ProtocolError(f"protocol {version!r} is not supported; this side speaks {self.protocols}")
        reply.protocol(version, options if isinstance(options, dict) else {})
        self._log(f"using protocol {version}", verbose=True)

    def _shm_remap(self, reply: Reply, size, generation) -> None:
        self.link.remap_shm(size, generation)
        reply.ok()


def _default_log(message: str, error: bool = False, verbose: bool = False) -> None:
    logger.log(logging.WARNING if error else logging.DEBUG, "%s", message)
