"""sprint_loss: RASR's criterion through a pool as a differentiable PyTorch loss."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from support import extra_reason

torch = pytest.importorskip("torch", reason=extra_reason("torch"))

from torch_testlib import FakePool, ctc_reference_criterion, labels_from_name  # noqa: E402

from sprint_control.torch import SprintLossFunction, sprint_loss  # noqa: E402

TAGS = ["seg-1-2-2", "seg-3", "seg-2-1"]
LENS = [9, 4, 6]


def _pool(dtype=np.float64):
    return FakePool(ctc_reference_criterion(labels_from_name), dtype=dtype)


def _logits(dtype=torch.float64, t=9, b=3, n_labels=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, b, n_labels, generator=g, dtype=dtype)


def test_gradcheck_against_finite_differences_of_the_criterion():
    # The fake pool computes RASR's role in float64; finite differences of loss(logits) must match the error
    # signal that backward hands back, scaled by arbitrary incoming gradients (gradcheck uses several).
    pool = _pool()
    logits = _logits().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: sprint_loss(x, LENS, TAGS, pool, posterior_dtype=torch.float64), (logits,), eps=1e-6, atol=1e-5
    )


def test_backward_is_error_signal_scaled_per_sequence_and_zero_beyond_length():
    pool = _pool(np.float32)  # fills frames beyond each length with garbage
    logits = _logits(torch.float32).requires_grad_()
    loss = sprint_loss(logits, torch.tensor(LENS), TAGS, pool)
    assert loss.shape == (3,) and loss.dtype == torch.float32
    scale = torch.tensor([2.0, -1.0, 0.5])
    (loss * scale).sum().backward()
    lp = torch.log_softmax(logits.detach().double(), -1).numpy()
    crit = ctc_reference_criterion(labels_from_name)
    for b, (tag, t) in enumerate(zip(TAGS, LENS)):
        ref_loss, ref_err = crit(tag, lp[:t, b])
        assert loss[b].item() == pytest.approx(ref_loss, rel=1e-5)
        np.testing.assert_allclose(logits.grad[:t, b].numpy(), scale[b].item() * ref_err, atol=1e-5)
        assert torch.all(logits.grad[t:, b] == 0)


def test_pool_gets_float32_c_contiguous_log_softmax_and_the_tags():
    pool = _pool(np.float32)
    base = _logits(torch.float64, seed=3)
    logits = base.transpose(0, 1).contiguous().transpose(0, 1)  # (T, B, L) view, not C-contiguous
    assert not logits.is_contiguous()
    sprint_loss(logits, np.array(LENS, dtype=np.int32), [t.encode() for t in TAGS], pool)
    (sent, lens, tags), = pool.loss_calls
    assert sent.dtype == np.float32 and sent.flags.c_contiguous and sent.shape == (9, 3, 4)
    np.testing.assert_allclose(sent, torch.log_softmax(base, -1).numpy(), rtol=1e-6, atol=1e-6)
    assert lens.tolist() == LENS and tags == TAGS


def test_cpu_float32_input_is_sent_without_an_extra_copy(monkeypatch):
    # log_softmax writes a fresh CPU float32 tensor; the pool must get exactly that memory (no second copy).
    seen = {}
    real = torch.log_softmax

    def spy(x, dim, *args, **kwargs):
        out = real(x, dim, *args, **kwargs)
        seen["ptr"] = out.data_ptr()
        return out

    monkeypatch.setattr(torch, "log_softmax", spy)
    pool = _pool(np.float32)
    sprint_loss(_logits(torch.float32), LENS, TAGS, pool)
    sent = pool.loss_calls[0][0]
    assert sent.__array_interface__["data"][0] == seen["ptr"]


class _AllocatingPool(FakePool):
    """A pool that allocates batch buffers itself (as SprintPool does in its shared-memory region)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.buffers = []

    def empty(self, shape, dtype=np.float32):
        buf = np.full(shape, np.nan, dtype=dtype)
        self.buffers.append(buf)
        return buf


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_log_posteriors_are_written_straight_into_the_pools_buffer(dtype):
    pool = _AllocatingPool(ctc_reference_criterion(labels_from_name), dtype=np.float32)
    logits = _logits(dtype)
    sprint_loss(logits, LENS, TAGS, pool)
    (buf,) = pool.buffers
    sent = pool.loss_calls[0][0]
    assert sent is buf
    expected = torch.log_softmax(logits.float(), -1).numpy()
    np.testing.assert_allclose(buf, expected, rtol=1e-6, atol=1e-6)


def test_pool_buffer_is_not_used_for_float64_posteriors():
    pool = _AllocatingPool(ctc_reference_criterion(labels_from_name))
    sprint_loss(_logits(), LENS, TAGS, pool, posterior_dtype=torch.float64)
    assert pool.buffers == [] and pool.loss_calls[0][0].dtype == np.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_gradient_has_the_dtype_and_device_of_the_input(dtype):
    pool = _pool(np.float32)
    logits = _logits(dtype).requires_grad_()
    loss = sprint_loss(logits, LENS, TAGS, pool)
    assert loss.dtype == dtype and loss.device == logits.device
    loss.sum().backward()
    assert logits.grad.dtype == dtype and logits.grad.device == logits.device
    assert torch.isfinite(logits.grad.float()).all()


def test_ctx_holds_only_the_error_signal():
    pool = _pool(np.float32)
    logits = _logits(torch.float32).requires_grad_()
    loss = sprint_loss(logits, LENS, TAGS, pool)
    ctx = loss.grad_fn
    assert isinstance(ctx, SprintLossFunction._backward_cls)
    (saved,) = ctx.saved_tensors
    assert saved.shape == logits.shape and saved.device.type == "cpu"
    assert not saved.requires_grad
    loss.sum().backward()
    with pytest.raises(RuntimeError, match="second time"):
        loss.sum().backward()  # freed with the graph, like any saved tensor


def test_skipped_segment_has_inf_loss_and_zero_gradient():
    # 'seg-1-1-1-1-1' needs at least 9 frames (repeats need blanks in between): with 4 frames RASR would discard it.
    pool = _pool(np.float32)
    logits = _logits(torch.float32).requires_grad_()
    tags = ["seg-1-2-2", "seg-1-1-1-1-1", "seg-2-1"]
    loss = sprint_loss(logits, LENS, tags, pool)
    assert torch.isinf(loss[1]) and torch.isfinite(loss[[0, 2]]).all()
    loss[torch.isfinite(loss)].sum().backward()
    assert torch.all(logits.grad[:, 1] == 0)


def test_second_order_gradients_are_refused():
    pool = _pool(np.float32)
    logits = _logits(torch.float32).requires_grad_()
    (g,) = torch.autograd.grad(sprint_loss(logits, LENS, TAGS, pool).sum(), logits, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(tags=TAGS[:2]), ValueError, "one tag per sequence"),
        (dict(seq_lengths=[9, 4]), ValueError, "shape"),
        (dict(seq_lengths=[9, 4, 10]), ValueError, "lie in"),
        (dict(seq_lengths=[9.5, 4, 6]), TypeError, "integers"),
        (dict(tags="seg-1"), TypeError, "sequence of segment names"),
    ],
)
def test_bad_arguments_are_refused_before_the_pool_is_asked(kwargs, exc, match):
    pool = _pool(np.float32)
    args = dict(logits=_logits(torch.float32), seq_lengths=LENS, tags=TAGS, pool=pool)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        sprint_loss(**args)
    assert pool.loss_calls == []


def test_bad_pool_answer_is_a_protocol_error():
    from sprint_control.errors import ProtocolError

    class Wrong:
        def get_batch_loss_and_error_signal(self, lp, lens, tags):
            return np.zeros(3, np.float32), np.zeros((2, 3, 4), np.float32)

    with pytest.raises(ProtocolError, match="error signal of shape"):
        sprint_loss(_logits(torch.float32), LENS, TAGS, Wrong())


def test_package_imports_without_torch():
    # Block torch entirely: the package, both ends and the emulator must import; the bridge says what to install.
    code = textwrap.dedent(
        """
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch blocked")
        sys.meta_path.insert(0, Block())
        import sprint_control, sprint_control.parent, sprint_control.wire.protocol
        assert "torch" not in sys.modules
        try:
            import sprint_control.torch
        except ImportError as e:
            assert "pip install sprint_control[torch]" in str(e), e
        else:
            raise AssertionError("sprint_control.torch imported without torch")
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_importing_the_package_does_not_import_torch():
    code = "import sys, sprint_control, sprint_control.parent; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
