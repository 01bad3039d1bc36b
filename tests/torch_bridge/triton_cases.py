"""The Triton kernels' cases, run by ``test_torch_triton.py`` in a subprocess with ``TRITON_INTERPRET=1``
(Triton decides at import whether it interprets): losses, gradients, best paths and the non-finite rule
against the compiled CPU kernel, on CTC and random automata."""

from __future__ import annotations

import os

import pytest

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run by test_torch_triton.py, with TRITON_INTERPRET=1", allow_module_level=True)
torch = pytest.importorskip("torch", reason='needs the torch extra: pip install "sprint_control[torch]"')
pytest.importorskip("triton", reason='needs triton (the torch extra on Linux): pip install "sprint_control[torch]"')

from fsa_cases import random_batch  # noqa: E402

from sprint_control import fsa  # noqa: E402
from sprint_control.tools.bench_torch import make_problem  # noqa: E402
from sprint_control.torch import fullsum_loss, fullsum_viterbi  # noqa: E402


def _problems():
    lp, lens, _, (e, w, se) = make_problem(14, 3, 6, 4, seed=1)
    yield "ctc", lp, lens, e, w, se
    for seed in range(3):
        yield (f"random{seed}",) + random_batch(seed)


@pytest.mark.parametrize("case", list(range(4)))
def test_triton_fullsum_equals_the_cpu_kernel(case):
    name, lp, lens, e, w, se = list(_problems())[case]
    got_x, want_x = lp.clone().requires_grad_(), lp.clone().requires_grad_()
    got = fullsum_loss(got_x, lens, e, w, se, backend="triton")
    want = fullsum_loss(want_x, lens, e, w, se, backend="kernel")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    torch.where(torch.isfinite(got), got, 0.0).sum().backward()
    torch.where(torch.isfinite(want), want, 0.0).sum().backward()
    torch.testing.assert_close(got_x.grad, want_x.grad, rtol=1e-4, atol=1e-4)
    vit = fullsum_viterbi(lp, lens, e, w, se, backend="triton")
    ref = fullsum_viterbi(lp, lens, e, w, se, backend="kernel")
    torch.testing.assert_close(vit.score, ref.score, rtol=1e-5, atol=1e-4)
    assert torch.equal(vit.alignment, ref.alignment) and torch.equal(vit.edge_path, ref.edge_path), name


def test_triton_holds_the_non_finite_rule():
    _, lp, lens, e, w, se = next(_problems())
    lp = lp.clone()
    lp[2, 1, 3] = float("nan")
    x = lp.clone().requires_grad_()
    loss = fullsum_loss(x, lens, e, w, se, backend="triton")
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()
    loss[[0, 2]].sum().backward()
    assert torch.isfinite(x.grad).all() and not x.grad[:, 1].any()
    assert torch.isnan(fullsum_viterbi(lp, lens, e, w, se, backend="triton").score[1])


def test_triton_refuses_trainable_weights_and_plain_cpu_tensors(monkeypatch):
    _, lp, lens, e, w, se = next(_problems())
    with pytest.raises(ValueError, match="backend 'triton' gives no weight gradient"):
        fullsum_loss(lp, lens, e, w.clone().requires_grad_(), se, backend="triton")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="backend 'triton' needs triton and a CUDA tensor"):
        fullsum_loss(lp, lens, e, w, se, backend="triton")
    assert fsa.IMPLEMENTATION in ("cython", "python")
