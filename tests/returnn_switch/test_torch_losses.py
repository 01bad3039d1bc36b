"""``sprint_control.returnn_torch`` on frontend Tensors in-process: dims in any order, sequence lengths from the
time dim, automata from the in-process builder (no child), and clear errors for a bad call."""

from __future__ import annotations

import pytest

pytest.importorskip("returnn", reason='needs the returnn extra: pip install "sprint_control[returnn]"')
torch = pytest.importorskip("torch", reason='needs the torch extra: pip install "sprint_control[torch]"')
pytest.importorskip("tree", reason='needs the returnn-torch extra: pip install "sprint_control[returnn-torch]"')

import returnn.frontend as rf  # noqa: E402
from returnn.tensor import Dim, Tensor, batch_dim  # noqa: E402

from sprint_control import returnn_torch  # noqa: E402
from sprint_control.emulator.builder import AllophoneStateFsaBuilder  # noqa: E402
from sprint_control.emulator.corpus import synthetic_corpus  # noqa: E402
from sprint_control.torch import AutomataCache, automata_for_batch, fullsum_loss  # noqa: E402

ARGS = ["--*.corpus.synthetic=3", "--*.corpus.seed=4", "--*.corpus.max-frames=30", "--*.training-criterion=ctc"]
CORPUS = synthetic_corpus(3, seed=4, max_frames=30)
LABELS = 11


@pytest.fixture(scope="module", autouse=True)
def torch_backend():
    rf.select_backend_torch()


def _logits(order):
    """Logits as a frontend Tensor with its dims in ``order`` and the raw (time, batch, label) tensor."""
    lens = torch.tensor([s.num_frames for s in CORPUS.segments], dtype=torch.int32)
    time_dim = Dim(Tensor("time", dims=[batch_dim], dtype="int32", raw_tensor=lens), name="time")
    label_dim = Dim(LABELS, name="labels")
    g = torch.Generator().manual_seed(0)
    tbf = torch.randn(int(lens.max()), len(lens), LABELS, generator=g, requires_grad=True)
    dims = {"t": time_dim, "b": batch_dim, "f": label_dim}
    perm = ["tbf".index(c) for c in order]
    x = Tensor("logits", dims=[dims[c] for c in order], dtype="float32", feature_dim=label_dim,
               raw_tensor=tbf.permute(*perm))
    return x, tbf, lens


@pytest.mark.parametrize("order", ["btf", "tbf", "fbt"])
def test_fullsum_loss_on_frontend_tensors_equals_the_torch_bridge(order):
    x, tbf, lens = _logits(order)
    builder = AllophoneStateFsaBuilder(ARGS)
    tags = [s.name for s in CORPUS.segments]
    loss = returnn_torch.fullsum_loss(x, seq_tags=tags, automata=builder, cache=AutomataCache())
    assert loss.dims == (batch_dim,)
    expected = fullsum_loss(tbf.log_softmax(-1), lens, automata_for_batch(tags, builder))
    assert torch.equal(loss.raw_tensor, expected)
    loss.raw_tensor.sum().backward()
    grad = tbf.grad.clone()
    tbf.grad = None
    expected.sum().backward()
    assert torch.allclose(grad, tbf.grad)
    # log-probabilities in, the same loss out; the tdp scale is the weight scale
    lp = Tensor("lp", dims=x.dims, dtype="float32", feature_dim=x.feature_dim,
                raw_tensor=x.raw_tensor.log_softmax(x.dims.index(x.feature_dim)))
    same = returnn_torch.fullsum_loss(lp, seq_tags=tags, automata=builder, input_type="log_prob", tdp_scale=2.0)
    assert torch.allclose(same.raw_tensor, expected)


def test_bad_calls_say_what_was_expected():
    x, _, _ = _logits("btf")
    tags = [s.name for s in CORPUS.segments]
    builder = AllophoneStateFsaBuilder(ARGS)
    with pytest.raises(ValueError, match="exactly one source of automata"):
        returnn_torch.fullsum_loss(x, seq_tags=tags)
    with pytest.raises(ValueError, match="exactly one source of automata"):
        returnn_torch.fullsum_loss(x, seq_tags=tags, automata=builder, sprint_opts={})
    with pytest.raises(ValueError, match="input_type must be one of"):
        returnn_torch.fullsum_loss(x, seq_tags=tags, automata=builder, input_type="prob")
    with pytest.raises(ValueError, match="seq_tags are required"):
        returnn_torch.fullsum_loss(x, seq_tags=None, automata=builder)
    with pytest.raises(TypeError, match="sprint_opts must be a dict"):
        returnn_torch.sprint_loss(x, sprint_opts="--*.corpus.synthetic=3", seq_tags=tags)
    with pytest.raises(ValueError, match="expected dims"):
        returnn_torch.fullsum_loss(x, seq_tags=tags, automata=builder, time_dim=Dim(5, name="other"))


@pytest.mark.usefixtures("no_leaks")
def test_sprint_loss_on_frontend_tensors_one_pool_per_sprint_opts():
    import numpy as np

    from sprint_control.emulator import criteria
    from sprint_control.parent import emulator_command

    opts = {"sprintExecPath": emulator_command(), "numInstances": 1,
            "sprintConfigStr": " ".join(ARGS + ["--*.log-level=warning"])}
    x, tbf, lens = _logits("fbt")
    tags = [s.name for s in CORPUS.segments]
    try:
        loss = returnn_torch.sprint_loss(x, sprint_opts=opts, seq_tags=np.array(tags))
        pool = returnn_torch.get_global_pool(dict(opts))
        assert pool is returnn_torch.get_global_pool(opts)  # the same options, the same pool
        assert loss.dims == (batch_dim,)
        loss.raw_tensor.sum().backward()
        log_post = tbf.detach().log_softmax(-1).numpy()
        for b, s in enumerate(CORPUS.segments):  # RASR's CTC and its error signal, computed here
            n = int(lens[b])
            exp_loss, exp_err = criteria.compute_criterion("ctc", log_post[:n, b], orthography=s.orthography)
            assert float(loss.raw_tensor[b].detach()) == pytest.approx(exp_loss, rel=1e-5)
            np.testing.assert_allclose(tbf.grad[:n, b].numpy(), exp_err, atol=1e-5)
            assert not tbf.grad[n:, b].any()
    finally:
        returnn_torch.close_pools()
    assert pool.closed
    assert returnn_torch.get_global_pool(opts) is not pool  # a fresh one after close (not started until used)
    returnn_torch.close_pools()
