"""The callback the emulator hands to the module, with RASR's commands, argument checks and errors.

RASR's callback is a C function parsed with ``PyArg_ParseTupleAndKeywords``: the command is the
first positional argument, the remaining arguments may be positional or keyword, ``str`` arguments
refuse bytes and None (TypeError "callback() argument N must be str, not bytes"), an unknown command
is a ValueError, an unknown segment name a KeyError. Some errors are "critical" in RASR and end the
whole process (exit status 1) instead of raising: a uint32 alignment, the cross-entropy criterion
asked for a plain ``error-signal``. Here such an error calls ``on_fatal(message)``, which by default
raises ``EmulatorFatalError``; the emulator program installs a handler that prints the message and
ends the process with status 1, as RASR does.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any, Callable, NoReturn, Optional

import numpy as np

from .. import __version__
from ..errors import SprintControlError
from . import criteria
from .args import VERSION_NUMBER
from .automaton import ExporterConfig, build_automaton, default_exporter
from .corpus import Corpus, empty_corpus
from .lexicon import Lexicon

log = logging.getLogger("sprint_control.emulator.callback")

CAPSULE_NAME = b"Sprint.PythonControl.Internal"
OUTPUT_ERROR_TYPES = ("none", "error-signal", "error-signal-before-softmax", "pseudo-targets")


class EmulatorFatalError(SprintControlError):
    """A critical error: RASR would end the process with exit status 1."""


def raise_fatal(message: str) -> NoReturn:
    raise EmulatorFatalError(message)


# PyCapsule_New keeps the name pointer: it must outlive every capsule, so it lives at module level.
_capsule_name_buf = ctypes.create_string_buffer(CAPSULE_NAME)
_capsule_target = ctypes.c_char(b"\0")


def make_capsule() -> object:
    """A real PyCapsule named "Sprint.PythonControl.Internal", like RASR's ``reference``."""
    new = ctypes.pythonapi.PyCapsule_New
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    return new(ctypes.addressof(_capsule_target), ctypes.addressof(_capsule_name_buf), None)


def _type_name(obj: Any) -> str:
    return "None" if obj is None else type(obj).__name__


def _parse(cmd: str, args: tuple, kwargs: dict, spec: list[tuple[str, str, bool]]) -> dict:
    """Emulates PyArg_ParseTupleAndKeywords for ``callback(cmd, *args, **kwargs)``: ``spec`` lists the
    arguments after the command as (name, 's' = str | 'O' = any object, required)."""
    n_total = 1 + len(spec)
    if 1 + len(args) > n_total:
        raise TypeError(f"callback() takes at most {n_total} arguments ({1 + len(args) + len(kwargs)} given)")
    names = [name for name, _, _ in spec]
    for k in kwargs:
        if k == "command":
            raise TypeError("argument for callback() given by name ('command') and position (1)")
        if k not in names:
            raise TypeError(f"'{k}' is an invalid keyword argument for callback()")
    out: dict = {}
    for i, (name, kind, required) in enumerate(spec):
        pos = i + 2  # 1-based, the command is argument 1
        if i < len(args):
            if name in kwargs:
                raise TypeError(f"argument for callback() given by name ('{name}') and position ({pos})")
            value = args[i]
        elif name in kwargs:
            value = kwargs[name]
        else:
            if required:
                raise TypeError(f"callback() missing required argument '{name}' (pos {pos})")
            continue
        if kind == "s":
            if not isinstance(value, str):
                raise TypeError(f"callback() argument {pos} must be str, not {_type_name(value)}")
            if "\0" in value:
                raise ValueError("embedded null character")
        out[name] = value
    return out


class Callback:
    """``callback(cmd, *args, **kwargs)`` as RASR's PythonControl offers it."""

    def __init__(
        self,
        corpus: Optional[Corpus] = None,
        criterion: str = criteria.DEFAULT_CRITERION,
        lexicon: Optional[Lexicon] = None,
        version_number: int = VERSION_NUMBER,
        num_labels: Optional[int] = None,
        input_in_log_space: bool = True,
        on_fatal: Callable[[str], NoReturn] = raise_fatal,
        exporter: Optional[ExporterConfig] = None,
        alignments: Optional[dict] = None,
    ):
        self.corpus = corpus if corpus is not None else empty_corpus()
        self.criterion = criteria.check_criterion(criterion)
        self.lexicon = lexicon or Lexicon()
        self.version_number = int(version_number)
        self.num_labels = num_labels
        self.input_in_log_space = bool(input_in_log_space)
        self.on_fatal = on_fatal
        # the alignment-fsa-exporter's configuration: the automata exported, whatever the criterion
        self.exporter = exporter if exporter is not None else default_exporter(self.criterion)
        self.alignments = alignments or {}  # segment name -> frame labels (the alignment file)
        self.criterion_initialized = False
        self.calls: dict[str, int] = {}

    # RASR's callback is a builtin; __name__ keeps messages and reprs readable.
    __name__ = "callback"

    def __repr__(self) -> str:
        return "<built-in method callback of sprint_control emulator PythonControl>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not args:
            raise TypeError("PythonControl callback(): requires at least one arg. try callback('help')")
        cmd = args[0]
        if not isinstance(cmd, str):
            raise TypeError(f"PythonControl callback(): first arg must be a string, not {_type_name(cmd)}")
        if not cmd.isascii():
            raise TypeError("PythonControl callback(): first arg is not a 1BYTE unicode string")
        handler = self._COMMANDS.get(cmd)
        if handler is None:
            raise ValueError(f"PythonControl callback(): unknown command '{cmd}'")
        self.calls[cmd] = self.calls.get(cmd, 0) + 1
        return handler(self, cmd, args[1:], kwargs)

    # -- commands ---------------------------------------------------------------------------------
    def _version(self, cmd, args, kwargs) -> str:
        return (
            f'<version><component name="sprint-control-emulator" version="{__version__}" '
            f'python-control-version="{self.version_number}"/></version>'
        )

    def _version_number(self, cmd, args, kwargs) -> int:
        return self.version_number

    def _help(self, cmd, args, kwargs) -> str:
        return (
            "Usage: callback(cmd, *args).\n"
            "callback comes via the sprint_control emulator's PythonControl.\n"
            f"Commands: {', '.join(sorted(self._COMMANDS))}.\n"
        )

    def _init_criterion(self, cmd, args, kwargs) -> None:
        self.criterion_initialized = True
        log.debug("criterion %s initialized", self.criterion)
        return None

    def _posteriors(self, obj: Any) -> np.ndarray:
        if not isinstance(obj, np.ndarray):
            self.on_fatal(f"PythonControl: posteriors must be a numpy array, got {_type_name(obj)}")
        if obj.ndim != 2:
            self.on_fatal(f"PythonControl: posteriors must be a 2-D (dim, time) matrix, got shape {obj.shape}")
        if obj.dtype.kind != "f":
            self.on_fatal(f"PythonControl: posteriors must be a float matrix, got dtype {obj.dtype}")
        return obj

    def _alignment(self, obj: Any) -> np.ndarray:
        if not isinstance(obj, np.ndarray) or obj.ndim != 1:
            self.on_fatal(
                f"PythonControl: alignment must be a 1-D float32/float64 numpy vector, got {_type_name(obj)}"
                + (f" of shape {obj.shape}" if isinstance(obj, np.ndarray) else "")
            )
        if obj.dtype not in (np.float32, np.float64):
            self.on_fatal(
                f"PythonControl: alignment must be a float32/float64 vector (RASR converts it to a float "
                f"vector), got dtype {obj.dtype}"
            )
        return obj

    def _calculate_criterion(self, cmd, args, kwargs):
        a = _parse(
            cmd,
            args,
            kwargs,
            [
                ("posteriors", "O", True),
                ("orthography", "s", False),
                ("alignment", "O", False),
                ("output_error_type", "s", False),
                ("segment_name", "s", False),
            ],
        )
        out_type = a.get("output_error_type", "none")
        if out_type not in OUTPUT_ERROR_TYPES:
            raise ValueError(f"PythonControl callback(): calculate_criterion: unknown output_error_type '{out_type}'")
        if "alignment" in a and "orthography" in a:
            raise ValueError(
                "PythonControl callback(): calculate_criterion: you should provide either an alignment, "
                "or the orthography, but not both"
            )
        posteriors = self._posteriors(a["posteriors"])
        alignment = self._alignment(a["alignment"]) if "alignment" in a else None
        self.criterion_initialized = True
        crit = self.criterion
        if crit in criteria.ALIGNMENT_CRITERIA and out_type == "error-signal":
            self.on_fatal(
                f"PythonControl: the {crit} criterion gives no plain 'error-signal' (not implemented); "
                "ask for 'error-signal-before-softmax' (with --*.input-in-log-space=false)"
            )
        orthography = a.get("orthography")
        seg_name = a.get("segment_name")
        if alignment is None and seg_name is not None and crit not in ("bench", "none"):
            # The criterion takes what the call lacks from the corpus by segment name: the orthography for
            # the automaton criteria, the frame alignment for cross-entropy.
            if crit in criteria.ALIGNMENT_CRITERIA:
                alignment = self.segment_alignment(seg_name, "calculate_criterion")
            elif orthography is None:
                orthography = self._segment(seg_name, "calculate_criterion").orthography
        # Input space: log-posteriors for "error-signal" (RASR's --*.input-in-log-space=true), probabilities
        # for "error-signal-before-softmax" (the caller exponentiated); otherwise the configured space.
        if out_type == "error-signal":
            in_log_space = True
        elif out_type == "error-signal-before-softmax":
            in_log_space = False
        else:
            in_log_space = self.input_in_log_space
        log_post = criteria.as_log_posteriors(posteriors.T, in_log_space)
        try:
            return self._criterion_result(crit, out_type, log_post, orthography, alignment, seg_name)
        except ValueError as exc:
            if seg_name is None:
                raise
            raise ValueError(f"PythonControl callback(): calculate_criterion: segment {seg_name!r}: {exc}") from None

    def _criterion_result(self, crit, out_type, log_post, orthography, alignment, seg_name):
        if out_type == "pseudo-targets":
            loss, tgt = criteria.targets(crit, log_post, orthography, alignment, self.lexicon, self.exporter)
            if loss is None:
                return None, None
            if crit in ("squared-error", "binary-divergence"):  # RASR: these have no pseudo-targets
                return float(np.float32(loss)), None
            return float(np.float32(loss)), np.asfortranarray(tgt.T, dtype=np.float32)
        loss, err = criteria.compute_criterion(crit, log_post, orthography, alignment, self.lexicon, self.exporter)
        if loss is None:
            log.info("segment %s discarded by the %s criterion", seg_name or orthography, crit)
            return None, None
        loss = float(np.float32(loss))  # RASR returns its f32 objective function
        if out_type == "none":
            return loss, None
        return loss, np.ascontiguousarray(err).T  # (T, L) C-contiguous -> (L, T) F-contiguous

    def _fsa_by_orthography(self, cmd, args, kwargs):
        a = _parse(cmd, args, kwargs, [("orthography", "s", True)])
        return build_automaton(self.exporter, self.lexicon, a["orthography"]).export()

    def _fsa_by_segment_name(self, cmd, args, kwargs):
        a = _parse(cmd, args, kwargs, [("segment_name", "s", True)])
        seg = self._segment(a["segment_name"], "export_allophone_state_fsa_by_segment_name")
        try:
            return build_automaton(self.exporter, self.lexicon, seg.orthography).export()
        except ValueError as exc:
            raise ValueError(f"PythonControl export_allophone_state_fsa_by_segment_name: segment "
                             f"{seg.name!r}: {exc}") from None

    def segment_alignment(self, name: str, what: str):
        """The frame alignment of a corpus segment: from the alignment file, else the corpus's own."""
        if name in self.alignments:
            return self.alignments[name]
        return self._segment(name, what).alignment

    def _orthography_by_segment_name(self, cmd, args, kwargs):
        a = _parse(cmd, args, kwargs, [("segment_name", "s", True)])
        return self._segment(a["segment_name"], "get_orthography_by_segment_name").orthography

    def _segment(self, name: str, what: str):
        if name not in self.corpus:
            raise KeyError(f"PythonControl {what}: unknown segment name '{name}'")
        return self.corpus.get(name)

    def _unsupported(self, cmd, args, kwargs):
        raise ValueError(f"PythonControl callback(): command '{cmd}' needs RASR caches; the emulator has none")

    _COMMANDS: dict = {
        "version": _version,
        "version_number": _version_number,
        "help": _help,
        "init_criterion": _init_criterion,
        "calculate_criterion": _calculate_criterion,
        "export_allophone_state_fsa_by_orthography": _fsa_by_orthography,
        "export_allophone_state_fsa_by_segment_name": _fsa_by_segment_name,
        "get_orthography_by_segment_name": _orthography_by_segment_name,
        "get_alignment_from_cache": _unsupported,
        "analyze_alignment_from_cache": _unsupported,
    }
