"""Backward without a fresh (time, batch, label) tensor (``sprint_loss`` and ``fullsum_loss`` on the kernel):
the saved gradient itself for unit incoming gradients, scaled in place when no later backward reads it, and
still right when the graph is kept (``retain_graph``) and run again."""

from __future__ import annotations

import numpy as np
import pytest
from support import extra_reason

torch = pytest.importorskip("torch", reason=extra_reason("torch"))

from torch_testlib import FakePool, ctc_automaton, ctc_reference_criterion, labels_from_name, merge  # noqa: E402

from sprint_control.torch import fullsum_loss, sprint_loss  # noqa: E402

TAGS = ["seg-1-2-2", "seg-3", "seg-2-1"]
LENS = [9, 4, 6]


def _sprint(dtype=torch.float32):
    pool = FakePool(ctc_reference_criterion(labels_from_name), dtype=np.float32)
    logits = torch.randn(9, 3, 4, generator=torch.Generator().manual_seed(0), dtype=dtype).requires_grad_()
    return logits, sprint_loss(logits, LENS, TAGS, pool)


def _fullsum(dtype=torch.float32):
    e, w, se = merge([ctc_automaton(labels_from_name(t)) for t in TAGS])
    lp = torch.log_softmax(torch.randn(9, 3, 4, generator=torch.Generator().manual_seed(1), dtype=dtype), -1)
    lp.requires_grad_()
    return lp, fullsum_loss(lp, LENS, torch.from_numpy(e.astype(np.int64)), torch.from_numpy(w),
                            torch.from_numpy(se.astype(np.int64)))


def _unit_gradient(make):
    x, loss = make()
    (g,) = torch.autograd.grad(loss.sum(), x, retain_graph=True)
    return x, loss, g.clone()


@pytest.mark.parametrize("make", [_sprint, _fullsum], ids=["sprint_loss", "fullsum_loss"])
def test_second_backward_with_retained_graph_is_right_and_leaves_the_first_alone(make):
    x, loss, unit = _unit_gradient(make)
    scale_a = torch.tensor([2.0, -1.0, 0.5])
    scale_b = torch.tensor([-3.0, 0.25, 4.0])
    (g_a,) = torch.autograd.grad(loss, x, grad_outputs=scale_a, retain_graph=True)
    kept = g_a.clone()
    (g_b,) = torch.autograd.grad(loss, x, grad_outputs=scale_b, retain_graph=True)
    (g_one,) = torch.autograd.grad(loss.sum(), x, retain_graph=True)
    (g_c,) = torch.autograd.grad(loss, x, grad_outputs=scale_a)  # the last one: may scale in place
    torch.testing.assert_close(g_a, unit * scale_a.view(1, -1, 1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_a, kept, rtol=0, atol=0)
    torch.testing.assert_close(g_b, unit * scale_b.view(1, -1, 1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_one, unit, rtol=0, atol=0)
    torch.testing.assert_close(g_c, unit * scale_a.view(1, -1, 1), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [_sprint, _fullsum], ids=["sprint_loss", "fullsum_loss"])
def test_unit_gradient_hands_out_the_saved_tensor_and_a_later_in_place_scale_spares_it(make):
    x, loss = make()
    (g1,) = torch.autograd.grad(loss.sum(), x, retain_graph=True)
    (g2,) = torch.autograd.grad(loss.sum(), x, retain_graph=True)
    assert g1.data_ptr() == g2.data_ptr()  # the saved gradient both times: no (T, B, V) tensor per call
    before = g1.clone()
    (g3,) = torch.autograd.grad(loss, x, grad_outputs=torch.tensor([2.0, 2.0, 2.0]))  # graph freed after this
    torch.testing.assert_close(g1, before, rtol=0, atol=0)  # it was handed out: not scaled in place
    torch.testing.assert_close(g3, 2 * before)


@pytest.mark.parametrize("make", [_sprint, _fullsum], ids=["sprint_loss", "fullsum_loss"])
def test_last_backward_scales_the_saved_tensor_in_place(make):
    x, loss = make()
    saved_ptr = loss.grad_fn.saved_tensors[0].data_ptr()
    (g,) = torch.autograd.grad(loss, x, grad_outputs=torch.tensor([2.0, -1.0, 0.5]))
    assert g.data_ptr() == saved_ptr


def test_sprint_loss_on_float64_logits_converts_once_and_scales_the_copy():
    x, loss = _sprint(torch.float64)
    saved = loss.grad_fn.saved_tensors[0]
    assert saved.dtype == torch.float32
    keep = saved.clone()
    (g,) = torch.autograd.grad(loss, x, grad_outputs=torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64),
                               retain_graph=True)
    assert g.dtype == torch.float64
    torch.testing.assert_close(saved, keep, rtol=0, atol=0)
    torch.testing.assert_close(g, keep.double() * torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64).view(1, -1, 1))


@pytest.mark.parametrize("make", [_sprint, _fullsum], ids=["sprint_loss", "fullsum_loss"])
def test_gradients_accumulated_into_grad_over_retained_backwards_are_right(make):
    # .backward() hands the gradient to the leaf's accumulator, which may keep the tensor itself as .grad
    # and add later gradients into it in place: the saved gradient must not be that tensor
    x, loss = make()
    (unit,) = torch.autograd.grad(loss.sum(), x, retain_graph=True)
    unit = unit.clone()
    loss.sum().backward(retain_graph=True)
    loss.sum().backward(retain_graph=True)
    loss.backward(torch.tensor([2.0, -1.0, 0.5]), retain_graph=True)
    loss.sum().backward()
    torch.testing.assert_close(x.grad, unit * torch.tensor([5.0, 2.0, 3.5]).view(1, -1, 1), rtol=1e-6, atol=1e-6)
