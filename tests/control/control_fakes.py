"""A scripted stand-in for RASR's side of the module (its callback and the three ways it drives the
module), plus an independent reference criterion, for the in-process tests of sprint_control.control."""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

import numpy as np

from sprint_control import control

ERROR_TYPES = ("none", "error-signal", "error-signal-before-softmax", "pseudo-targets")


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def random_log_posteriors(rng: np.random.Generator, frames: int, labels: int) -> np.ndarray:
    """(time, label) float32 log-probabilities (rows sum to 1 in probability space)."""
    return log_softmax(rng.normal(size=(frames, labels)) * 2.0).astype(np.float32)


def alignment_from_orthography(orthography: str, frames: int, labels: int) -> np.ndarray:
    """The fake criterion's targets: the orthography's letters spread evenly over the frames."""
    letters = [ord(c) % labels for c in orthography] or [0]
    return np.array([letters[t * len(letters) // frames] for t in range(frames)], dtype=np.int64)


def reference_ce(log_posteriors: np.ndarray, alignment: np.ndarray) -> tuple[float, np.ndarray]:
    """Cross-entropy computed directly in (time, label) layout, float64: loss = -sum_t log p(a_t),
    error signal = softmax - onehot (w.r.t. the activations before the softmax)."""
    lp = log_softmax(log_posteriors.astype(np.float64))
    frames = lp.shape[0]
    loss = -float(lp[np.arange(frames), alignment].sum())
    err = np.exp(lp)
    err[np.arange(frames), alignment] -= 1.0
    return loss, err.astype(np.float32)


def fsa_of(name: str) -> tuple[int, int, np.ndarray, np.ndarray]:
    """A deterministic little automaton per segment name: a chain with a self-loop on each state."""
    n = 2 + len(name) % 5
    edges = []
    weights = []
    for s in range(n - 1):
        edges.append((s, s + 1, (s * 7 + len(name)) % 11))
        weights.append(0.5 * s)
        edges.append((s, s, (s * 3) % 11))
        weights.append(1.25)
    e = np.array(edges, dtype=np.uint32).T.reshape(-1)  # from row, to row, emission row
    return n, len(weights), e, np.array(weights, dtype=np.float32)


class FakeSprintCallback:
    """RASR's ``callback(cmd, **kwargs)``, with RASR's argument checks (str names and orthographies,
    float alignment, (label, time) float32 posteriors) and a cross-entropy criterion whose targets
    come from the orthography (or from the alignment when one is given)."""

    def __init__(self, orthographies: Optional[dict] = None, discard: tuple = (), fail: tuple = ()):
        self.orthographies = dict(orthographies or {})
        self.discard = set(discard)
        self.fail = set(fail)
        self.calls: list[tuple[str, dict]] = []
        self.fast_path_inputs = 0
        self.threads: set[str] = set()

    def __call__(self, cmd, *args, **kwargs):
        if not isinstance(cmd, str):
            raise TypeError(f"callback() argument 1 must be str, not {type(cmd).__name__}")
        if args:
            raise TypeError("callback takes keyword arguments only")
        self.calls.append((cmd, kwargs))
        self.threads.add(threading.current_thread().name)
        if cmd == "version":
            return "<version>fake RASR</version>"
        if cmd == "version_number":
            return 5
        if cmd == "get_orthography_by_segment_name":
            return self.orthographies[kwargs["segment_name"]]
        if cmd == "export_allophone_state_fsa_by_segment_name":
            name = kwargs["segment_name"]
            if not isinstance(name, str):
                raise TypeError("segment_name must be str")
            if name in self.fail:
                raise KeyError(f"no automaton for {name}")
            return fsa_of(name)
        if cmd == "calculate_criterion":
            return self._criterion(**kwargs)
        raise ValueError(f"unknown command {cmd!r}")

    def _criterion(self, posteriors, output_error_type, orthography=None, alignment=None, segment_name=None):
        if not isinstance(posteriors, np.ndarray) or posteriors.dtype != np.float32 or posteriors.ndim != 2:
            raise TypeError("posteriors must be a float32 matrix")
        if posteriors.flags.f_contiguous:
            self.fast_path_inputs += 1
        if orthography is not None and not isinstance(orthography, str):
            raise TypeError(f"callback() argument 3 must be str, not {type(orthography).__name__}")
        if segment_name is not None and not isinstance(segment_name, str):
            raise TypeError("segment_name must be str")
        if output_error_type not in ERROR_TYPES:
            raise ValueError(f"bad output_error_type {output_error_type!r}")
        if segment_name in self.fail:
            raise ValueError(f"criterion failed on {segment_name}")
        if segment_name in self.discard:
            return None, None
        if alignment is not None and orthography is not None:
            raise ValueError("provide either an alignment or the orthography, but not both")
        labels, frames = posteriors.shape
        if alignment is not None:
            if alignment.dtype not in (np.float32, np.float64):
                raise SystemExit("fatal: alignment must be a float vector")  # RASR ends the process here
            targets = alignment.astype(np.int64)
        else:
            targets = alignment_from_orthography(orthography or "", frames, labels)
        values = np.asarray(posteriors).T  # (time, label)
        if output_error_type == "error-signal":
            log_post = values.astype(np.float64)  # input in log space
        else:
            log_post = np.log(np.maximum(values.astype(np.float64), 1e-30))
        loss, err = reference_ce(log_post, targets)
        out = np.empty((labels, frames), dtype=np.float32, order="F")  # RASR's column-major matrix
        out[...] = err.T
        return loss, out


def sprint_init(config: str, callback: Callable, unit: str = "NnTrainer.pythonControl", version: Any = 5):
    return control.init(
        name="Sprint.PythonControl",
        reference=object(),
        config=config,
        sprint_unit=unit,
        version_number=version,
        callback=callback,
    )


def drive_flow_a(config: str, callback: FakeSprintCallback, orthographies: dict, log: list,
                 alignments: Optional[dict] = None) -> None:
    """RASR's NnTrainer with iterate-corpus and the python segment order (alignments: RASR extracts
    them and passes them as uint32 vectors)."""
    ctl = sprint_init(config, callback)
    ctl.init_processing(input_dim=-1, output_dim=-1)
    for name in control.getSegmentList(corpusName="corpus", segmentList=[], config=config, segmentsInfo=None):
        assert isinstance(name, str)
        log.append(name)
        orth = orthographies.get(name)
        ctl.process_segment(name=name, orthography=None if orth is None else orth.encode("utf-8"),
                            speaker_name=None, features=None,
                            alignment=None if alignments is None else alignments[name].astype(np.uint32),
                            soft_alignment=None)
    ctl.exit()


def drive_flow_b(config: str, alignments: dict, log: list, input_dim: int = 3, skip: tuple = (),
                 results: Optional[list] = None) -> None:
    """RASR's segment-wise trainer with a PythonLayer and its own cross-entropy criterion."""
    layer = control.SprintNnPythonLayer(config=config)
    ctl = sprint_init(config, FakeSprintCallback(), unit="SegmentwiseNnTrainer")
    layer.setInputDimension(stream=0, size=input_dim)
    num_labels = None
    for name in control.getSegmentList(corpusName="corpus", segmentList=[], config=config):
        log.append(name)
        ctl.init_segment(segment_name=name)
        frames = len(alignments[name])
        if num_labels is None:
            num_labels = ctl.segments.active.posteriors.shape[1]
            layer.setOutputDimension(size=num_labels)
        features = np.zeros((frames, input_dim), dtype=np.float32).T
        out = layer.forward(input=[features])
        if results is not None:
            results.append(("forward", name, out))
        if name in skip:
            continue  # RASR drops the segment (e.g. a bad lattice): no loss, no error signal
        loss, err = reference_ce(np.asarray(out).T, alignments[name])
        ctl.notify_segment_loss(segment_name=name, loss=loss)
        err_in = np.empty((num_labels, frames), dtype=np.float32, order="F")
        err_in[...] = err.T
        grads = layer.backpropagate(errorSignalIn=err_in)
        if results is not None:
            results.append(("backpropagate", name, err_in, grads))
    ctl.exit()


def drive_control_loop(config: str, callback: FakeSprintCallback) -> None:
    """RASR's NnTrainer with --action=python-control and the default python-control-loop."""
    ctl = sprint_init(config, callback)
    ctl.run_control_loop(callback=callback)
    ctl.exit()
