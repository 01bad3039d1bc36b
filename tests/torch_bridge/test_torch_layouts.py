"""The content-keyed cache of regrouped automata the full-sum paths share: a hit needs equal edges, new
weights on the same edges are applied, and a cached layout gives the same losses as a fresh one."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='needs the torch extra: pip install "sprint_control[torch]"')

from sprint_control import fsa  # noqa: E402
from sprint_control.tools.bench_torch import make_problem  # noqa: E402
from sprint_control.torch._layouts import LayoutCache  # noqa: E402


def _numpy_problem(seed=0):
    lp, lens, _, (e, w, se) = make_problem(20, 3, 5, 4, seed=seed)
    return lp.numpy(), lens.numpy(), e.numpy(), w.numpy().astype(np.float64), se.numpy()


def test_hits_need_equal_edges_and_new_weights_are_applied():
    cache = LayoutCache(maxsize=2)
    lp, lens, e, w, se = _numpy_problem()
    first = cache.get(lp.shape, lens, e, w, se)
    assert cache.get(lp.shape, lens, e.copy(), w, se) is first and cache.hits == 1
    other = e.copy()
    other[2, 0] = (other[2, 0] + 1) % lp.shape[2]  # same shapes, another emission: a miss
    changed = cache.get(lp.shape, lens, other, w, se)
    assert cache.misses == 2 and not np.array_equal(changed.in_col, first.in_col)
    w2 = np.random.default_rng(1).uniform(0, 1, w.shape)
    with_w2 = cache.get(lp.shape, lens, e, w2, se)
    fresh = fsa.batch_layout(lp.shape, lens, e, w2, se)
    np.testing.assert_array_equal(with_w2.in_w, fresh.in_w)
    np.testing.assert_array_equal(with_w2.out_w, fresh.out_w)
    np.testing.assert_array_equal(
        fsa.fullsum(lp, lens, e, w2, se, layout=with_w2), fsa.fullsum(lp, lens, e, w2, se))
    cache.get(lp.shape, lens[::-1].copy(), e, w, se)  # a third key: the least recently used one goes
    assert len(cache._entries) == 2


def test_a_cached_layout_still_checks_the_lengths_against_time():
    cache = LayoutCache()
    lp, lens, e, w, se = _numpy_problem()
    cache.get(lp.shape, lens, e, w, se)
    with pytest.raises(ValueError, match="seq_lengths must lie in"):
        cache.get((int(lens.max()) - 1,) + lp.shape[1:], lens, e, w, se)


def test_big_automata_are_not_kept(monkeypatch):
    cache = LayoutCache()
    monkeypatch.setattr(LayoutCache, "max_edges", 10)
    lp, lens, e, w, se = _numpy_problem()
    first = cache.get(lp.shape, lens, e, w, se)
    assert cache.get(lp.shape, lens, e, w, se) is not first and not cache._entries
