"""fullsum_loss: batched log-space forward-backward over RASR-style automata, against ctc_loss, finite
differences and a plain per-sequence reference; every test on both paths (the compiled kernel and the
per-frame torch ops that other devices take)."""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest
from support import extra_reason

torch = pytest.importorskip("torch", reason=extra_reason("torch"))

from torch_testlib import ctc_automaton, fullsum_reference, merge  # noqa: E402

from sprint_control.torch import fullsum_loss  # noqa: E402

_FULLSUM = fullsum_loss


@pytest.fixture(autouse=True, params=["kernel", "ops"])
def backend(request, monkeypatch):
    """Runs the test with ``fullsum_loss`` forced onto one path."""
    monkeypatch.setattr(sys.modules[__name__], "fullsum_loss", functools.partial(_FULLSUM, backend=request.param))
    return request.param

LABELS = [[1, 2, 2], [3], [2, 1, 3, 3, 1], [4]]
LENS = [10, 4, 12, 1]
N_LABELS = 5


def _batch(labels=LABELS, index_dtype=torch.int64):
    e, w, se = merge([ctc_automaton(y) for y in labels])
    return (
        torch.from_numpy(e.astype(np.int64)).to(index_dtype),
        torch.from_numpy(w),
        torch.from_numpy(se.astype(np.int64)).to(index_dtype),
    )


def _ctc(logits, labels=LABELS, lens=LENS):
    targets = torch.tensor([x for y in labels for x in y], dtype=torch.long)
    return torch.nn.functional.ctc_loss(
        torch.log_softmax(logits, -1),
        targets,
        torch.tensor(lens),
        torch.tensor([len(y) for y in labels]),
        blank=0,
        reduction="none",
    )


def test_ctc_automaton_in_the_test_is_what_it_claims():
    # A hand check of the helper for labels [1, 1]: the repeat needs a blank in between.
    n, e, _ = ctc_automaton([1, 1])
    assert n == 7  # initial 0, positions b 1 b 1 b as states 1..5, final 6
    expected = {
        (0, 1, 0), (0, 2, 1),  # first frame: blank or the first label
        (1, 1, 0), (1, 2, 1),
        (2, 2, 1), (2, 3, 0),  # no skip 2 -> 4: equal labels need a blank in between
        (3, 3, 0), (3, 4, 1),
        (4, 4, 1), (4, 5, 0),
        (5, 5, 0),
        (3, 6, 1), (4, 6, 1), (4, 6, 0), (5, 6, 0),  # copies of the edges into the last label / trailing blank
    }
    assert sorted(map(tuple, e.T.tolist())) == sorted(expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_ctc_loss_and_its_gradient(dtype):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(12, len(LABELS), N_LABELS, generator=g, dtype=dtype, requires_grad=True)
    edges, weights, start_end = _batch()
    loss = fullsum_loss(torch.log_softmax(logits, -1), LENS, edges, weights, start_end)
    ref = _ctc(logits)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, ref, **tol)
    scale = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=dtype)
    (g_ours,) = torch.autograd.grad((loss * scale).sum(), logits)
    (g_ref,) = torch.autograd.grad((ref * scale).sum(), logits)
    torch.testing.assert_close(g_ours, g_ref, **tol)
    for b, t in enumerate(LENS):
        assert torch.all(g_ours[t:, b] == 0)


def test_int32_indices_give_the_same_result():
    g = torch.Generator().manual_seed(2)
    lp = torch.log_softmax(torch.randn(12, len(LABELS), N_LABELS, generator=g, dtype=torch.float64), -1)
    a = fullsum_loss(lp, LENS, *_batch())
    b = fullsum_loss(lp, torch.tensor(LENS, dtype=torch.int32), *_batch(index_dtype=torch.int32))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gradcheck_with_weights_and_unnormalized_scores():
    # Arbitrary log-scores (not normalized) and non-zero edge weights: the gradient w.r.t. log_probs is
    # minus the occupancy, which finite differences must confirm.
    g = torch.Generator().manual_seed(3)
    edges, _, start_end = _batch()
    weights = torch.rand(edges.shape[1], generator=g, dtype=torch.float64)
    x = torch.randn(12, len(LABELS), N_LABELS, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: fullsum_loss(v, LENS, edges, weights, start_end), (x,))


def test_gradcheck_of_trainable_weights():
    g = torch.Generator().manual_seed(7)
    edges, _, start_end = _batch()
    weights = torch.rand(edges.shape[1], generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(12, len(LABELS), N_LABELS, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, w: fullsum_loss(v, LENS, edges, w, start_end, weight_scale=0.5), (x, weights)
    )


def test_half_precision_input_is_computed_in_float32():
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(12, len(LABELS), N_LABELS, generator=g, dtype=torch.float64)
    ref = fullsum_loss(torch.log_softmax(logits, -1), LENS, *_batch())
    low = torch.log_softmax(logits, -1).to(torch.bfloat16).requires_grad_()
    out = fullsum_loss(low, LENS, *_batch())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=5e-2)
    out.sum().backward()
    assert low.grad.dtype == torch.bfloat16 and torch.isfinite(low.grad.float()).all()


def test_matches_per_sequence_reference_with_weights_and_scale():
    rng = np.random.default_rng(4)
    auts = []
    for y in LABELS:
        n, e, w = ctc_automaton(y)
        auts.append((n, e, rng.uniform(0, 2, size=w.shape).astype(np.float32)))
    e, w, se = merge(auts)
    lp = torch.log_softmax(torch.from_numpy(rng.normal(size=(12, len(LABELS), N_LABELS))), -1).requires_grad_()
    loss = fullsum_loss(
        lp, LENS, torch.from_numpy(e.astype(np.int64)), torch.from_numpy(w), torch.from_numpy(se.astype(np.int64)),
        weight_scale=0.7,
    )
    (grad,) = torch.autograd.grad(loss.sum(), lp)
    for b, (n, eb, wb) in enumerate(auts):
        t = LENS[b]
        ref_loss, occ = fullsum_reference(lp.detach().numpy()[:t, b], n, eb, 0.7 * wb.astype(np.float64))
        assert loss[b].item() == pytest.approx(ref_loss, rel=1e-6)
        np.testing.assert_allclose(grad[:t, b].numpy(), -occ, atol=1e-5)
        assert torch.all(grad[t:, b] == 0)


def test_unreachable_final_state_gives_inf_and_zero_gradient():
    # Labels [1, 1, 1] need at least 5 frames; with 3 frames the final state is out of reach.
    labels = [[1, 1, 1], [2]]
    lens = [3, 5]
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(5, 2, N_LABELS, generator=g, dtype=torch.float64, requires_grad=True)
    loss = fullsum_loss(torch.log_softmax(logits, -1), lens, *_batch(labels))
    assert torch.isinf(loss[0]) and torch.isfinite(loss[1])
    (grad,) = torch.autograd.grad(loss[1] + 0 * loss[0], logits)
    assert torch.isfinite(grad).all() and torch.all(grad[:, 0] == 0)
    torch.testing.assert_close(loss[1], _ctc(logits, labels, lens)[1])


def test_sequence_order_and_start_states_need_not_be_sorted():
    # The same automata merged in reverse order, sequences pointing at them: same per-sequence losses.
    g = torch.Generator().manual_seed(6)
    lp = torch.log_softmax(torch.randn(12, len(LABELS), N_LABELS, generator=g, dtype=torch.float64), -1)
    ref = fullsum_loss(lp, LENS, *_batch())
    e, w, se = merge([ctc_automaton(y) for y in reversed(LABELS)])
    e = e.astype(np.int64)
    e[3] = len(LABELS) - 1 - e[3]
    se = se[:, ::-1].astype(np.int64).copy()
    out = fullsum_loss(lp, LENS, torch.from_numpy(e), torch.from_numpy(w), torch.from_numpy(se))
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda e, w, se: (e[:3], w, se), "edges must have shape"),
        (lambda e, w, se: (e, w[:-1], se), "weights must have shape"),
        (lambda e, w, se: (e, w, se[:, :2]), "start_end_states must have shape"),
        (lambda e, w, se: (torch.cat([e[:2], e[2:3] + 50, e[3:]]), w, se), "emission indices"),
    ],
)
def test_inconsistent_automaton_is_refused(mutate, match):
    lp = torch.zeros(12, len(LABELS), N_LABELS)
    with pytest.raises(ValueError, match=match):
        fullsum_loss(lp, LENS, *mutate(*_batch()))
