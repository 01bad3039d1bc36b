"""The PyTorch bridge against the RASR emulator: its criteria in-process, then real pools of emulator children."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
from support import extra_reason

torch = pytest.importorskip("torch", reason=extra_reason("torch"))

from torch_testlib import FakePool  # noqa: E402

from sprint_control.emulator import criteria  # noqa: E402
from sprint_control.emulator.corpus import synthetic_corpus  # noqa: E402
from sprint_control.torch import (  # noqa: E402
    AutomataCache,
    automata_for_batch,
    fullsum_loss,
    fullsum_loss_for_batch,
    sprint_loss,
)

N_SEGMENTS = 6
SEED = 3
CORPUS = synthetic_corpus(N_SEGMENTS, seed=SEED, min_frames=12, max_frames=30, max_symbols=3)


def v1_names(*modules):
    """(module, name) of every v1 codec function the parent's links call, where they look it up."""
    found = [(m, n) for m in modules for n in ("encode_v1", "unpickle_v1") if hasattr(m, n)]
    assert found, "the links no longer name the v1 codec: update this check"
    return found


def _batch(segs, num_labels, seed=0, dtype=torch.float32):
    """Padded features (T, B, F), lengths, tags and random logits (T, B, L) for a list of segments."""
    lens = [s.num_frames for s in segs]
    t_max = max(lens)
    feats = np.zeros((t_max, len(segs), CORPUS.feature_dim), np.float32)
    for b, s in enumerate(segs):
        feats[: s.num_frames, b] = s.features
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(t_max, len(segs), num_labels, generator=g, dtype=dtype)
    return torch.from_numpy(feats), lens, [s.name for s in segs], logits


def _emulator_pool(criterion, dtype=np.float64):
    """An in-process pool on the emulator's criteria; float64 so finite differences are meaningful."""

    def crit(name, lp):
        loss, tgt = criteria.targets(criterion, lp, orthography=CORPUS.get(name).orthography)
        if loss is None:
            return None, None
        return loss, np.exp(np.asarray(lp, np.float64)) - tgt

    def aut(name):
        n, _, e, w = criteria.automaton(criterion, CORPUS.get(name).orthography).export()
        return n, e.reshape(3, -1), w

    return FakePool(crit, aut, dtype=dtype)


# -- in process: the emulator's criteria ------------------------------------------------------------------


@pytest.mark.parametrize("criterion", ["ctc", "fsa"])
def test_gradcheck_sprint_loss_on_the_emulators_criterion(criterion):
    segs = CORPUS.segments[:2]
    _, lens, tags, base = _batch(segs, criteria.num_labels(criterion), dtype=torch.float64)
    pool = _emulator_pool(criterion)
    # Finite differences along 24 fixed random directions of the logits (one per input of a (time x label)
    # matrix would be thousands of criterion calls): checks J @ P against the error signal's P^T-projection.
    g = torch.Generator().manual_seed(9)
    directions = torch.randn(base.numel(), 24, generator=g, dtype=torch.float64)
    x = torch.zeros(24, dtype=torch.float64, requires_grad=True)

    def loss_of(v):
        logits = base + (directions @ v).view_as(base)
        return sprint_loss(logits, lens, tags, pool, posterior_dtype=torch.float64)

    assert torch.isfinite(loss_of(x)).all()
    assert torch.autograd.gradcheck(loss_of, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("criterion", ["ctc", "fsa"])
def test_fullsum_over_exported_automata_equals_the_emulators_criterion(criterion):
    # Two implementations of one quantity: the emulator's forward-backward per segment, and the bridge's
    # batched torch forward-backward over the automata the emulator exports.
    segs = CORPUS.segments
    _, lens, tags, logits = _batch(segs, criteria.num_labels(criterion), seed=1, dtype=torch.float64)
    pool = _emulator_pool(criterion)
    logits.requires_grad_()
    ours = fullsum_loss_for_batch(logits, lens, tags, pool)
    theirs = sprint_loss(logits, lens, tags, pool, posterior_dtype=torch.float64)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    (g_theirs,) = torch.autograd.grad(theirs.sum(), logits)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-7, atol=1e-9)


# -- real pools of emulator children ----------------------------------------------------------------------


def _sprint_pool(criterion="ctc", instances=2, **kwargs):
    from sprint_control.parent import SprintPool

    args = [
        f"--*.corpus.synthetic={N_SEGMENTS}",
        f"--*.corpus.seed={SEED}",
        "--*.corpus.min-frames=12",
        "--*.corpus.max-frames=30",
        "--*.corpus.max-symbols=3",
        f"--*.training-criterion={criterion}",
        "--*.log-level=warning",
    ]
    return SprintPool(instances, sprint_args=args, timeout=60, start_timeout=60, **kwargs)


@pytest.fixture(scope="module")
def ctc_pool():
    pool = _sprint_pool("ctc")
    try:
        yield pool
    finally:
        pool.close()


def test_sprint_loss_through_children_matches_the_criterion(ctc_pool, monkeypatch):
    assert ctc_pool.protocol == 2
    # No pickle on the path once the link speaks v2.
    from sprint_control.wire import link, parent_link

    def no_pickle(*a, **k):
        raise AssertionError("pickle used on the loss path")

    for mod, name in [(pickle, "dumps"), (pickle, "loads"), *v1_names(link, parent_link)]:
        monkeypatch.setattr(mod, name, no_pickle)
    _, lens, tags, logits = _batch(CORPUS.segments, criteria.num_labels("ctc"), seed=2)
    logits.requires_grad_()
    loss = sprint_loss(logits, lens, tags, ctc_pool)
    scale = torch.linspace(0.5, 2.0, len(tags))
    (loss * scale).sum().backward()
    monkeypatch.undo()
    ref = _emulator_pool("ctc", np.float32)
    ref_logits = logits.detach().clone().requires_grad_()
    ref_loss = sprint_loss(ref_logits, lens, tags, ref)
    (ref_loss * scale).sum().backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(logits.grad, ref_logits.grad, rtol=1e-5, atol=1e-5)
    for b, t in enumerate(lens):
        assert torch.all(logits.grad[t:, b] == 0)


def test_sprint_loss_over_shared_memory(monkeypatch):
    # With the pool's shared region, log_softmax lands in the region and the children read it in place.
    from sprint_control.wire import link, parent_link

    _, lens, tags, logits = _batch(CORPUS.segments, criteria.num_labels("ctc"), seed=5)
    ref_logits = logits.clone().requires_grad_()
    ref_loss = sprint_loss(ref_logits, lens, tags, _emulator_pool("ctc", np.float32))
    ref_loss.sum().backward()
    with _sprint_pool("ctc", shm=True, shm_inline_below=0) as pool:  # even these small matrices via the region
        assert pool.protocol == 2 and pool.uses_shared_memory
        sent = []
        inner = pool.get_batch_loss_and_error_signal

        def spy(log_posteriors, seq_lengths, tags):
            sent.append(log_posteriors)
            return inner(log_posteriors, seq_lengths, tags)

        monkeypatch.setattr(pool, "get_batch_loss_and_error_signal", spy)
        for mod, name in [(pickle, "dumps"), (pickle, "loads"), *v1_names(link, parent_link)]:
            monkeypatch.setattr(mod, name, lambda *a, **k: pytest.fail("pickle used on the loss path"))
        logits.requires_grad_()
        loss = sprint_loss(logits, lens, tags, pool)
        loss.sum().backward()
        assert pool.region.locate(sent[0][:, 0]) is not None  # the batch buffer lives in the region
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(logits.grad, ref_logits.grad, rtol=1e-5, atol=1e-5)


def test_automata_through_children_equal_the_numpy_api_and_feed_the_fullsum(ctc_pool):
    tags = [s.name for s in CORPUS.segments]
    ref = ctc_pool.get_automata_for_batch(tags)
    cache = AutomataCache()
    for index_dtype in (torch.int64, torch.int32):
        aut = automata_for_batch(tags, ctc_pool, cache=cache, index_dtype=index_dtype)
        assert aut.edges.dtype == index_dtype
        np.testing.assert_array_equal(aut.edges.numpy(), ref[0].astype(np.int64))
        np.testing.assert_array_equal(aut.weights.numpy(), ref[1])
        np.testing.assert_array_equal(aut.start_end_states.numpy(), ref[2].astype(np.int64))
    assert cache.misses == len(tags) and cache.hits == len(tags)
    # RASR's automata through the torch full-sum give RASR's own criterion.
    _, lens, tags, logits = _batch(CORPUS.segments, criteria.num_labels("ctc"), seed=4)
    fs = fullsum_loss(torch.log_softmax(logits, -1), lens, *automata_for_batch(tags, ctc_pool, cache=cache))
    torch.testing.assert_close(fs, sprint_loss(logits, lens, tags, ctc_pool), rtol=1e-4, atol=1e-3)


def test_concurrent_losses_from_two_threads(ctc_pool):
    n_labels = criteria.num_labels("ctc")
    jobs = [_batch(CORPUS.segments[i::2], n_labels, seed=10 + i) for i in range(2)]
    expected = [sprint_loss(lg, ln, tg, _emulator_pool("ctc", np.float32)) for _, ln, tg, lg in jobs]
    results, errors = [None, None], []

    def run(i):
        try:
            _, ln, tg, lg = jobs[i]
            for _ in range(3):
                results[i] = sprint_loss(lg, ln, tg, ctc_pool)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors and not any(th.is_alive() for th in threads)
    for got, exp in zip(results, expected):
        torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("protocol, shm", [(1, False), (2, False), (2, True)])
def test_three_step_training_loop_through_the_emulator(protocol, shm):
    # A tiny model trained by RASR's (emulated) criterion: the loss of the batch falls step by step.
    torch.manual_seed(0)
    n_labels = criteria.num_labels("ctc")
    feats, lens, tags, _ = _batch(CORPUS.segments, n_labels)
    model = torch.nn.Linear(CORPUS.feature_dim, n_labels)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    with _sprint_pool("ctc", protocol=protocol, shm=shm) as pool:
        assert pool.protocol == protocol and pool.uses_shared_memory == shm
        for _ in range(3):
            loss = sprint_loss(model(feats), lens, tags, pool)
            assert torch.isfinite(loss).all()
            total = loss.sum() / sum(lens)
            opt.zero_grad()
            total.backward()
            opt.step()
            losses.append(total.item())
    assert losses[0] > losses[1] > losses[2], losses


def test_the_documented_example_runs_and_its_loss_falls(capsys):
    import pathlib
    import re

    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "torch.md").read_text()
    example = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    assert len(example.strip().splitlines()) <= 15
    exec(compile(example, "docs/torch.md", "exec"), {})
    losses = [float(line.split()[1]) for line in capsys.readouterr().out.splitlines()]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2], losses


def _returnn_tags(tags):
    """RETURNN's tag array: uint8 (batch, max_len), each name's UTF-8 bytes zero-padded."""
    raw = [t.encode("utf-8") for t in tags]
    arr = np.zeros((len(raw), max(map(len, raw)) + 3), np.uint8)
    for b, r in enumerate(raw):
        arr[b, : len(r)] = np.frombuffer(r, np.uint8)
    return arr


def test_uint8_tag_array_names_the_segments(ctc_pool):
    # The bridge decodes RETURNN's uint8 tag array as the pool does (not as names like '[115 101 ...]').
    _, lens, tags, logits = _batch(CORPUS.segments, criteria.num_labels("ctc"), seed=7)
    as_bytes = _returnn_tags(tags)
    torch.testing.assert_close(sprint_loss(logits, lens, as_bytes, ctc_pool), sprint_loss(logits, lens, tags, ctc_pool))
    ours, theirs = automata_for_batch(as_bytes, ctc_pool), automata_for_batch(tags, ctc_pool)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
