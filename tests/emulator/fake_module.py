"""A scripted stand-in for the Python module RASR loads: records every call RASR makes (with the
types of its arguments) as JSON lines and drives the callback like the real module does.

Behaviour comes from the config string (``key:value`` pairs joined by ``,``):
``record:<path>`` where to append the JSON lines; ``order:<corpus|reverse|first2|unknown|bytes|ints|raise>``
what getSegmentList yields; ``init:<ok|none|raise>``; ``loop:<commands|raise>``;
``layer:<ok|bad_trainable|bad_forward|bad_backprop|raise_forward>``; ``criterion_out:<type>``
the output_error_type process_segment asks for; ``space:<log|prob>`` what flow B's forward returns.
"""

from __future__ import annotations

import json
import os

import numpy as np

_config: dict = {}
_instance = None


def _parse(config: str) -> dict:
    out = {}
    for part in config.split(","):
        if part:
            k, _, v = part.partition(":")
            out[k] = v
    return out


def _desc(v):
    if isinstance(v, np.ndarray):
        return {
            "type": "ndarray",
            "dtype": str(v.dtype),
            "shape": list(v.shape),
            "f_contiguous": bool(v.flags.f_contiguous),
            "c_contiguous": bool(v.flags.c_contiguous),
        }
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, bytes):
        return {"type": "bytes", "value": v.decode("utf-8")}
    if isinstance(v, (list, tuple)):
        return {"type": type(v).__name__, "items": [_desc(x) for x in v]}
    if isinstance(v, dict):
        return {"type": "dict", "len": len(v), "sample": _desc(next(iter(v.items()))) if v else None}
    return {"type": type(v).__name__, "repr": repr(v)}


def record(event: str, **fields):
    path = _config.get("record")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n")


class Control:
    def __init__(self, callback):
        self.callback = callback
        self.pending = []

    def run_control_loop(self, callback, **kwargs):
        record(
            "run_control_loop", callback=_desc(callback), same_callback=callback is self.callback, extra=list(kwargs)
        )
        if _config.get("loop") == "raise":
            raise RuntimeError("control loop failed on purpose")
        cb = callback
        res = {"version_number": cb("version_number"), "help": cb("help")[:20], "version": cb("version")[:9]}
        res["init_criterion"] = cb("init_criterion")
        errors = {}
        for name, call in [
            ("unknown", lambda: cb("no_such_command")),
            ("bytes_orth", lambda: cb("export_allophone_state_fsa_by_orthography", orthography=b"ab")),
            ("unknown_seg", lambda: cb("get_orthography_by_segment_name", segment_name="nope")),
            ("no_cmd", lambda: cb()),
        ]:
            try:
                call()
                errors[name] = None
            except Exception as exc:  # noqa: BLE001 - recording the type is the point
                errors[name] = type(exc).__name__
        res["errors"] = errors
        seg = _config.get("seg")
        if seg:
            res["orth"] = cb("get_orthography_by_segment_name", segment_name=seg)
            n, e, edges, w = cb("export_allophone_state_fsa_by_segment_name", segment_name=seg)
            res["fsa"] = [n, e, _desc(edges), _desc(w)]
        record("control_loop_results", **res)

    def init_processing(self, **kwargs):
        record("init_processing", **{k: _desc(v) for k, v in kwargs.items()})

    def process_segment(self, **kwargs):
        record("process_segment", **{k: _desc(v) for k, v in kwargs.items()})
        out_type = _config.get("criterion_out", "error-signal")
        feats = kwargs["features"]
        T = feats.shape[1]
        L = int(_config.get("labels", "11"))
        rng = np.random.default_rng(T)
        a = rng.standard_normal((T, L))
        logp = (a - np.log(np.exp(a).sum(1, keepdims=True))).astype(np.float32)
        post = logp if out_type in ("error-signal", "none") else np.exp(logp)
        loss, err = self.callback(
            "calculate_criterion",
            posteriors=post.T,
            orthography=kwargs["orthography"].decode("utf-8"),
            output_error_type=out_type,
            segment_name=kwargs["name"],
        )
        record("criterion", name=kwargs["name"], loss=loss, error_signal=_desc(err))

    def init_segment(self, **kwargs):
        record("init_segment", **{k: _desc(v) for k, v in kwargs.items()})

    def notify_segment_loss(self, **kwargs):
        record("notify_segment_loss", **{k: _desc(v) for k, v in kwargs.items()})

    def exit(self, **kwargs):
        record("exit", extra=list(kwargs))


def init(**kwargs):
    global _config, _instance
    _config = _parse(kwargs.get("config", ""))
    record("init", **{k: _desc(v) for k, v in kwargs.items()}, keys=sorted(kwargs))
    mode = _config.get("init", "ok")
    if mode == "raise":
        raise RuntimeError("init failed on purpose")
    if mode == "none":
        return None
    if _instance is None:
        _instance = Control(kwargs.get("callback"))
    return _instance


def getSegmentList(corpusName, segmentList, config, **kwargs):
    global _config
    if not _config:
        _config = _parse(config)
    record(
        "getSegmentList",
        corpusName=corpusName,
        segmentList=_desc(segmentList),
        config=config,
        segmentsInfo=_desc(kwargs.get("segmentsInfo")),
        extra=sorted(kwargs),
    )
    order = _config.get("order", "corpus")
    names = list(segmentList)
    if order == "reverse":
        names = names[::-1]
    elif order == "first2":
        names = names[:2]
    elif order == "unknown":
        names = ["not/a/segment"] + names[:1]
    elif order == "bytes":
        names = [n.encode("utf-8") for n in names[:2]]
    elif order == "ints":
        names = names[:1] + [7]
    elif order == "raise":
        yield names[0]
        raise RuntimeError("segment list failed on purpose")
    for n in names:
        record("yield", name=n.decode("utf-8") if isinstance(n, bytes) else n)
        yield n


class SprintNnPythonLayer:
    def __init__(self, config, **kwargs):
        global _config
        if not _config:
            _config = _parse(config)
        record("layer_init", config=config, extra=sorted(kwargs))
        self.mode = _config.get("layer", "ok")
        self.in_dim = self.out_dim = None
        self.W = None

    def setInputDimension(self, stream, size):
        record("setInputDimension", stream=stream, size=size)
        self.in_dim = size

    def setOutputDimension(self, size):
        record("setOutputDimension", size=size)
        self.out_dim = size

    def initializeNetworkParameters(self):
        record("initializeNetworkParameters")
        self.W = np.random.default_rng(0).standard_normal((self.out_dim, self.in_dim)) * 0.1

    def isTrainable(self):
        record("isTrainable")
        return 1 if self.mode == "bad_trainable" else True

    def getNumberOfFreeParameters(self):
        record("getNumberOfFreeParameters")
        return int(self.W.size)

    def forward(self, input):
        record("forward", input=_desc(input))
        if self.mode == "raise_forward":
            raise ValueError("forward failed on purpose")
        x = input[0]
        a = self.W @ x  # (L, T)
        logp = a - np.log(np.exp(a).sum(0, keepdims=True))
        out = logp if _config.get("space", "log") == "log" else np.exp(logp)
        if self.mode == "bad_forward":
            return out  # float64: RASR refuses it
        return np.asfortranarray(out, dtype=np.float32)

    def backpropagate(self, errorSignalIn):
        record("backpropagate", errorSignalIn=_desc(errorSignalIn), sum=float(np.sum(errorSignalIn)))
        if self.mode == "bad_backprop":
            return [np.zeros((self.in_dim, errorSignalIn.shape[1]), np.float32)]
        return (np.zeros((self.in_dim, errorSignalIn.shape[1]), np.float32, order="F"),)

    def finalize(self):
        record("finalize")
