"""fullsum_loss on its two paths (compiled kernel, per-frame torch ops) against ctc_loss and each other on random
batches, the kernel reading the input tensor in place, the ops path's op count per frame, and fullsum_viterbi
against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from support import extra_reason

torch = pytest.importorskip("torch", reason=extra_reason("torch"))

from torch_testlib import ctc_automaton, merge  # noqa: E402

from sprint_control import fsa  # noqa: E402
from sprint_control.torch import fullsum as fullsum_module  # noqa: E402
from sprint_control.torch import fullsum_loss, fullsum_viterbi  # noqa: E402


def _tensors(automata):
    e, w, se = merge(automata)
    return torch.from_numpy(e.astype(np.int64)), torch.from_numpy(w), torch.from_numpy(se.astype(np.int64))


def _ctc_batch(seed, max_time=30, batch=6, num_labels=7):
    rng = np.random.default_rng(seed)
    labels = [list(rng.integers(1, 3 if b % 2 else num_labels, size=int(rng.integers(0, 8)))) for b in range(batch)]
    lens = [int(rng.integers(max(1, 2 * len(y)), max_time + 1)) for y in labels]  # repeats need blanks
    lens[0] = max_time
    return labels, lens, _tensors([ctc_automaton(y) for y in labels])


@pytest.mark.parametrize("backend", ["kernel", "ops"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("threads", [1, 2])
def test_random_ctc_batches_match_ctc_loss(backend, dtype, threads, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)  # the kernel's thread count
    for seed in range(3):
        labels, lens, (edges, weights, start_end) = _ctc_batch(seed)
        logits = torch.randn(30, len(labels), 7, generator=torch.Generator().manual_seed(seed), dtype=dtype)
        logits.requires_grad_()
        lp = torch.log_softmax(logits, -1)
        loss = fullsum_loss(lp, lens, edges, weights, start_end, backend=backend)
        ref = torch.nn.functional.ctc_loss(lp, torch.tensor([x for y in labels for x in y], dtype=torch.long),
                                           torch.tensor(lens), torch.tensor([len(y) for y in labels]),
                                           reduction="none", zero_infinity=False)
        tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
        torch.testing.assert_close(loss, ref, **tol)
        scale = torch.linspace(-1, 2, len(labels), dtype=dtype)
        (g,) = torch.autograd.grad((loss * scale).sum(), logits, retain_graph=True)
        (g_ref,) = torch.autograd.grad((ref * scale).sum(), logits)
        torch.testing.assert_close(g, g_ref, **tol)


def _random_automata(seed, batch=5, num_labels=6):
    """HMM-like random automata: a left-to-right chain with loops, random skips and weights."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batch):
        n = int(rng.integers(2, 8))
        edges = [(s, s, int(rng.integers(num_labels))) for s in range(1, n - 1)]
        edges += [(s, s + 1, int(rng.integers(num_labels))) for s in range(n - 1)]
        edges += [(s, s + 2, int(rng.integers(num_labels))) for s in range(n - 2) if rng.random() < 0.5]
        arr = np.array(edges, dtype=np.uint32).T.reshape(3, -1)
        out.append((n, arr, rng.uniform(0, 1.5, arr.shape[1]).astype(np.float32)))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_both_paths_agree_on_general_automata_with_trainable_weights(seed):
    edges, weights, start_end = _tensors(_random_automata(seed))
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(0, 13, (5,), generator=g)
    results = []
    for backend in ("kernel", "ops"):
        x = torch.randn(12, 5, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        x.requires_grad_()
        w = weights.double().requires_grad_()
        loss = fullsum_loss(x, lens, edges, w, start_end, weight_scale=0.8, backend=backend)
        finite = torch.isfinite(loss)
        (loss[finite] * torch.arange(1.0, 1.0 + int(finite.sum()), dtype=torch.float64)).sum().backward()
        results.append((loss.detach(), x.grad, w.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(results[0][0]).any() and results[0][1].abs().sum() > 0


def test_gradcheck_on_general_automata():
    edges, weights, start_end = _tensors(_random_automata(9, batch=3))
    x = torch.randn(6, 3, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    w = weights.double().requires_grad_()
    lens = [6, 4, 5]
    assert torch.isfinite(fullsum_loss(x, lens, edges, w, start_end)).all()
    assert torch.autograd.gradcheck(lambda v, u: fullsum_loss(v, lens, edges, u, start_end), (x, w))


def test_the_kernel_reads_the_tensor_in_place_and_writes_the_gradient_it_returns(monkeypatch):
    seen = {}
    real = fsa.fullsum

    def spy(log_probs, *args, out=None, **kwargs):
        seen["input"], seen["out"] = log_probs, out
        return real(log_probs, *args, out=out, **kwargs)

    monkeypatch.setattr(fullsum_module._fsa, "fullsum", spy)
    labels, lens, (edges, weights, start_end) = _ctc_batch(0)
    lp = torch.log_softmax(torch.randn(30, 6, 7), -1).requires_grad_()
    loss = fullsum_loss(lp, lens, edges, weights, start_end)
    assert seen["input"].__array_interface__["data"][0] == lp.data_ptr()
    (g,) = torch.autograd.grad(loss.sum(), lp)
    assert g.data_ptr() == seen["out"].__array_interface__["data"][0]


def test_without_gradients_the_kernel_runs_the_forward_pass_only(monkeypatch):
    seen = {}
    real = fsa.fullsum

    def spy(*args, out=None, edge_out=None, **kwargs):
        seen["out"], seen["edge_out"] = out, edge_out
        return real(*args, out=out, edge_out=edge_out, **kwargs)

    monkeypatch.setattr(fullsum_module._fsa, "fullsum", spy)
    labels, lens, (edges, weights, start_end) = _ctc_batch(1)
    with torch.no_grad():
        fullsum_loss(torch.log_softmax(torch.randn(30, 6, 7), -1).requires_grad_(), lens, edges, weights, start_end)
    assert seen == {"out": None, "edge_out": None}


def _aten_calls(max_time):
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    labels = [[1, 2], [3]]
    edges, weights, start_end = _tensors([ctc_automaton(y) for y in labels])
    lp = torch.log_softmax(torch.randn(max_time, 2, 4), -1).requires_grad_()
    with Count():
        loss = fullsum_loss(lp, [max_time, max_time - 1], edges, weights, start_end, backend="ops")
    forward = Count.n
    with Count():
        loss.sum().backward()
    return forward, Count.n - forward


def test_the_ops_path_runs_three_ops_per_frame_each_way():
    f20, b20 = _aten_calls(20)
    f40, b40 = _aten_calls(40)
    assert (f40 - f20, b40 - b20) == (3 * 20, 3 * 20)


# -- Viterbi -------------------------------------------------------------------------------------------------


def _best_path(lp, n, e, w):
    """Brute force: the best edge sequence of len(lp) frames from state 0 to state n - 1, or None."""
    best = None
    for path in itertools.product(range(e.shape[1]), repeat=lp.shape[0]):
        state, score = 0, 0.0
        for t, k in enumerate(path):
            if e[0, k] != state:
                break
            state, score = e[1, k], score + lp[t, e[2, k]] - w[k]
        else:
            if state == n - 1 and (best is None or score > best[0]):
                best = (score, path)
    return best


@pytest.mark.parametrize("seed", range(5))
def test_viterbi_is_the_best_path(seed):
    automata = _random_automata(seed, batch=3, num_labels=4)
    edges, weights, start_end = _tensors(automata)
    lp = torch.log_softmax(torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), -1)
    lens = [5, 4, 3]
    res = fullsum_viterbi(lp, lens, edges, weights, start_end, weight_scale=0.5)
    offset = 0
    for b, (n, e, w) in enumerate(automata):
        t = lens[b]
        best = _best_path(lp[:t, b].numpy(), n, e.astype(np.int64), 0.5 * w.astype(np.float64))
        mine = torch.nonzero(edges[3] == b).flatten()
        if best is None:
            assert res.score[b] == -np.inf and torch.all(res.alignment[:, b] == -1)
        else:
            assert res.score[b].item() == pytest.approx(best[0], abs=1e-6)
            assert [int(mine[k]) for k in best[1]] == res.edge_path[:t, b].tolist()
            assert res.alignment[:t, b].tolist() == [int(e[2, k]) for k in best[1]]
            assert edges[0, res.edge_path[0, b]] == offset and edges[1, res.edge_path[t - 1, b]] == offset + n - 1
        assert torch.all(res.alignment[t:, b] == -1) and torch.all(res.edge_path[t:, b] == -1)
        offset += n


def test_viterbi_on_ctc_gives_a_valid_alignment_of_the_labels():
    labels, lens, (edges, weights, start_end) = _ctc_batch(4)
    lp = torch.log_softmax(torch.randn(30, 6, 7, dtype=torch.float32), -1)
    res = fullsum_viterbi(lp, lens, edges, weights, start_end)
    assert res.score.dtype == torch.float64 and res.alignment.shape == (30, 6)
    loss = fullsum_loss(lp.double(), lens, edges, weights, start_end)
    for b, y in enumerate(labels):
        align = res.alignment[: lens[b], b].tolist()
        collapsed = [k for k, _ in itertools.groupby(align)]
        assert [k for k in collapsed if k != 0] == y
        picked = lp[torch.arange(lens[b]), b, res.alignment[: lens[b], b]].double().sum()
        assert res.score[b].item() == pytest.approx(picked.item(), abs=1e-4)
        assert res.score[b].item() <= -loss[b].item() + 1e-9  # the best path is one term of the full sum


def test_viterbi_refuses_bad_input():
    edges, weights, start_end = _tensors(_random_automata(0, batch=2))
    with pytest.raises(ValueError, match="log_probs must be"):
        fullsum_viterbi(torch.zeros(3, 2), [3, 3], edges, weights, start_end)
    with pytest.raises(ValueError, match="emission indices"):
        fullsum_viterbi(torch.zeros(3, 2, 2), [3, 3], edges, weights, start_end)
