"""End to end through real pipes: the RASR emulator (a separate process) loads our module, the test is
the parent. Flows A, B and RASR's control loop, on both protocols; expected values come from the
emulator's criteria computed in this process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from control_fakes import random_log_posteriors

from sprint_control.emulator import corpus as emu_corpus
from sprint_control.emulator import criteria
from sprint_control.errors import SprintRemoteError
from sprint_control.wire import protocol

REPO = Path(__file__).resolve().parents[2]
N_SEGMENTS = 5
SEED = 3
CORPUS_OPTS = {"min-frames": 8, "max-frames": 40}


def emulator_corpus():
    return emu_corpus.synthetic_corpus(N_SEGMENTS, seed=SEED, min_frames=CORPUS_OPTS["min-frames"],
                                       max_frames=CORPUS_OPTS["max-frames"])


class Emulator:
    """One emulator child with our module on the other end of a pair of pipes."""

    def __init__(self, *options: str, module_config: str = "", segment_order: bool = True,
                 corpus_args: tuple = (), extra_fds: tuple = ()):
        c2p_r, c2p_w = os.pipe()
        p2c_r, p2c_w = os.pipe()
        config = f"c2p_fd:{c2p_w},p2c_fd:{p2c_r},minPythonControlVersion:2{module_config}"
        args = [
            sys.executable, "-m", "sprint_control.emulator",
            "--*.python-control-enabled=true",
            f"--*.pymod-path={REPO}",
            "--*.pymod-name=sprint_control",
            f"--*.pymod-config={config}",
        ]
        if segment_order:
            args += [
                "--*.python-segment-order=true",
                f"--*.python-segment-order-pymod-path={REPO}",
                "--*.python-segment-order-pymod-name=sprint_control",
                f"--*.python-segment-order-config={config}",
                "--*.python-segment-order-allow-copy=false",
            ]
        args += list(corpus_args) or [
            f"--*.corpus.synthetic={N_SEGMENTS}", f"--*.corpus.seed={SEED}",
            f"--*.corpus.min-frames={CORPUS_OPTS['min-frames']}", f"--*.corpus.max-frames={CORPUS_OPTS['max-frames']}",
        ]
        args += list(options)
        try:
            self.proc = subprocess.Popen(args, pass_fds=(c2p_w, p2c_r, *extra_fds), close_fds=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        finally:
            os.close(c2p_w)
            os.close(p2c_r)
        self.link = protocol.Link(c2p_r, p2c_w, timeout=60.0)

    def finish(self) -> tuple[str, str]:
        return self.proc.communicate(timeout=60)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)
        self.link.close()


@pytest.fixture
def emulators():
    started: list[Emulator] = []

    def start(*options, **kwargs) -> Emulator:
        emu = Emulator(*options, **kwargs)
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.kill()


def expected(criterion: str, log_post: np.ndarray, seg) -> tuple[float, np.ndarray]:
    if criterion == "cross-entropy":
        loss, err = criteria.compute_criterion(criterion, log_post, alignment=seg.alignment)
    else:
        loss, err = criteria.compute_criterion(criterion, log_post, orthography=seg.orthography)
    if loss is None:  # discarded: the module answers loss inf and a zero error signal
        return float("inf"), np.zeros_like(log_post)
    return loss, err


def drive_segments(emu: Emulator, proto: int, criterion: str, seed: int = 0, corpus=None, shared=None) -> list:
    assert emu.link.handshake(protocol=proto, shared=shared) == proto
    assert (emu.link.shm is not None) == (shared is not None)
    rng = np.random.default_rng(seed)
    labels = criteria.num_labels(criterion)
    results = []
    for seg in (corpus or emulator_corpus()).segments:
        post = random_log_posteriors(rng, seg.num_frames, labels)
        emu.link.send_loss_request(seg.name, post)
        loss, err = emu.link.recv_loss_result(post.shape)
        exp_loss, exp_err = expected(criterion, post, seg)
        if np.isinf(exp_loss):
            assert loss == float("inf") and not err.any(), seg.name
        else:
            assert loss == pytest.approx(exp_loss, rel=1e-4), seg.name
            np.testing.assert_allclose(err, exp_err, atol=1e-4)
        results.append((seg.name, loss, exp_loss))
    emu.link.send_exit()
    return results


@pytest.mark.parametrize("proto", [1, 2])
def test_flow_a_iterate_corpus(emulators, proto):
    emu = emulators("--*.action=python-control", "--*.python-control-loop-type=iterate-corpus",
                    "--*.training-criterion=ctc")
    drive_segments(emu, proto, "ctc")
    out, err = emu.finish()
    assert emu.proc.returncode == 0, err
    assert f"processed {N_SEGMENTS} segments" in err


@pytest.mark.parametrize("proto", [1, 2])
def test_flow_a_cross_entropy_with_extracted_alignments(emulators, proto):
    # RASR's cross-entropy gives only the error signal before the softmax: the module exponentiates.
    emu = emulators("--*.action=python-control", "--*.python-control-loop-type=iterate-corpus",
                    "--*.training-criterion=cross-entropy", "--*.extract-alignments=true",
                    module_config=",sprintInputInLogSpace:false")
    drive_segments(emu, proto, "cross-entropy", seed=1)
    out, err = emu.finish()
    assert emu.proc.returncode == 0, err


@pytest.mark.parametrize("proto", [1, 2])
def test_flow_b_python_layer(emulators, proto):
    emu = emulators("--*.action=supervised-segmentwise-training", "--*.training-criterion=ctc",
                    "--*.input-in-log-space=true")
    drive_segments(emu, proto, "ctc", seed=2)
    out, err = emu.finish()
    assert emu.proc.returncode == 0, err
    assert f"trained on {N_SEGMENTS} segments" in err


@pytest.mark.parametrize("proto", [1, 2])
def test_flow_b_cross_entropy_probabilities(emulators, proto):
    emu = emulators("--*.action=supervised-segmentwise-training", "--*.training-criterion=cross-entropy",
                    "--*.input-in-log-space=false", module_config=",sprintInputInLogSpace:false")
    drive_segments(emu, proto, "cross-entropy", seed=3)
    out, err = emu.finish()
    assert emu.proc.returncode == 0, err


@pytest.mark.parametrize("proto", [1, 2])
def test_rasr_control_loop_automata_and_losses(emulators, proto):
    emu = emulators("--*.action=python-control", "--*.python-control-loop-type=python-control-loop",
                    "--*.training-criterion=ctc")
    assert emu.link.handshake(protocol=proto) == proto
    corpus = emulator_corpus()
    for seg in corpus.segments:
        ns, ne, edges, weights = emu.link.request_fsa(seg.name)
        ens, ene, eedges, eweights = criteria.automaton("ctc", seg.orthography).export()
        assert (ns, ne) == (ens, ene)
        np.testing.assert_array_equal(edges, eedges)
        np.testing.assert_array_equal(weights, eweights)
    with pytest.raises(SprintRemoteError, match="unknown segment name"):
        emu.link.request_fsa("no/such/segment")
    # loss requests in RASR's own control loop: the orthography comes from RASR's corpus
    rng = np.random.default_rng(4)
    seg = corpus.segments[0]
    post = random_log_posteriors(rng, seg.num_frames, criteria.num_labels("ctc"))
    emu.link.send_loss_request(seg.name, post)
    loss, err = emu.link.recv_loss_result(post.shape)
    exp_loss, exp_err = expected("ctc", post, seg)
    assert loss == pytest.approx(exp_loss, rel=1e-4)
    np.testing.assert_allclose(err, exp_err, atol=1e-4)
    emu.link.send_exit()
    out, err = emu.finish()
    assert emu.proc.returncode == 0, err


@pytest.mark.parametrize("proto", [1, 2])
@pytest.mark.parametrize("flow", ["A", "B"])
def test_discarded_segments_are_skipped(emulators, tmp_path, proto, flow):
    """A segment too short for its orthography has no CTC path: the criterion discards it (flow A) or
    RASR's trainer drops it without an error signal (flow B); either way the parent gets inf and zeros."""
    path = tmp_path / "corpus.txt"
    path.write_text("c/1\t12\tabc\nc/ü-short\t2\tabcdef\nc/3\t9\tja\n", encoding="utf-8")
    corpus = emu_corpus.load_corpus(str(path))
    if flow == "A":
        options = ("--*.action=python-control", "--*.python-control-loop-type=iterate-corpus")
    else:
        options = ("--*.action=supervised-segmentwise-training",)
    emu = emulators(*options, "--*.training-criterion=ctc", corpus_args=(f"--*.corpus.file={path}",))
    results = drive_segments(emu, proto, "ctc", seed=6, corpus=corpus)
    assert [np.isinf(loss) for _, loss, _ in results] == [False, True, False]
    out, err = emu.finish()
    assert emu.proc.returncode == 0, err
    assert "'c/ü-short' skipped" in out
    if flow == "B":
        assert "backpropagate" in out  # the log says which step never happened


@pytest.mark.parametrize("flow", ["A", "B", "loop"])
def test_shared_memory_transport(emulators, flow):
    """Protocol v2 with its shared-memory option: posteriors and error signal go through a memfd region."""
    from sprint_control.wire import shm
    if not shm.available():
        pytest.skip("memfd_create is not available on this system")
    options = {
        "A": ("--*.action=python-control", "--*.python-control-loop-type=iterate-corpus"),
        "B": ("--*.action=supervised-segmentwise-training",),
        "loop": ("--*.action=python-control", "--*.python-control-loop-type=python-control-loop"),
    }[flow]
    with shm.SharedRegion.create(1 << 20, max_size=1 << 26) as region:
        emu = emulators(*options, "--*.training-criterion=ctc", extra_fds=(region.fd,))
        drive_segments(emu, 2, "ctc", seed=8, shared=region)
        out, err = emu.finish()
        assert emu.proc.returncode == 0, err


def test_parent_gone_ends_rasr(emulators):
    emu = emulators("--*.action=supervised-segmentwise-training", "--*.training-criterion=ctc")
    emu.link.handshake(protocol=2)
    seg = emulator_corpus().segments[0]
    post = random_log_posteriors(np.random.default_rng(5), seg.num_frames, criteria.num_labels("ctc"))
    emu.link.send_loss_request(seg.name, post)
    emu.link.recv_loss_result(post.shape)
    emu.link.close()
    out, err = emu.finish()
    assert emu.proc.returncode == 0, err


def test_old_rasr_is_refused_with_a_message(emulators):
    emu = emulators("--*.action=python-control", "--*.python-control-loop-type=iterate-corpus",
                    "--*.version-number=none")
    with pytest.raises(SprintRemoteError, match=r"version >= 2 is needed"):
        emu.link.handshake(protocol=2)
    out, err = emu.finish()
    assert emu.proc.returncode == 1
    assert "version >= 2 is needed" in err
