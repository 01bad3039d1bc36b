"""Drives the Python module the way RASR's nn-trainer does: imports it, calls ``init`` with RASR's
keyword arguments, then runs one of three flows (see docs/emulator.md):

- ``python-control-loop``: ``run_control_loop(callback=...)`` then ``exit()``;
- flow A, ``iterate-corpus``: ``init_processing`` once, ``process_segment`` per segment, ``exit()``;
- flow B, ``supervised-segmentwise-training``: a ``SprintNnPythonLayer`` inside the emulator's own
  trainer: per segment ``init_segment``, ``forward``, the criterion, ``notify_segment_loss``,
  ``backpropagate``; at the end ``finalize()`` and ``exit()``.

In both corpus flows the segment order comes from the module's ``getSegmentList`` when
``python-segment-order`` is on, else from the corpus. An exception raised by the module and any
"critical error" (a return value RASR refuses) end the run with exit status 1, as in RASR.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from typing import Any, Callable, NoReturn, Optional

import numpy as np

from . import criteria
from .alignments import load_alignments
from .args import VERSION_NUMBER, Config
from .automaton import exporter_config
from .bliss_lexicon import BlissLexicon
from .callback import Callback, EmulatorFatalError, make_capsule
from .corpus import Corpus, empty_corpus, load_corpus, select_segments, synthetic_corpus
from .lexicon import Lexicon, make_alphabet

log = logging.getLogger("sprint_control.emulator")

UNIT_CONTROL = "NnTrainer.pythonControl"
UNIT_SEGMENTWISE = "SegmentwiseNnTrainer"


def die(message: str) -> NoReturn:
    """RASR's critical error: the message on stderr, then the whole process ends with status 1
    (also when called from a thread the module started)."""
    try:
        sys.stdout.flush()
    except Exception:
        pass
    try:
        sys.stderr.write(f"[emulator] critical error: {message}\n")
        sys.stderr.flush()
    finally:
        os._exit(1)


def lexicon_from_config(cfg: Config) -> Lexicon:
    if cfg["lexicon.file"]:  # RASR's Bliss XML lexicon
        return BlissLexicon.from_config(cfg)  # type: ignore[return-value]
    if cfg["lexicon.alphabet-size"] > 0:
        alphabet = make_alphabet(cfg["lexicon.alphabet-size"])
    else:
        alphabet = cfg["lexicon.alphabet"] or Lexicon().alphabet
    return Lexicon(
        alphabet=alphabet, states_per_symbol=cfg["lexicon.states-per-symbol"], silence=cfg["lexicon.silence"]
    )


def corpus_from_config(cfg: Config, lexicon: Lexicon) -> Corpus:
    corpus = _corpus_from_config(cfg, lexicon)
    if cfg["corpus.segments.file"] and not cfg["corpus.file"]:  # RASR's segment whitelist
        corpus = select_segments(corpus, cfg["corpus.segments.file"])
    return corpus


def _corpus_from_config(cfg: Config, lexicon: Lexicon) -> Corpus:
    name = cfg["corpus.name"] or None
    if cfg["corpus.file"]:  # the segment list is applied while reading, before any per-segment work
        return load_corpus(
            cfg["corpus.file"],
            lexicon=lexicon,
            feature_dim=cfg["corpus.feature-dim"],
            seed=cfg["corpus.seed"],
            noise=cfg["corpus.noise"],
            name=name,
            segments_file=cfg["corpus.segments.file"] or None,
        )
    if cfg["corpus.synthetic"] > 0:
        return synthetic_corpus(
            cfg["corpus.synthetic"],
            seed=cfg["corpus.seed"],
            lexicon=lexicon,
            feature_dim=cfg["corpus.feature-dim"],
            min_frames=cfg["corpus.min-frames"],
            max_frames=cfg["corpus.max-frames"],
            max_symbols=cfg["corpus.max-symbols"],
            noise=cfg["corpus.noise"],
            name=name or "synthetic",
        )
    return empty_corpus(name or "corpus", cfg["corpus.feature-dim"])


def version_number_from_config(cfg: Config) -> Optional[int]:
    raw = str(cfg["version-number"]).strip().lower()
    if raw in ("none", ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"option version-number: expected an integer or 'none', got {raw!r}") from None


class Host:
    """One emulated RASR run over the parsed configuration."""

    def __init__(self, cfg: Config, on_fatal: Callable[[str], NoReturn] = die):
        self.cfg = cfg
        self.on_fatal = on_fatal
        self.lexicon = lexicon_from_config(cfg)
        self.corpus = corpus_from_config(cfg, self.lexicon)
        self.criterion = cfg["training-criterion"]
        self.version_number = version_number_from_config(cfg)
        extra = cfg["corpus.num-labels"] or None
        self.num_labels = criteria.num_labels(self.criterion, self.lexicon, default=extra)
        self.exporter = exporter_config(cfg)
        for message in self.exporter.warnings:
            log.warning("%s", message)
        lemmas = getattr(self.lexicon, "lemmas", ())
        if self.exporter.topology == "hmm" and any(len(lm.pronunciations) > 1 for lm in lemmas):
            log.warning("the lexicon has pronunciation variants: the emulator numbers parallel variant branches "
                        "in lexicon order, RASR after its FSA library's normalisation, so their state numbers "
                        "(and the edge order) may differ from RASR's; paths and weights are the same")
        self.alignments = (load_alignments(cfg["corpus.alignment-file"], self.corpus, self.num_labels)
                           if cfg["corpus.alignment-file"] else {})
        self.callback = Callback(
            corpus=self.corpus,
            criterion=self.criterion,
            lexicon=self.lexicon,
            version_number=self.version_number if self.version_number is not None else VERSION_NUMBER,
            num_labels=self.num_labels,
            input_in_log_space=cfg["input-in-log-space"],
            on_fatal=on_fatal,
            exporter=self.exporter,
            alignments=self.alignments,
        )
        self.reference = make_capsule()
        self.stats = {"segments": 0, "discarded": 0, "unknown": 0, "frames": 0, "loss": 0.0}

    # -- helpers -------------------------------------------------------------------------------------
    def fatal(self, message: str) -> NoReturn:
        self.on_fatal(message)
        raise EmulatorFatalError(message)  # only reached if on_fatal returned

    def call(self, what: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Calls into the module; an exception there is critical (traceback, then exit 1)."""
        try:
            return fn(*args, **kwargs)
        except (Exception, SystemExit):
            sys.stderr.write(traceback.format_exc())
            sys.stderr.flush()
            self.fatal(what)

    def import_module(self, path: str, name: str, unit: str) -> Any:
        if path:
            for p in reversed(path.split(":")):
                if p and p not in sys.path:
                    sys.path.insert(0, p)
        if not name:
            self.fatal(f"PythonControl({unit}): need Python module name (pymod-name)")
        return self.call(f"PythonControl({unit}): cannot import module '{name}'", importlib.import_module, name)

    def init_module(self, module: Any, unit: str) -> Any:
        kwargs: dict = {
            "name": "Sprint.PythonControl",
            "sprint_unit": unit,
            "reference": self.reference,
        }
        if self.version_number is not None:
            kwargs["callback"] = self.callback
            kwargs["version_number"] = self.version_number
        kwargs["config"] = self.cfg["pymod-config"]
        init = getattr(module, "init", None)
        if init is None:
            self.fatal(f"PythonControl({unit}): module {module.__name__!r} has no init()")
        obj = self.call(f"PythonControl({unit}): init() failed", init, **kwargs)
        if obj is None:
            self.fatal(f"PythonControl({unit}): init() returned None")
        return obj

    def segment_order(self, module: Any) -> Any:
        """The iterable of segment names: the module's getSegmentList, or the corpus order."""
        if not self.cfg["python-segment-order"]:
            return iter(self.corpus.names)
        cfg = self.cfg
        name = cfg["python-segment-order-pymod-name"] or cfg["pymod-name"]
        path = cfg["python-segment-order-pymod-path"] or cfg["pymod-path"]
        seg_module = module if name == module.__name__ else self.import_module(path, name, "PythonSegmentOrder")
        get_list = getattr(seg_module, "getSegmentList", None)
        if get_list is None:
            self.fatal(f"PythonSegmentOrder: module {name!r} has no getSegmentList()")
        seg_config = (
            cfg["python-segment-order-config"] if cfg.given("python-segment-order-config") else cfg["pymod-config"]
        )
        result = self.call(
            "PythonSegmentOrder: getSegmentList() failed",
            get_list,
            corpusName=self.corpus.name,
            segmentList=self.corpus.names,
            segmentsInfo=self.corpus.segments_info(),
            config=seg_config,
        )
        return self.call("PythonSegmentOrder: getSegmentList() did not return an iterable", iter, result)

    def segments(self, it: Any):
        """Yields the corpus segments named by the iterator ``it`` (from ``segment_order``, which the
        caller calls first so getSegmentList runs at RASR's moment); unknown names are logged and
        skipped."""
        while True:
            name = self.call("PythonSegmentOrder: iterating the segment list failed", next, it, StopIteration)
            if name is StopIteration:
                return
            if isinstance(name, bytes):
                name = name.decode("utf-8")
            if not isinstance(name, str):
                self.fatal(f"PythonSegmentOrder: segment names must be str, got {type(name).__name__}: {name!r}")
            if name not in self.corpus:
                self.stats["unknown"] += 1
                log.error("segment %r from the segment list is not in corpus %r; skipped", name, self.corpus.name)
                continue
            yield self.corpus.get(name)

    # -- flows ---------------------------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.cfg
        if cfg["action"] == "supervised-segmentwise-training":
            self.run_segmentwise()
        else:
            module = self.import_module(cfg["pymod-path"], cfg["pymod-name"], UNIT_CONTROL)
            log.info("PythonControl(%s) is enabled", UNIT_CONTROL)
            obj = self.init_module(module, UNIT_CONTROL)
            if cfg["python-control-loop-type"] == "iterate-corpus":
                self.run_iterate_corpus(module, obj)
            else:
                self.call(
                    f"PythonControl({UNIT_CONTROL}): run_control_loop() failed",
                    obj.run_control_loop,
                    callback=self.callback,
                )
            self.call(f"PythonControl({UNIT_CONTROL}): exit() failed", obj.exit)
        self.log_summary()
        return 0

    def run_iterate_corpus(self, module: Any, obj: Any) -> None:
        extract_features = self.cfg["extract-features"]
        extract_alignments = self.cfg["extract-alignments"] and extract_features
        first = True
        for seg in self.segments(self.segment_order(module)):
            features = None
            if extract_features and seg.features is not None:
                features = seg.features.T  # (dim, time), F-contiguous like RASR's column-major matrix
            alignment = None
            if extract_alignments:
                seg_alignment = self.alignments.get(seg.name, seg.alignment)  # the alignment file first
                if seg_alignment is None:
                    log.error("segment %r has no alignment", seg.name)
                else:
                    alignment = seg_alignment.astype(np.uint32, copy=False)
            if first:
                input_dim = self.corpus.feature_dim if extract_features else -1
                output_dim = self.lexicon.num_hmm_labels if extract_alignments else -1
                self.call(
                    f"PythonControl({UNIT_CONTROL}): run_custom(init_processing) failed",
                    obj.init_processing,
                    input_dim=input_dim,
                    output_dim=output_dim,
                )
                first = False
            self.call(
                f"PythonControl({UNIT_CONTROL}): run_custom(process_segment) failed",
                obj.process_segment,
                name=seg.name,
                orthography=seg.orthography.encode("utf-8"),
                speaker_name=seg.speaker,
                features=features,
                alignment=alignment,
                soft_alignment=None,
            )
            self.stats["segments"] += 1
            self.stats["frames"] += seg.num_frames

    def run_segmentwise(self) -> None:
        cfg = self.cfg
        unit = UNIT_SEGMENTWISE
        module = self.import_module(cfg["pymod-path"], cfg["pymod-name"], unit)
        obj = None
        if cfg["python-control-enabled"]:
            log.info("PythonControl(%s) is enabled", unit)
            obj = self.init_module(module, unit)
        else:
            log.info("PythonControl(%s) is disabled", unit)
        in_log = cfg["input-in-log-space"]
        if self.criterion in criteria.ALIGNMENT_CRITERIA and in_log:
            self.fatal(
                f"the {self.criterion} criterion gives no error signal for log-space input (not implemented); "
                "use --*.input-in-log-space=false"
            )
        order = self.segments(self.segment_order(module))
        layer_cls = getattr(module, "SprintNnPythonLayer", None)
        if layer_cls is None:
            self.fatal(f"PythonLayer: module {cfg['pymod-name']!r} has no SprintNnPythonLayer")
        layer = self.call("PythonLayer: SprintNnPythonLayer() failed", layer_cls, config=cfg["pymod-config"])
        L = self.num_labels
        self.call(
            "PythonLayer: setInputDimension() failed", layer.setInputDimension, stream=0, size=self.corpus.feature_dim
        )
        self.call("PythonLayer: setOutputDimension() failed", layer.setOutputDimension, size=L)
        self.call("PythonLayer: initializeNetworkParameters() failed", layer.initializeNetworkParameters)
        trainable = self.call("PythonLayer: isTrainable() failed", layer.isTrainable)
        if type(trainable) is not bool:
            self.fatal(f"PythonLayer: isTrainable() must return a bool, got {type(trainable).__name__}: {trainable!r}")
        n_params = self.call("PythonLayer: getNumberOfFreeParameters() failed", layer.getNumberOfFreeParameters)
        log.info("PythonLayer: trainable=%s, free parameters=%s, output dim=%d", trainable, n_params, L)
        for seg in order:
            T = seg.num_frames
            if obj is not None:
                self.call(
                    f"PythonControl({unit}): run_custom(init_segment) failed", obj.init_segment, segment_name=seg.name
                )
            features = (
                seg.features.T
                if seg.features is not None
                else np.zeros((self.corpus.feature_dim, T), np.float32, order="F")
            )
            out = self.call("PythonLayer: forward() failed", layer.forward, input=[features])
            if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != (L, T):
                desc = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
                self.fatal(f"PythonLayer: forward() must return a float32 ({L}, {T}) matrix (label, time), got {desc}")
            log_post = criteria.as_log_posteriors(out.T, in_log)
            try:
                loss, err = criteria.compute_criterion(
                    self.criterion, log_post, orthography=seg.orthography,
                    alignment=self.alignments.get(seg.name, seg.alignment), lexicon=self.lexicon,
                    exporter=self.exporter,
                )
            except ValueError as exc:
                self.fatal(f"criterion {self.criterion}: segment {seg.name!r}: {exc}")
            self.stats["segments"] += 1
            self.stats["frames"] += T
            if loss is None:
                self.stats["discarded"] += 1
                log.info("segment %r discarded by the %s criterion", seg.name, self.criterion)
                continue
            self.stats["loss"] += loss
            if obj is not None:
                self.call(
                    f"PythonControl({unit}): run_custom(notify_segment_loss) failed",
                    obj.notify_segment_loss,
                    segment_name=seg.name,
                    loss=loss,
                )
            grads = self.call(
                "PythonLayer: backpropagate() failed", layer.backpropagate, errorSignalIn=np.ascontiguousarray(err).T
            )
            if not isinstance(grads, tuple):
                self.fatal(f"PythonLayer: backpropagate() must return a tuple, got {type(grads).__name__}")
        self.call("PythonLayer: finalize() failed", layer.finalize)
        if obj is not None:
            self.call(f"PythonControl({unit}): exit() failed", obj.exit)

    def log_summary(self) -> None:
        s = self.stats
        if not (s["segments"] or s["unknown"]):
            return
        if self.cfg["action"] == "supervised-segmentwise-training":
            log.info(
                "trained on %d segments (%d frames), discarded %d, unknown %d, total loss %.6g",
                s["segments"],
                s["frames"],
                s["discarded"],
                s["unknown"],
                s["loss"],
            )
        else:
            log.info("processed %d segments (%d frames), unknown %d", s["segments"], s["frames"], s["unknown"])
