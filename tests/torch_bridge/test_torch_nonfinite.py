"""Non-finite input to ``fullsum_loss`` and ``fullsum_viterbi``: the compiled kernel and the torch ops path hold
the one rule of ``sprint_control.fsa`` (NaN or +inf score within a length, NaN or -inf weight: that sequence's
loss is NaN and its gradient zero; the other sequences are untouched)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='needs the torch extra: pip install "sprint_control[torch]"')

from torch_testlib import ctc_automaton, merge  # noqa: E402

from sprint_control.torch import fullsum_loss, fullsum_viterbi  # noqa: E402

LABELS = [[1, 2, 2], [3], [2, 1, 3, 3, 1], [4]]
LENS = torch.tensor([10, 4, 12, 3])


def _problem(seed=0):
    e, w, se = merge([ctc_automaton(y) for y in LABELS])
    gen = torch.Generator().manual_seed(seed)
    lp = torch.log_softmax(torch.randn(12, len(LABELS), 5, generator=gen, dtype=torch.float64), -1)
    return lp, torch.from_numpy(e.astype(np.int64)), torch.from_numpy(w), torch.from_numpy(se.astype(np.int64))


def _loss_and_grad(lp, e, w, se, backend):
    x = lp.clone().requires_grad_()
    loss = fullsum_loss(x, LENS, e, w, se, backend=backend)
    loss.sum().backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", [(3, 0, 0), (9, 2, 4), (0, 3, 4)])  # (frame, sequence, label), unread ones too
def test_kernel_and_ops_agree_on_a_bad_score(bad, where):
    lp, e, w, se = _problem()
    clean = _loss_and_grad(lp, e, w, se, "kernel")
    t, b, v = where
    lp[t, b, v] = bad
    others = torch.arange(len(LABELS)) != b
    results = {backend: _loss_and_grad(lp, e, w, se, backend) for backend in ("kernel", "ops")}
    for backend, (loss, grad) in results.items():
        assert torch.isnan(loss[b]), backend
        assert torch.isfinite(grad).all() and not grad[:, b].any(), backend
        torch.testing.assert_close(loss[others], clean[0][others])
        torch.testing.assert_close(grad[:, others], clean[1][:, others])
    vit = fullsum_viterbi(lp, LENS, e, w, se)
    assert torch.isnan(vit.score[b]) and (vit.alignment[:, b] == -1).all()


@pytest.mark.parametrize("backend", ["kernel", "ops"])
def test_a_nan_weight_and_padding_frames(backend):
    lp, e, w, se = _problem(1)
    clean = _loss_and_grad(lp, e, w, se, backend)[0]
    lp[LENS[1]:, 1, :] = float("nan")  # beyond the length: never read
    np.testing.assert_array_equal(_loss_and_grad(lp, e, w, se, backend)[0].numpy(), clean.numpy())
    w = w.clone()
    w[int(torch.nonzero(e[3] == 2)[0])] = float("nan")
    loss = _loss_and_grad(lp, e, w, se, backend)[0]
    assert torch.isnan(loss[2]) and torch.isfinite(loss[[0, 1, 3]]).all()
