"""The benchmark tool and the asv suite, run once on tiny sizes: a broken benchmark fails here.

No timing is asserted; what is checked is that every benchmark runs, that the round trips return the
right error signal, and that the figures the tool prints and writes are complete and consistent.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import json
import os
import pkgutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from support import close_fds, extra_reason

from sprint_control.tools import bench, bench_child, bench_cli
from sprint_control.wire import framing
from sprint_control.wire.protocol import ChildLink, ParentLink
from sprint_control.wire.shm import SharedRegion

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_SIZES = [(1, 1), (3, 17)]
#: replacement values for asv parameters, so the whole suite runs in seconds
TINY_PARAMS = {"size": TINY_SIZES}  # other parameters (transport, children, child) run all their values
TINY_ATTRS = {"batch_shape": (5, 3, 7), "rounds": 2, "num_lemmas": 50}


def test_expected_error_signal_is_independent_of_the_child():
    post = np.arange(12, dtype=np.float32).reshape(3, 4)
    want = post.copy()
    want[0] *= -1
    np.testing.assert_array_equal(bench.expected_error_signal(post), want)
    assert bench.derive_error_signal(post) == 3.0
    np.testing.assert_array_equal(post, want)


@pytest.mark.parametrize("shape", [(7, 33), (60, 801)], ids=["inline", "beyond-the-inline-threshold"])
@pytest.mark.parametrize("transport", bench.TRANSPORTS)
def test_round_trip_of_every_transport_returns_the_derived_signal(transport, shape):
    post = bench.make_posteriors(*shape, seed=3)
    with bench.PipePeer(transport) as peer:
        for _ in range(2):
            loss, err = peer.roundtrip(post)
            assert loss == shape[0]
            np.testing.assert_array_equal(err, bench.expected_error_signal(post))
        out = np.zeros(shape, np.float32)
        _, err = peer.roundtrip(post, out=out)
        np.testing.assert_array_equal(out, bench.expected_error_signal(post))
    assert peer.proc.returncode == 0


def test_round_trip_large_enough_for_vmsplice_is_exact():
    """A payload well beyond the pipe buffer goes by vmsplice on the compiled core; the answer must be
    exact, and the sender may overwrite its array right after the call returns."""
    post = bench.make_posteriors(600, 4501, seed=5)  # 10.8 MB
    post[:] = np.random.default_rng(1).standard_normal(post.shape, dtype=np.float32)
    want = bench.expected_error_signal(post)
    core_name = "_framing" if framing.IMPLEMENTATION == "cython" else "_framing_py"
    core = importlib.import_module(f"sprint_control.wire.{core_name}")
    before = getattr(core, "_spliced_bytes", lambda: 0)()
    with bench.PipePeer("v2") as peer:
        for _ in range(3):
            peer.send(post)
            sent = post.copy()
            post[:] = -7.0  # the pipe must not see this: the child has read every spliced page
            _, err = peer.receive(post.shape)
            np.testing.assert_array_equal(err, bench.expected_error_signal(sent))
            post[:] = sent
    np.testing.assert_array_equal(bench.expected_error_signal(post), want)
    if framing.IMPLEMENTATION == "cython":
        assert core._spliced_bytes() > before


def test_pool_fills_the_batch_output():
    post = np.random.default_rng(2).standard_normal((6, 5, 9), dtype=np.float32)
    lengths = [6, 2, 5, 6, 1]
    with bench.PipePool(2) as pool:
        loss, out = pool.run_batch(post, lengths)
    for b, t in enumerate(lengths):
        assert loss[b] == t
        np.testing.assert_array_equal(out[:t, b], bench.expected_error_signal(post[:t, b]))
        assert not out[t:, b].any()


def test_peak_rss_probe_reports_growth_and_arrays():
    res = bench.peak_rss_of_roundtrip(200, 1000)
    assert res["correct"]
    assert res["arrays_bytes"] == 2 * 200 * 1000 * 4
    assert res["growth_bytes"] > 0


def _run_tool(tmp_path, *args):
    out_json = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, "-m", "sprint_control.tools.bench", "--sizes", "1,1", "4,9", "--repeats", "2",
         "--json", str(out_json), "--wide", *args],
        capture_output=True, text=True, timeout=180, cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("|")]
    return table, json.loads(out_json.read_text())


def _check_figures(table, doc, transports):
    assert len(table) == 2 + 2  # head, rule, one row per size
    for t in transports:
        assert f"{t} seg/s" in table[0] and f"{t} GB/s" in table[0]
    for word in ("v2/bare", "v2/v1", "peak RSS MiB", "in+out MiB"):
        assert word in table[0]
    assert table[2].lstrip("| ").startswith("(1, 1)") and "(4, 9)" in table[3]
    assert doc["transports"] == list(transports)
    assert [(r["time"], r["labels"]) for r in doc["rows"]] == [(1, 1), (4, 9)]
    for r in doc["rows"]:
        assert r["bytes_each_way"] == r["time"] * r["labels"] * 4
        for t in transports:
            f = r[t]
            assert f["segments_per_s"] == pytest.approx(1.0 / f["seconds"])
            assert f["gb_per_s"] == pytest.approx(2 * r["bytes_each_way"] / f["seconds"] / 1e9)
        assert r["v2_over_bare"] == pytest.approx(r["v2"]["segments_per_s"] / r["bare"]["segments_per_s"])
        assert r["v2_over_v1"] == pytest.approx(r["v2"]["segments_per_s"] / r["v1"]["segments_per_s"])
        assert r["peak_rss"]["arrays_bytes"] == 2 * r["bytes_each_way"]
        assert r["peak_rss"]["correct"]
        if "shm" in transports:
            assert r["shm_over_v2"] == pytest.approx(r["shm"]["segments_per_s"] / r["v2"]["segments_per_s"])
            assert r["shm-region_over_two_memcpy"] == pytest.approx(r["shm-region"]["seconds"]
                                                                   / r["two_memcpy_seconds"])


def test_bench_tool_on_the_pipe_child(tmp_path):
    table, doc = _run_tool(tmp_path, "--child", "pipe")
    _check_figures(table, doc, ("v2", "v1", "v1c", "bare", "shm", "shm-region"))
    assert doc["child"] == "pipe"
    for r in doc["rows"]:
        assert r["v2_over_v1c"] == pytest.approx(r["v2"]["segments_per_s"] / r["v1c"]["segments_per_s"])


def test_bench_tool_on_the_emulator_by_default(tmp_path):
    table, doc = _run_tool(tmp_path)
    _check_figures(table, doc, ("v2", "v1", "bare", "shm", "shm-region"))
    assert doc["child"] == "emulator" and doc["criterion"] == "bench"
    assert "v1c" not in table[0]


def test_emulator_peer_answers_the_same_on_v1_and_v2():
    post = bench.make_posteriors(6, 11, seed=4)
    with bench.EmulatorPeer("v2", 11) as a, bench.EmulatorPeer("v1", 11) as b:
        loss2, err2 = a.roundtrip(post)
        loss1, err1 = b.roundtrip(post)
    assert err2.shape == (6, 11) and err2.dtype == np.float32
    np.testing.assert_array_equal(err1, err2)
    assert loss1 == pytest.approx(loss2)


def test_bench_tool_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        bench_cli.main(["--sizes", "12"])
    with pytest.raises(SystemExit):
        bench_cli.main(["--child", "emulator", "--transports", "v1c"])


# ---------------------------------------------------------------------------------------------
# The asv suite, run once per benchmark on tiny parameters


def _benchmark_modules():
    sys.path.insert(0, ROOT)
    try:
        pkg = importlib.import_module("benchmarks")
        names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.startswith("bench_")]
        return [importlib.import_module(f"benchmarks.{n}") for n in names]
    finally:
        sys.path.remove(ROOT)


def _benchmarks():
    cases = []
    for mod in _benchmark_modules():
        for cname, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ != mod.__name__:
                continue
            methods = [m for m in dir(cls) if m.startswith(("time_", "peakmem_", "track_"))]
            for m in methods:
                cases.append(pytest.param(cls, m, id=f"{mod.__name__.split('.')[-1]}.{cname}.{m}"))
    return cases


def _param_combos(cls):
    names = getattr(cls, "param_names", [])
    values = getattr(cls, "params", [])
    if not names:
        return [()]
    if len(names) == 1 and values and not isinstance(values[0], list):
        values = [values]
    lists = [TINY_PARAMS.get(n, v) for n, v in zip(names, values)]
    return list(itertools.product(*lists))


def test_the_suite_has_every_kind_of_benchmark():
    ids = [p.id for p in _benchmarks()]
    for prefix in ("time_", "peakmem_", "track_"):
        assert any(f".{prefix}" in i for i in ids), prefix
    for needed in ("RoundTrip.time_roundtrip", "RoundTripRatios.track_v2_over_bare",
                   "RoundTripRatios.track_v2_over_v1", "RoundTripRatios.track_shm_over_v2",
                   "RoundTripRatios.track_shm_region_time_over_two_memcpy", "PoolSpeedup.track_two_over_one",
                   "ParentPeakRss.track_growth_mib", "FrameCodec.time_v2_encode"):
        assert any(i.endswith(needed) for i in ids), needed


@pytest.mark.parametrize("cls,method", _benchmarks())
def test_benchmark_runs_once_on_tiny_sizes(cls, method):
    for combo in _param_combos(cls):
        obj = cls()
        for k, v in TINY_ATTRS.items():
            if hasattr(cls, k):
                setattr(obj, k, v)
        if hasattr(obj, "setup"):
            try:
                obj.setup(*combo)
            except NotImplementedError as e:  # asv's convention: the benchmark does not apply here
                pytest.skip(str(e))
        try:
            result = getattr(obj, method)(*combo)
            if method.startswith("track_"):
                assert isinstance(result, (int, float)) and np.isfinite(result), (method, combo, result)
        finally:
            if hasattr(obj, "teardown"):
                obj.teardown(*combo)


def test_asv_accepts_the_suite():
    """asv itself discovers the suite and finds nothing wrong with its signatures."""
    pytest.importorskip("asv", reason=extra_reason("asv"))
    proc = subprocess.run([sys.executable, "-m", "asv", "check", "--python=same"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No problems found" in proc.stdout, proc.stdout


# ---------------------------------------------------------------------------------------------
# The compiled core's fast paths (vmsplice of large payloads, spin before blocking): exact bytes


def _compiled():
    if framing.IMPLEMENTATION != "cython":
        pytest.skip("the vmsplice path exists in the compiled core only (SPRINT_CONTROL_PURE_PYTHON is set)")
    from sprint_control.wire import _framing

    return _framing


def _reader_thread(fd, results, count):
    def run():
        try:
            for _ in range(count):
                results.append(framing.read_frame(fd, timeout=60))
        except BaseException as exc:  # reported by the test
            results.append(exc)

    import threading

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("layout", ["contiguous", "rows_of_a_batch", "nonblocking_fd"])
def test_spliced_payload_arrives_exactly_even_when_the_sender_overwrites_it_at_once(layout):
    """vmsplice hands the pipe references to the sender's pages; write_frame must return only when
    the peer has read every spliced page, so overwriting the array right after cannot leak through."""
    core = _compiled()
    r, w = os.pipe()
    try:
        core.grow_pipe(w)
        rng = np.random.default_rng(7)
        if layout == "rows_of_a_batch":
            batch = rng.standard_normal((700, 3, 2001), dtype=np.float32)
            arrays = [batch[:, b, :] for b in range(3)]
        else:
            arrays = [rng.standard_normal((700, 2001), dtype=np.float32) for _ in range(3)]
        if layout == "nonblocking_fd":
            os.set_blocking(w, False)
        wanted = [a.copy() for a in arrays]
        results: list = []
        before = core._spliced_bytes()
        t = _reader_thread(r, results, len(arrays))
        for i, a in enumerate(arrays):
            n = core.write_frame(w, 1, f"seg{i}", a, seq=i, timeout=60)
            assert n == 64 + 8 + a.nbytes
            a[...] = -1.0  # the reader must still get the original values
        t.join(60)
        assert not t.is_alive()
        for i, res in enumerate(results):
            assert not isinstance(res, BaseException), res
            header, got = res
            assert header.name == f"seg{i}" and header.seq == i
            np.testing.assert_array_equal(got, wanted[i])
        assert core._spliced_bytes() - before >= sum(a.nbytes for a in arrays) - 3 * (2 << 20)
    finally:
        os.close(r)
        os.close(w)


def test_a_signal_in_the_middle_of_a_spliced_write_keeps_the_stream_intact():
    """EINTR while the payload is being spliced: the handler runs, the write resumes where it stood."""
    import signal
    import threading
    import time as _time

    core = _compiled()
    r, w = os.pipe()
    seen = []
    old = signal.signal(signal.SIGALRM, lambda *a: seen.append("alarm"))
    try:
        core.grow_pipe(w)
        arr = np.arange(3000 * 2001, dtype=np.float32).reshape(3000, 2001)  # 24 MB: many pipe-fulls
        results: list = []

        def slow_reader():
            _time.sleep(0.2)  # the writer blocks on a full pipe meanwhile; the alarm hits it there
            results.append(framing.read_frame(r, timeout=60))

        t = threading.Thread(target=slow_reader, daemon=True)
        t.start()
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        core.write_frame(w, 1, "seg", arr, timeout=60)
        t.join(60)
        header, got = results[0]
        np.testing.assert_array_equal(got, arr)
        assert seen == ["alarm"]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.close(r)
        os.close(w)


def test_splice_and_spin_can_be_switched_off_by_environment():
    _compiled()
    code = (
        "import os, threading, numpy as np\n"
        "from sprint_control.wire import _framing as f\n"
        "r, w = os.pipe(); f.grow_pipe(w)\n"
        "a = np.ones((1000, 2001), np.float32); out = []\n"
        "t = threading.Thread(target=lambda: out.append(f.read_frame(r))); t.start()\n"
        "f.write_frame(w, 1, 's', a); t.join()\n"
        "assert (out[0][1] == a).all()\n"
        "print(f._spliced_bytes())\n"
    )
    env = dict(os.environ, SPRINT_CONTROL_SPLICE="0", SPRINT_CONTROL_SPIN_US="0")
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert off.returncode == 0, off.stderr
    assert int(off.stdout) == 0
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert on.returncode == 0, on.stderr
    assert int(on.stdout) > 0



def test_the_pipe_child_leaves_shared_posteriors_as_they_came_before_it_answers(monkeypatch):
    """Over shared memory the posteriors are the parent's, which may refill them as soon as the
    answer is there: whatever the child changes in them must be undone before it answers."""
    post = bench.make_posteriors(60, 801, seed=4)
    at_answer = []
    real_reply = ChildLink.reply_loss

    def spy(self, *args, **kwargs):
        at_answer.append(np.array(staged))  # the parent's posteriors as the answer goes out
        return real_reply(self, *args, **kwargs)

    monkeypatch.setattr(ChildLink, "reply_loss", spy)
    fds = os.pipe() + os.pipe()
    with SharedRegion.create(1 << 20) as region:
        child = threading.Thread(target=bench_child.child_main, args=(["link", str(fds[0]), str(fds[3])],))
        child.start()
        parent = ParentLink(fds[2], fds[1], timeout=30)
        assert parent.handshake("p", shared=region) == 2 and parent.shm is region
        staged = region.empty(post.shape)
        staged[...] = post
        parent.send_loss_request("s", staged)
        _, err = parent.recv_loss_result(post.shape)
        np.testing.assert_array_equal(err, bench.expected_error_signal(post))
        parent.send_exit()
        child.join(10)
    close_fds(fds)
    np.testing.assert_array_equal(at_answer[0], post)
