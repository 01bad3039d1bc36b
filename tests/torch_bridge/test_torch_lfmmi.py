"""lfmmi_loss: the gradient is numerator occupancy minus den_scale times denominator occupancy (finite
differences and the two occupancies computed apart), on the kernel's shared mode and on the torch ops path;
the cross-entropy term and per-frame normalisation; a tiny training run on emulator-style data where the
loss falls and the frame accuracy against the emulator's alignment rises."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='needs the torch extra: pip install "sprint_control[torch]"')

from torch_testlib import ctc_automaton, merge  # noqa: E402

from sprint_control import fsa  # noqa: E402
from sprint_control.emulator.lexicon import Lexicon  # noqa: E402
from sprint_control.fsa.denominator import denominator_graph, label_ngram  # noqa: E402
from sprint_control.torch import denominator_loss, fullsum_loss, lfmmi_loss  # noqa: E402

LABELS = [[1, 2], [3], [2, 2, 1]]
LENS = [6, 4, 7]
BLANK = 0


def _problem(seed=0):
    e, w, se = merge([ctc_automaton(y, blank=BLANK) for y in LABELS])
    num = (torch.from_numpy(e.astype(np.int64)), torch.from_numpy(w.astype(np.float64)),
           torch.from_numpy(se.astype(np.int64)))
    # the n-gram's units 0..2 are the labels 1..3 (blank 0 first)
    den = denominator_graph(label_ngram([[u - 1 for u in y] for y in LABELS], 3, order=2), topology="ctc",
                            blank=BLANK)
    gen = torch.Generator().manual_seed(seed)
    lp = torch.log_softmax(torch.randn(7, len(LABELS), 4, generator=gen, dtype=torch.float64), -1)
    return lp, num, den


@pytest.mark.parametrize("backend", ["kernel", "ops"])
def test_gradient_is_numerator_minus_scaled_denominator_occupancy(backend):
    """Without the leak (the ops path has none); the leak's gradient: the next test."""
    lp, num, den = _problem()
    x = lp.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v: lfmmi_loss(v, LENS, num, den, den_scale=0.7, leaky_hmm=0.0, backend=backend), (x,), eps=1e-6,
        atol=1e-6)
    lfmmi_loss(x, LENS, num, den, den_scale=0.7, leaky_hmm=0.0, backend=backend).sum().backward()
    # the two occupancies on their own: the numerator's merged automaton, the denominator copied per sequence
    xn = lp.numpy()
    num_occ = np.zeros(xn.shape)
    fsa.fullsum(xn, LENS, num[0].numpy(), num[1].numpy(), num[2].numpy(), out=num_occ)
    den_occ = np.zeros(xn.shape)
    de, dw, dse = den.merged()
    for b, t_b in enumerate(LENS):
        occ = np.zeros((t_b, 1, 4))
        fsa.fullsum(np.ascontiguousarray(xn[:t_b, b:b + 1]), [t_b], de, dw, dse, out=occ)
        den_occ[:t_b, b] = occ[:, 0]
    np.testing.assert_allclose(x.grad.numpy(), -(num_occ - 0.7 * den_occ), atol=1e-10)


def test_loss_is_minus_log_ratio_and_the_ce_and_frame_terms():
    lp, num, den = _problem(1)
    numerator = fullsum_loss(lp, LENS, *num)
    denominator = denominator_loss(lp, LENS, den)
    plain = lfmmi_loss(lp, LENS, num, den, den_scale=0.5, leaky_hmm=0.0)
    torch.testing.assert_close(plain, numerator - 0.5 * denominator)
    torch.testing.assert_close(lfmmi_loss(lp, LENS, num, den, den_scale=0.0), numerator)
    leaky = lfmmi_loss(lp, LENS, num, den, den_scale=0.5, leaky_hmm=0.1)
    torch.testing.assert_close(leaky, numerator - 0.5 * denominator_loss(lp, LENS, den, leaky_hmm=0.1))
    assert (leaky > plain).all()  # the leak only adds paths to the denominator
    x = lp.clone().requires_grad_()
    fullsum_loss(x, LENS, *num).sum().backward()
    occ = -x.grad
    with_ce = lfmmi_loss(lp, LENS, num, den, den_scale=0.5, leaky_hmm=0.0, ce_weight=0.2, normalize=True)
    want = (plain + 0.2 * -(occ * lp).sum(dim=(0, 2))) / torch.tensor(LENS, dtype=torch.float64)
    torch.testing.assert_close(with_ce, want)


def test_leaky_denominator_gradient_by_finite_differences():
    lp, num, den = _problem(3)
    x = lp.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v: lfmmi_loss(v, LENS, num, den, den_scale=1.0, leaky_hmm=0.05), (x,), eps=1e-6, atol=1e-6)


def test_denominator_on_the_ops_path_equals_the_shared_kernel():
    lp, _, den = _problem(2)
    torch.testing.assert_close(denominator_loss(lp, LENS, den, backend="ops"),
                               denominator_loss(lp, LENS, den, backend="kernel"))


def test_a_sequence_without_a_numerator_path_gets_no_gradient_at_all():
    lp, num, den = _problem(4)
    lens = [6, 1, 2]  # the third sequence's labels [2, 2, 1] need at least 4 frames
    x = lp.clone().requires_grad_()
    loss = lfmmi_loss(x, lens, num, den)
    assert loss[2] == float("inf") and torch.isfinite(loss[:2]).all()
    loss.sum().backward()
    assert torch.isfinite(x.grad).all() and not x.grad[:, 2].any() and x.grad[:, 0].any()


def test_bad_arguments_are_refused():
    lp, num, den = _problem()
    with pytest.raises(ValueError, match="the denominator must be a DenominatorGraph"):
        lfmmi_loss(lp, LENS, num, num)
    with pytest.raises(ValueError, match="the numerator must be an Automaton"):
        lfmmi_loss(lp, LENS, "x", den)
    with pytest.raises(ValueError, match="the denominator emits 4 labels, log_probs has 3"):
        lfmmi_loss(lp[:, :, :3], LENS, num, den)


def test_tiny_training_run_lowers_the_loss_and_raises_frame_accuracy():
    # labels: symbol * 2 + state (silence off: the emulator's uniform alignment has none)
    lex = Lexicon(alphabet="abcd", states_per_symbol=2, silence=False)
    rng = np.random.default_rng(0)
    orths = [" ".join("".join(rng.choice(list("abcd"), rng.integers(1, 3))) for _ in range(rng.integers(1, 3)))
             for _ in range(8)]
    frames = 24
    align = np.stack([lex.uniform_alignment(o, frames) for o in orths], axis=1).astype(np.int64)  # (T, B)
    num_labels = lex.num_hmm_labels
    proj = torch.from_numpy(rng.normal(size=(num_labels, 16)))
    feats = (torch.nn.functional.one_hot(torch.from_numpy(align), num_labels).double() @ proj
             + 0.8 * torch.from_numpy(rng.normal(size=(frames, len(orths), 16))))
    automata = []
    for o in orths:
        a = lex.hmm_automaton(o)
        automata.append((a.num_states, np.stack([a.edges_from, a.edges_to, a.edges_label]), a.weights))
    e, w, se = merge(automata)
    num = (torch.from_numpy(e.astype(np.int64)), torch.from_numpy(w.astype(np.float64)),
           torch.from_numpy(se.astype(np.int64)))
    units = [[s for word in lex.words(o) for s in word] for o in orths]
    den = denominator_graph(label_ngram(units, 4, order=2), topology="hmm", states_per_unit=2)
    model = torch.nn.Linear(16, num_labels).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    lens = [frames] * len(orths)
    history = []
    for _ in range(40):
        lp = torch.log_softmax(model(feats), -1)
        loss = lfmmi_loss(lp, lens, num, den, normalize=True, ce_weight=0.1).mean()
        accuracy = float((lp.argmax(-1).numpy() == align).mean())
        history.append((float(loss.detach()), accuracy))
        opt.zero_grad()
        loss.backward()
        opt.step()
    (first_loss, first_acc), (last_loss, last_acc) = history[0], history[-1]
    assert last_loss < first_loss - 0.1, history
    assert last_acc > first_acc + 0.3 and last_acc > 0.6, history
