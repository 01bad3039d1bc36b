"""``sprint-control bench``: the per-segment round trip measured side by side, in one run.

For each size (time, label) of float32 posteriors this measures, interleaved so that all figures
share the same machine state:

- ``v2``:   the binary frames of protocol v2 (``ParentLink.send_loss_request`` / ``recv_loss_result``);
- ``v1``:   protocol v1 as it is used today: RETURNN's writer (pure-Python pickler, arrays as
            ``make_numpy_ndarray_fromstring``) in both directions, read by our safe v1 reader;
- ``v1c``:  protocol v1 with our own writer (the C pickler), for comparison;
- ``bare``: bare ``os.writev``/``os.readv`` of the same bytes (a v2 header, the name, the array)
            on the same kind of pipes, into buffers allocated once: the floor any protocol pays;
- ``shm``:  protocol v2 over a shared memory region (``shm.py``), with ordinary arrays on the
            parent's side: only descriptors cross the pipe, the matrices are copied through the region;
- ``shm-region``: the same with the parent's posteriors and error-signal buffer allocated in the
            region, as a framework does that writes its batch there (``SprintPool.empty``).

A round trip = the parent sends the posteriors, the child answers with an error signal of the same
shape that it derived from them (it negates the first frame in place, so the figures measure the
transport, not arithmetic), and the parent has that answer as an ndarray. The child is the RASR
emulator (``python -m sprint_control.emulator``) driven through ``SprintSubprocessInstance`` when that
is installed, else the small pipe child of this module (``--pipe-child``).

The command line (``bench_cli.main``), the table and ``--json FILE`` are in ``bench_cli``. The module
also serves the asv suite in ``benchmarks/``.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np

from ..wire import constants as w
from ..wire import framing
from ..wire.protocol import PROTOCOL_V1, PROTOCOL_V2, ParentLink
from ..wire.shm import SharedRegion
from .bench_child import CHILD_TIMEOUT, child_main, derive_error_signal, read_all, write_all

log = logging.getLogger("sprint_control.tools.bench")

__all__ = [
    "SIZES",
    "TRANSPORTS",
    "PipePeer",
    "PipePool",
    "derive_error_signal",
    "expected_error_signal",
    "measure_sizes",
    "peak_rss_of_roundtrip",
]

#: (time, label) float32 sizes of the suite: a tiny one (per-message overhead) and real hybrid setups.
SIZES: tuple[tuple[int, int], ...] = ((1, 1), (100, 4501), (300, 4501), (1000, 9001), (2000, 12001))
#: Transports measured by ``measure_sizes``.
TRANSPORTS: tuple[str, ...] = ("v2", "v1", "v1c", "bare", "shm", "shm-region")
#: The transports that move the matrices through a shared region.
SHM_TRANSPORTS: tuple[str, ...] = ("shm", "shm-region")

_SEG = "bench/seg-0001"
#: the one segment of the emulator's synthetic corpus (the bench criterion needs only the posteriors)
EMULATOR_SEGMENT = "synthetic/rec0000/seg"


# ---------------------------------------------------------------------------------------------
# What the child computes


def expected_error_signal(posteriors: np.ndarray) -> np.ndarray:
    """What ``derive_error_signal`` makes of ``posteriors`` (computed on a copy, for checks)."""
    out = np.array(posteriors, dtype=np.float32, copy=True)
    if out.shape[0]:
        out[0] = -out[0]
    return out


def make_posteriors(time_: int, labels: int, seed: int = 0) -> np.ndarray:
    """A (time, label) float32 matrix with every page touched (random first frames, then a ramp)."""
    rng = np.random.default_rng(seed)
    arr = np.empty((time_, labels), dtype=np.float32)
    arr[: min(time_, 4)] = rng.standard_normal((min(time_, 4), labels), dtype=np.float32)
    if time_ > 4:
        arr[4:] = np.arange(labels, dtype=np.float32)[None, :] * np.float32(1e-3)
    return arr


# ---------------------------------------------------------------------------------------------
# The parent's end


class _Peer:
    """What both kinds of bench child share: the round trip over their ``send`` and ``receive``, the
    shared region of the shm transports (released with the peer) and use as a context manager."""

    transport: str
    region: Optional[SharedRegion] = None

    def send(self, posteriors: np.ndarray, seg_name: str = "", out: Optional[np.ndarray] = None) -> None:
        raise NotImplementedError

    def receive(self, shape: tuple[int, int], out: Optional[np.ndarray] = None) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _release_region(self) -> None:
        self._staged = _Staged(None)
        if self.region is not None:
            self.region.close()

    def roundtrip(self, posteriors: np.ndarray, out: Optional[np.ndarray] = None) -> tuple[float, np.ndarray]:
        """One segment: send the posteriors, have the error signal back."""
        if self.transport == "shm-region":
            posteriors, staged_out = self._staged.get(posteriors)
            out = staged_out if out is None else out
        self.send(posteriors, out=out)
        return self.receive(posteriors.shape, out=out)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PipePeer(_Peer):
    """One pipe child and the parent's end of its two pipes.

    ``transport``: "v2", "v1" (RETURNN's writer both ways), "v1c" (our C-pickler writer) or "bare".
    ``env``: extra environment variables for the child.
    """

    def __init__(self, transport: str = "v2", timeout: float = CHILD_TIMEOUT, env: Optional[dict] = None):
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r}: expected one of {TRANSPORTS}")
        self.transport = transport
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        mode = "bare" if transport == "bare" else "link"
        v1_writer = "returnn" if transport == "v1" else "c"
        cmd = [sys.executable, "-m", "sprint_control.tools.bench", "--pipe-child", mode, str(p2c_r), str(c2p_w),
               v1_writer]
        self.region = _new_region(transport)
        region_fds = (self.region.fd,) if self.region is not None else ()
        try:
            child_env = dict(os.environ, **env) if env else None
            self.proc = subprocess.Popen(cmd, pass_fds=(p2c_r, c2p_w) + region_fds, close_fds=True, env=child_env)
        finally:
            os.close(p2c_r)
            os.close(c2p_w)
        self._staged = _Staged(self.region)
        self.read_fd, self.write_fd = c2p_r, p2c_w
        self.link: Optional[ParentLink] = None
        self._bare_head = bytearray(w.HEADER_SIZE)
        self._bare_skip = bytearray(0)
        try:
            if transport == "bare":
                framing.grow_pipe(self.read_fd)
                framing.grow_pipe(self.write_fd)
            else:
                self.link = ParentLink(self.read_fd, self.write_fd, timeout=timeout,
                                       returnn_style=transport == "v1")
                wanted = PROTOCOL_V1 if transport in ("v1", "v1c") else PROTOCOL_V2
                got = self.link.handshake("sprint_control.tools.bench", protocol=wanted, shared=self.region)
                if got != wanted:
                    raise RuntimeError(f"negotiated protocol {got}, wanted {wanted}")
                if self.region is not None and self.link.shm is None:
                    raise RuntimeError("the child did not map the shared region")
        except BaseException:
            self.close()
            raise

    def send(self, posteriors: np.ndarray, seg_name: str = _SEG, out: Optional[np.ndarray] = None) -> None:
        """Sends one loss request (the posteriors go out uncopied on v2 and bare)."""
        if self.transport == "bare":
            name_b = seg_name.encode("utf-8")
            pad = w.name_padding(len(name_b))
            shape = tuple(posteriors.shape) + (0,) * (w.MAX_NDIM - posteriors.ndim)
            head = w.HEADER_STRUCT.pack(w.MAGIC, w.VERSION, w.MSG_LOSS_REQUEST, 1, posteriors.ndim, 0,
                                        len(name_b), posteriors.nbytes, 0.0, 0, *shape)
            bufs: list[Any] = [head, name_b + bytes(pad)]
            if posteriors.flags.c_contiguous:
                bufs.append(posteriors)
            else:
                bufs.extend(posteriors)  # rows of a strided slice, as v2 does
            write_all(self.write_fd, bufs)
        else:  # "v1" writes as RETURNN does: the link was made with returnn_style
            assert self.link is not None
            self.link.send_loss_request(seg_name, posteriors, out=out)

    def receive(self, shape: tuple[int, int], out: Optional[np.ndarray] = None) -> tuple[float, np.ndarray]:
        """Reads the answer to ``send``: (loss, error signal). ``out``: where it lands (else a fresh array)."""
        if self.transport == "bare":
            if out is None:
                out = np.empty(shape, dtype=np.float32)
            if not read_all(self.read_fd, [self._bare_head]):
                raise EOFError("the bench child closed its pipe")
            fields = w.HEADER_STRUCT.unpack(self._bare_head)
            skip = fields[6] + w.name_padding(fields[6])
            if len(self._bare_skip) != skip:
                self._bare_skip = bytearray(skip)
            bufs = [self._bare_skip] + ([out] if out.flags.c_contiguous else list(out))
            read_all(self.read_fd, bufs)
            return float(shape[0]), out
        assert self.link is not None
        return self.link.recv_loss_result(shape, out=out)

    def close(self) -> None:
        """Ends the child (exit message, then EOF) and reaps it; idempotent."""
        if self.link is not None and self.proc.poll() is None:
            try:
                self.link.send_exit()
            except OSError:
                pass
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.read_fd = self.write_fd = -1
        self.link = None
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._release_region()


class EmulatorPeer(_Peer):
    """The RASR emulator as the child, driven like a user would: ``SprintSubprocessInstance`` with the
    Sprint-side module ``sprint_control.control`` inside ``python -m sprint_control.emulator``.

    ``transport``: "v2" or "v1" (the package's own v1 on both ends). The emulator computes
    ``criterion`` (default ``bench``: its cheap cross-entropy against the frame-wise argmax) over
    ``labels`` labels, so a round trip here includes that arithmetic and the module's work.
    """

    def __init__(self, transport: str = "v2", labels: int = 1, criterion: str = "bench",
                 timeout: float = CHILD_TIMEOUT):
        from ..parent import SprintSubprocessInstance, emulator_command

        if transport not in ("v2", "v1") + SHM_TRANSPORTS:
            raise ValueError(f"the emulator child speaks v2, v1, shm or shm-region, not {transport!r}")
        self.transport = transport
        self.labels = labels
        self.region = _new_region(transport)
        self._staged = _Staged(self.region)
        args = [f"--*.training-criterion={criterion}", f"--*.corpus.num-labels={labels}",
                "--*.corpus.synthetic=1", "--*.corpus.max-frames=20", "--*.corpus.min-frames=1"]
        self.inst = SprintSubprocessInstance(
            emulator_command(), sprintConfigStr=args, protocol=PROTOCOL_V1 if transport == "v1" else PROTOCOL_V2,
            timeout=timeout, name="sprint_control.tools.bench", shared_region=self.region,
        )
        want = PROTOCOL_V1 if transport == "v1" else PROTOCOL_V2
        if self.inst.protocol != want or (self.region is not None and not self.inst.uses_shared_memory):
            self.close()
            raise RuntimeError(f"the emulator negotiated protocol {self.inst.protocol} (shared memory:"
                               f" {self.inst.uses_shared_memory}), wanted {transport}")

    def send(self, posteriors: np.ndarray, seg_name: str = EMULATOR_SEGMENT, out: Optional[np.ndarray] = None
             ) -> None:
        self.inst.get_loss_and_error_signal__send(seg_name, posteriors.shape[0], posteriors, out=out)

    def receive(self, shape: tuple[int, int], out: Optional[np.ndarray] = None) -> tuple[float, np.ndarray]:
        _, loss, err = self.inst.get_loss_and_error_signal__read(out=out)
        return loss, err

    def close(self) -> None:
        self.inst.close()
        self._release_region()


def _new_region(transport: str) -> Optional[SharedRegion]:
    """A region for the shared-memory transports, as a user gets it (the default size): matrices
    below its ``inline_below`` threshold (``shm.DEFAULT_INLINE_BELOW``) still travel inline through the pipe."""
    if transport not in SHM_TRANSPORTS:
        return None
    return SharedRegion.create()


def two_memcpy_seconds(posteriors: np.ndarray, rounds: int = 5) -> float:
    """Median time of two plain copies of the matrix (the floor of a round trip through memory that
    both ends share: one copy each way)."""
    a = np.empty_like(posteriors)
    b = np.empty_like(posteriors)
    np.copyto(a, posteriors)
    np.copyto(b, a)  # first touch of both buffers outside the timing
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        np.copyto(a, posteriors)
        np.copyto(b, a)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class _Staged:
    """For ``shm-region``: the posteriors as a framework would have them, already in the region,
    with the error-signal buffer beside them. Staged once per source array, outside the timing."""

    def __init__(self, region: Optional[SharedRegion]):
        self.region = region
        self.source: Optional[np.ndarray] = None
        self.arrays: tuple = ()

    def get(self, posteriors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.source is not posteriors:
            assert self.region is not None
            staged = self.region.empty(posteriors.shape)
            np.copyto(staged, posteriors)
            self.arrays = (staged, self.region.empty(posteriors.shape))
            self.source = posteriors
        return self.arrays


class PipePool:
    """``n`` v2 pipe children sharing a (time, batch, label) batch, longest sequences first.

    The parent sends to every free child, then collects answers in the order they were sent, straight
    into the batch output (row-strided views: no copy on either side of the pipe).
    """

    def __init__(self, n: int, transport: str = "v2"):
        self.peers: list[PipePeer] = []
        try:
            for _ in range(n):
                self.peers.append(PipePeer(transport))
        except BaseException:
            self.close()
            raise

    def run_batch(self, posteriors: np.ndarray, seq_lengths: Sequence[int],
                  out: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """(loss (batch,), error signal (time, batch, label)) for one batch."""
        batch = posteriors.shape[1]
        if out is None:
            out = np.zeros_like(posteriors)
        loss = np.zeros(batch, dtype=np.float32)
        order = sorted(range(batch), key=lambda b: -int(seq_lengths[b]))
        pending: list[tuple[PipePeer, int]] = []
        free = list(self.peers)
        while order or pending:
            while order and free:
                peer = free.pop(0)
                b = order.pop(0)
                peer.send(posteriors[: seq_lengths[b], b, :])
                pending.append((peer, b))
            peer, b = pending.pop(0)
            t = int(seq_lengths[b])
            loss[b], _ = peer.receive((t, posteriors.shape[2]), out=out[:t, b, :])
            free.append(peer)
        return loss, out

    def close(self) -> None:
        for p in self.peers:
            p.close()
        self.peers = []

    def __enter__(self) -> PipePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Measuring


_BLOCK_SECONDS = 0.004


def _guess_seconds(nbytes: int) -> float:
    """A rough guess of the fastest round trip (v2 on an idle machine) of nbytes each way."""
    return max(2 * nbytes / 4e9, 25e-6)


def _repeats_for(nbytes: int, budget: float) -> int:
    """How many rounds fit a time budget, from a rough 0.5 GB/s guess for the slowest transport."""
    guess = max(2 * nbytes / 0.5e9, 300e-6)
    block = max(1, min(200, int(_BLOCK_SECONDS / _guess_seconds(nbytes))))
    return int(min(max(budget / (guess * block), 3), 2000))


#: Children ``measure_sizes`` can run against.
CHILDREN: tuple[str, ...] = ("emulator", "pipe")
#: Transports each child speaks ("bare" always runs on the pipe child: it has no protocol).
CHILD_TRANSPORTS = {"pipe": TRANSPORTS, "emulator": ("v2", "v1", "bare") + SHM_TRANSPORTS}


def _new_peer(transport: str, child: str, labels: int, criterion: str):
    if child == "emulator" and transport != "bare":
        return EmulatorPeer(transport, labels, criterion)
    return PipePeer(transport)


def measure_sizes(sizes: Sequence[tuple[int, int]] = SIZES, transports: Sequence[str] = TRANSPORTS,
                  budget: float = 1.0, repeats: Optional[int] = None, check: bool = True,
                  peers: Optional[dict] = None, child: str = "pipe", criterion: str = "bench",
                  progress: Optional[Callable[[int, int, tuple[int, int]], None]] = None) -> list[dict]:
    """Round trips of every transport at every size, interleaved; one dict of figures per size.

    Each round is one block of back-to-back round trips per transport in turn, so a slow moment of
    a shared machine hits all of them alike; the figure is the median over rounds of the mean round
    trip in a block. ``check`` compares every answer with the expected
    one (pipe child), or the v2 answer with the v1 answer (emulator: both ran the same criterion).
    ``peers`` (transport -> pipe peer) lets a caller reuse children across calls. ``progress(i, n,
    (time, labels))`` is called before the i-th of n sizes is measured (i from 0).

    With ``shm-region`` a row also has ``two_memcpy_seconds``, the ratio ``shm-region_over_two_memcpy``
    and ``shm_inline``: true where the matrices are below the region's ``inline_below`` and so travel
    through the pipe, not the region (the ratio then compares a pipe round trip with two tiny copies).
    """
    if child not in CHILDREN:
        raise ValueError(f"unknown child {child!r}: expected one of {CHILDREN}")
    if repeats is not None and repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    bad = [t for t in transports if t not in CHILD_TRANSPORTS[child]]
    if bad:
        raise ValueError(f"the {child} child does not speak {bad}: choose from {CHILD_TRANSPORTS[child]}")
    shared = peers if peers is not None else {}
    per_size: list = []  # emulator peers: one per label count, closed after their size
    rows = []
    try:
        for i, (time_, labels) in enumerate(sizes):
            if progress is not None:
                progress(i, len(sizes), (time_, labels))
            current = {}
            for t in transports:
                if child == "emulator" and t != "bare":
                    current[t] = _new_peer(t, child, labels, criterion)
                    per_size.append(current[t])
                else:
                    if t not in shared:
                        shared[t] = PipePeer(t)
                    current[t] = shared[t]
            post = make_posteriors(time_, labels)
            nbytes = post.nbytes
            n = repeats if repeats is not None else _repeats_for(nbytes, budget)
            expected = expected_error_signal(post) if check else None
            answers: dict[str, np.ndarray] = {}
            for t in transports:  # warm-up: first-touch costs of the pipes and the child's buffers
                _, answers[t] = current[t].roundtrip(post)
                if (check and not isinstance(current[t], EmulatorPeer)
                        and not np.array_equal(answers[t], expected)):  # type: ignore[arg-type]
                    raise AssertionError(f"{t}: wrong error signal at size {(time_, labels)}")
            if check and child == "emulator" and "v2" in answers and "v1" in answers:
                if not np.array_equal(answers["v2"], answers["v1"]):
                    raise AssertionError(f"v2 and v1 answers differ at size {(time_, labels)}")
            del answers
            # Blocks of back-to-back round trips (a stream of segments, as in training), the
            # transports taking turns block by block; a block lasts a few milliseconds at least.
            block = max(1, min(200, int(_BLOCK_SECONDS / _guess_seconds(nbytes))))
            times: dict[str, list[float]] = {t: [] for t in transports}
            for _ in range(n):
                for t in transports:
                    peer = current[t]
                    t0 = time.perf_counter()
                    for _ in range(block):
                        peer.roundtrip(post)
                    times[t].append((time.perf_counter() - t0) / block)
            row: dict[str, Any] = {"time": time_, "labels": labels, "bytes_each_way": nbytes, "rounds": n,
                                   "block": block}
            for t in transports:
                med = statistics.median(times[t])
                row[t] = {"seconds": med, "segments_per_s": 1.0 / med, "gb_per_s": 2 * nbytes / med / 1e9}
            for other in ("bare", "v1", "v1c"):
                if "v2" in row and other in row:
                    row[f"v2_over_{other}"] = row["v2"]["segments_per_s"] / row[other]["segments_per_s"]
            for t in SHM_TRANSPORTS:
                if "v2" in row and t in row:
                    row[f"{t}_over_v2"] = row[t]["segments_per_s"] / row["v2"]["segments_per_s"]
            if "shm-region" in row:
                row["two_memcpy_seconds"] = two_memcpy_seconds(post)
                row["shm-region_over_two_memcpy"] = row["shm-region"]["seconds"] / row["two_memcpy_seconds"]
                row["shm_inline"] = nbytes < current["shm-region"].region.inline_below
            rows.append(row)
            log.info("measured %s", row)
            for p in per_size:
                p.close()
            per_size = []
    finally:
        for p in per_size:
            p.close()
        if peers is None:
            for p in shared.values():
                p.close()
    return rows


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def rss_probe(argv: Sequence[str]) -> int:
    """In a fresh process: the parent's peak RSS over one round trip, above its idle state."""
    transport, time_, labels = argv[0], int(argv[1]), int(argv[2])
    child = argv[3] if len(argv) > 3 else "pipe"
    peer = _new_peer(transport, child, labels, "bench")
    with peer:
        peer.roundtrip(make_posteriors(1, labels))  # imports and first calls done before the baseline
        base = _status_kib("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            reset = True
        except OSError:
            reset = False
        post = make_posteriors(time_, labels)
        _, err = peer.roundtrip(post)
        peak = _status_kib("VmHWM")
        if child == "pipe":
            ok = bool(np.array_equal(err, expected_error_signal(post)))
        else:
            ok = err.shape == post.shape and err.dtype == np.float32 and bool(np.isfinite(err).all())
    print(json.dumps({"transport": transport, "time": time_, "labels": labels, "base_kib": base,
                      "peak_kib": peak, "hwm_reset": reset, "arrays_bytes": post.nbytes + err.nbytes,
                      "correct": ok}))
    return 0


def peak_rss_of_roundtrip(time_: int, labels: int, transport: str = "v2", child: str = "pipe") -> dict:
    """Runs one round trip in a fresh process; returns its peak RSS growth (bytes) and the array bytes.

    ``growth_bytes`` = peak RSS during the round trip minus the RSS before the posteriors existed;
    ``arrays_bytes`` = input + output array bytes, what the growth cannot avoid.
    """
    out = subprocess.run([sys.executable, "-m", "sprint_control.tools.bench", "--rss-probe", transport, str(time_),
                          str(labels), child], capture_output=True, text=True, timeout=300, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"rss probe failed ({out.returncode}): {out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["growth_bytes"] = (res["peak_kib"] - res["base_kib"]) * 1024
    res["overhead_bytes"] = res["growth_bytes"] - res["arrays_bytes"]
    return res


if __name__ == "__main__":
    # ``python -m sprint_control.tools.bench``: the child modes run here, the command line is bench_cli's
    # (loaded by name: the module that bench_cli imports never imports it back)
    if sys.argv[1:2] == ["--pipe-child"]:
        sys.exit(child_main(sys.argv[2:]))
    if sys.argv[1:2] == ["--rss-probe"]:
        sys.exit(rss_probe(sys.argv[2:]))
    import runpy

    runpy.run_module("sprint_control.tools.bench_cli", run_name="__main__", alter_sys=True)
