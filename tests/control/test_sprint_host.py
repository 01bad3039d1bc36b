"""The module inside a real embedding host: tests/control/sprint_host.c embeds CPython the way RASR does
(GIL taken per call only, PyCapsule reference, builtin callback, bytes orthography, column-major
float32 matrices) and runs flows A and B with its own C cross-entropy; the test is the parent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from control_fakes import random_log_posteriors

from sprint_control.errors import SprintRemoteError
from sprint_control.wire import protocol

REPO = Path(__file__).resolve().parents[2]
SOURCE = Path(__file__).with_name("sprint_host.c")
LABELS = 6
INPUT_DIM = 3
CORPUS = [("corpus/rec1/1", 7, "hello world"), ("corpus/rec1/2", 1, "ä"), ("corpus/rëc2/3", 19, "grüße aus köln"),
          ("corpus/rec2/4", 12, "")]


def _python_config() -> list[str]:
    exe_dir = Path(sys.executable).parent
    version = sysconfig.get_python_version()
    for candidate in (exe_dir / f"python{version}-config", exe_dir / "python3-config"):
        if candidate.exists():
            return [str(candidate)]
    found = shutil.which(f"python{version}-config") or shutil.which("python3-config")
    if not found:
        pytest.fail("python3-config is missing: the embedding host cannot be built (install the Python headers)")
    return [found]


@pytest.fixture(scope="module")
def sprint_host(tmp_path_factory) -> Path:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        pytest.skip("no C compiler found; the embedding host test needs one")
    config = _python_config()
    flags = subprocess.run(config + ["--cflags", "--ldflags", "--embed"], capture_output=True, text=True,
                           check=True).stdout.split()
    out = tmp_path_factory.mktemp("sprint_host") / "sprint_host"
    build = subprocess.run([compiler, "-O1", "-Wall", "-o", str(out), str(SOURCE)] + flags + ["-lm"],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, f"building sprint_host failed:\n{build.stderr}"
    return out


def fnv1a32(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def host_targets(name: str, frames: int, labels: int) -> np.ndarray:
    """The host's targets, computed independently: a_t = (fnv1a32(name) + 7 t) mod labels (32-bit)."""
    h = fnv1a32(name.encode("utf-8"))
    return np.array([((h + 7 * t) & 0xFFFFFFFF) % labels for t in range(frames)], dtype=np.int64)


def expected_ce(log_posteriors: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    lp = log_posteriors.astype(np.float64)
    lp = lp - np.log(np.exp(lp).sum(axis=1, keepdims=True))
    frames = len(targets)
    loss = -lp[np.arange(frames), targets].sum()
    err = np.exp(lp)
    err[np.arange(frames), targets] -= 1.0
    return float(loss), err


class HostRun:
    def __init__(self, host: Path, tmp_path: Path, flow: str, module_config: str = "", host_args: tuple = ()):
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("".join(f"{n}\t{t}\t{o}\n" for n, t, o in CORPUS), encoding="utf-8")
        c2p_r, c2p_w = os.pipe()
        p2c_r, p2c_w = os.pipe()
        config = f"c2p_fd:{c2p_w},p2c_fd:{p2c_r},minPythonControlVersion:2" + module_config
        args = [str(host), f"--flow={flow}", f"--pymod-path={REPO}", "--pymod-name=sprint_control",
                f"--pymod-config={config}", f"--corpus={corpus}", f"--labels={LABELS}", f"--input-dim={INPUT_DIM}",
                "--idle-us=2000", *host_args]
        try:
            self.proc = subprocess.Popen(args, pass_fds=(c2p_w, p2c_r), close_fds=True, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
        finally:
            os.close(c2p_w)
            os.close(p2c_r)
        self.link = protocol.Link(c2p_r, p2c_w, timeout=30.0)

    def finish(self) -> tuple[str, str]:
        out, err = self.proc.communicate(timeout=30)
        return out, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)
        self.link.close()


@pytest.fixture
def host_runs():
    runs: list[HostRun] = []
    yield runs
    for r in runs:
        r.kill()


def _drive(run: HostRun, proto: int) -> dict:
    assert run.link.handshake(protocol=proto) == proto
    rng = np.random.default_rng(11)
    losses = {}
    for name, frames, _ in CORPUS:
        post = random_log_posteriors(rng, frames, LABELS)
        run.link.send_loss_request(name, post)
        loss, err = run.link.recv_loss_result(post.shape)
        exp_loss, exp_err = expected_ce(post, host_targets(name, frames, LABELS))
        assert loss == pytest.approx(exp_loss, rel=1e-5), name
        np.testing.assert_allclose(err, exp_err, atol=2e-6)
        losses[name] = loss
    run.link.send_exit()
    return losses


def _summary(stderr: str) -> dict:
    line = [ln for ln in stderr.splitlines() if ln.startswith("sprint_host: segments=")][-1]
    return {k: int(v) for k, v in (item.split("=") for item in line.split()[1:])}


@pytest.mark.parametrize("proto", [1, 2])
def test_flow_a_in_the_embedding_host(sprint_host, tmp_path, host_runs, proto):
    # RASR's cross-entropy gives only "error-signal-before-softmax": the module exponentiates.
    run = HostRun(sprint_host, tmp_path, "A", ",sprintInputInLogSpace:false")
    host_runs.append(run)
    _drive(run, proto)
    out, err = run.finish()
    assert run.proc.returncode == 0, err
    summary = _summary(err)
    assert summary == {"segments": 4, "criterion_calls": 4, "fast_in": 4, "slow_in": 0}
    assert out.count("processed") == 4


@pytest.mark.parametrize("proto", [1, 2])
@pytest.mark.parametrize("log_space", [False, True])
def test_flow_b_in_the_embedding_host(sprint_host, tmp_path, host_runs, proto, log_space):
    flag = "true" if log_space else "false"
    run = HostRun(sprint_host, tmp_path, "B", f",sprintInputInLogSpace:{flag}", (f"--input-in-log-space={flag}",))
    host_runs.append(run)
    losses = _drive(run, proto)
    out, err = run.finish()
    assert run.proc.returncode == 0, err
    # forward's output and the gradient of backpropagate both took the memcpy path
    assert _summary(err) == {"segments": 4, "criterion_calls": 0, "fast_in": 8, "slow_in": 0}
    host_losses = {ln.split()[1]: float(ln.split()[3]) for ln in out.splitlines() if ln.startswith("segment ")}
    assert host_losses == pytest.approx(losses, rel=1e-6)


def test_parent_gone_lets_the_host_finish(sprint_host, tmp_path, host_runs):
    run = HostRun(sprint_host, tmp_path, "B", ",sprintInputInLogSpace:false")
    host_runs.append(run)
    run.link.handshake(protocol=2)
    post = random_log_posteriors(np.random.default_rng(0), CORPUS[0][1], LABELS)
    run.link.send_loss_request(CORPUS[0][0], post)
    run.link.recv_loss_result(post.shape)
    run.link.close()  # no exit: the parent just goes away
    out, err = run.finish()
    assert run.proc.returncode == 0, err
    assert _summary(err)["segments"] == 1


def test_criterion_error_reaches_the_parent_and_the_host_keeps_serving(sprint_host, tmp_path, host_runs):
    # posteriors with the wrong label count: the host's criterion raises ValueError
    run = HostRun(sprint_host, tmp_path, "A", ",sprintInputInLogSpace:false")
    host_runs.append(run)
    run.link.handshake(protocol=2)
    rng = np.random.default_rng(1)
    name, frames, _ = CORPUS[0]
    bad = random_log_posteriors(rng, frames, LABELS + 1)
    run.link.send_loss_request(name, bad)
    with pytest.raises(SprintRemoteError, match="labels"):
        run.link.recv_loss_result(bad.shape)
    name, frames, _ = CORPUS[1]
    good = random_log_posteriors(rng, frames, LABELS)
    run.link.send_loss_request(name, good)
    loss, _ = run.link.recv_loss_result(good.shape)
    assert loss == pytest.approx(expected_ce(good, host_targets(name, frames, LABELS))[0], rel=1e-5)
    run.link.send_exit()
    out, err = run.finish()
    assert run.proc.returncode == 0, err
