"""Bad input to the parent's API: each case raises a clear error of the right type before anything
reaches a child (which stays usable), or is handled on purpose (empty batch, zero-length
sequence, NaN/inf passed through unless ``reject_non_finite``). Wire-level bad input is tested in
tests/wire/test_framing.py, tests/wire/test_protocol.py and tests/wire/test_fuzz.py (see docs/reliability.md)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from rel_helpers import HERE

from sprint_control import SprintChildError, SprintPool, SprintRemoteError
from sprint_control.emulator import criteria
from sprint_control.emulator.corpus import synthetic_corpus

pytestmark = pytest.mark.usefixtures("no_leaks")

ECHO_CHILD = [sys.executable, os.path.join(os.path.dirname(HERE), "parent", "fake_child.py")]
CORPUS = synthetic_corpus(8, seed=3, max_frames=30)
EMULATOR = ["--*.corpus.synthetic=8", "--*.corpus.seed=3", "--*.corpus.max-frames=30", "--*.log-level=warning"]


@pytest.fixture(scope="module", params=[1, 2], ids=["v1", "v2"])
def echo_pool(request):
    """One echo child per protocol for the whole module (it answers the posteriors themselves)."""
    with SprintPool(1, ECHO_CHILD, "--fake.echo=true", protocol=request.param) as pool:
        yield pool


def _batch(lengths, labels=4, seed=0):
    return np.random.default_rng(seed).standard_normal((max(lengths, default=0) + 1, len(lengths), labels)).astype(
        np.float32)


def _still_works(pool):
    x = _batch([3, 2], seed=9)
    res = pool.compute(x, [3, 2], ["ok-a", "ok-b"])
    np.testing.assert_array_equal(res.error_signal[:3, 0], x[:3, 0])
    np.testing.assert_array_equal(res.error_signal[:2, 1], x[:2, 1])


BAD_BATCHES = [
    # (description, posteriors, seq_lengths, tags, error type, message)
    ("2-D posteriors", np.zeros((3, 4), np.float32), [3], ["a"], ValueError, r"must be \(time, batch, label\)"),
    ("4-D posteriors", np.zeros((3, 1, 4, 1), np.float32), [3], ["a"], ValueError, r"\(time, batch, label\)"),
    ("complex dtype", np.zeros((3, 1, 4), np.complex64), [3], ["a"], TypeError, "real floating-point.*complex64"),
    ("object dtype", np.zeros((3, 1, 4), object), [3], ["a"], TypeError, "real floating-point.*object"),
    ("text dtype", np.full((3, 1, 4), "x"), [3], ["a"], TypeError, "real floating-point.*<U1"),
    ("bool dtype", np.zeros((3, 1, 4), bool), [3], ["a"], TypeError, "real floating-point.*bool"),
    ("lengths of another batch", np.zeros((3, 2, 4), np.float32), [3], ["a", "b"], ValueError,
     r"seq_lengths must be \(batch,\) = \(2,\)"),
    ("lengths as a matrix", np.zeros((3, 2, 4), np.float32), [[3, 2]], ["a", "b"], ValueError,
     r"seq_lengths must be \(batch,\)"),
    ("length longer than time", np.zeros((3, 2, 4), np.float32), [3, 4], ["a", "b"], ValueError,
     r"seq_lengths must lie in \[0, 3\], got \[3, 4\]"),
    ("negative length", np.zeros((3, 2, 4), np.float32), [3, -1], ["a", "b"], ValueError,
     r"seq_lengths must lie in \[0, 3\], got \[3, -1\]"),
    ("fractional length", np.zeros((3, 2, 4), np.float32), [2.5, 1], ["a", "b"], ValueError,
     "whole numbers of frames"),
    ("too few tags", np.zeros((3, 2, 4), np.float32), [3, 2], ["a"], ValueError, "got 1 tags for a batch of 2"),
    ("too many tags", np.zeros((3, 2, 4), np.float32), [3, 2], ["a", "b", "c"], ValueError,
     "got 3 tags for a batch of 2"),
    ("no tags", np.zeros((3, 2, 4), np.float32), [3, 2], None, ValueError, "tags .* are required"),
    ("tags matrix of another batch", np.zeros((3, 2, 4), np.float32), [3, 2], np.zeros((3, 5), np.uint8),
     ValueError, "got 3 tags for a batch of 2"),
]


@pytest.mark.parametrize("case", BAD_BATCHES, ids=[c[0] for c in BAD_BATCHES])
def test_bad_batch_is_refused_before_the_child(echo_pool, case):
    _, post, lengths, tags, exc_type, message = case
    done = echo_pool.instances[0].segments_done
    with pytest.raises(exc_type, match=message):
        echo_pool.compute(post, lengths, tags)
    assert echo_pool.instances[0].segments_done == done  # nothing was sent
    _still_works(echo_pool)


BAD_SEGMENTS = [
    ("3-D posteriors", 3, np.zeros((3, 4, 1), np.float32), ValueError, r"\(time, label\) matrix"),
    ("complex dtype", 3, np.zeros((3, 4), np.complex128), TypeError, "real floating-point.*complex128"),
    ("seg_len disagrees", 5, np.zeros((3, 4), np.float32), ValueError, "seg_len 5 does not match .* 3 frames"),
    ("zero-length segment", 0, np.zeros((0, 4), np.float32), ValueError, "has no frames"),
]


@pytest.mark.parametrize("case", BAD_SEGMENTS, ids=[c[0] for c in BAD_SEGMENTS])
def test_bad_segment_is_refused_by_the_instance(echo_pool, case):
    _, seg_len, post, exc_type, message = case
    inst = echo_pool.instances[0]
    with pytest.raises(exc_type, match=message):
        inst.get_loss_and_error_signal__send("seg", seg_len, post)
    assert not inst.is_calculating and inst.alive
    _still_works(echo_pool)


def test_empty_name_is_refused(echo_pool):
    with pytest.raises(ValueError, match="non-empty segment name"):
        echo_pool.instances[0].get_loss_and_error_signal("", np.zeros((2, 4), np.float32))


def test_empty_batch_needs_no_child(echo_pool):
    done = echo_pool.instances[0].segments_done
    res = echo_pool.compute(np.zeros((5, 0, 4), np.float32), [], [])
    assert res.loss.shape == (0,) and res.error_signal.shape == (5, 0, 4)
    res = echo_pool.compute(np.zeros((0, 2, 4), np.float32), [0, 0], ["a", "b"])  # no frames at all
    assert res.loss.tolist() == [0.0, 0.0] and res.error_signal.shape == (0, 2, 4)
    assert echo_pool.instances[0].segments_done == done


@pytest.mark.parametrize("protocol", [1, 2])
def test_zero_length_sequence_in_a_batch_of_the_real_module(protocol):
    """RASR computes nothing on an empty segment: the pool answers it with loss 0 and no error
    signal itself, and the other sequences get the emulator's criterion."""
    segs = CORPUS.segments[:2]
    labels = criteria.num_labels("ctc")
    x = np.random.default_rng(2).standard_normal((40, 3, labels)).astype(np.float32)
    x -= np.log(np.exp(x).sum(-1, keepdims=True))
    lengths = [segs[0].num_frames, 0, segs[1].num_frames]
    tags = [segs[0].name, "not/even/in/the/corpus", segs[1].name]
    with SprintPool(2, sprint_args=EMULATOR, protocol=protocol) as pool:
        res = pool.compute(x, lengths, tags)
    assert res.loss[1] == 0.0 and not res.error_signal[:, 1].any()
    for b in (0, 2):
        seg = segs[b // 2]
        loss, err = criteria.compute_criterion("ctc", x[: seg.num_frames, b], orthography=seg.orthography)
        assert res.loss[b] == pytest.approx(loss, rel=1e-4)
        np.testing.assert_allclose(res.error_signal[: seg.num_frames, b], err, atol=1e-4)


def test_non_finite_posteriors_pass_through_by_default(echo_pool):
    x = _batch([3, 2])
    x[1, 0, 2] = np.nan
    x[0, 1, 0] = np.inf
    res = echo_pool.compute(x, [3, 2], ["a", "b"])  # the echo child returns what it got
    assert np.isnan(res.error_signal[1, 0, 2]) and res.error_signal[0, 1, 0] == np.inf


@pytest.mark.parametrize("protocol", [1, 2])
def test_reject_non_finite_names_the_segment(protocol):
    with SprintPool(1, ECHO_CHILD, "--fake.echo=true", protocol=protocol, reject_non_finite=True) as pool:
        inst = pool.instances[0]
        x = _batch([3, 2])
        x[2, 1, 1] = -np.inf  # past the 2 frames of "b": never sent, so not looked at
        x[2, 0, 3] = np.nan  # the last of the 3 frames of "a"
        message = r"segment 'a' hold 1 non-finite values \(first: nan at frame 2, label 3\)"
        with pytest.raises(ValueError, match=message):
            pool.compute(x, [3, 2], ["a", "b"])
        x[2, 0, 3] = 0.0
        res = pool.compute(x, [3, 2], ["a", "b"])
        np.testing.assert_array_equal(res.error_signal[:2, 1], x[:2, 1])
        assert inst.segments_done == 2  # only the good batch reached the child
        with pytest.raises(ValueError, match=r"segment 'c' hold 2 non-finite"):
            inst.get_loss_and_error_signal("c", np.array([[0, np.inf], [np.nan, 1]], np.float32))
        assert not inst.is_calculating and inst.alive and inst.segments_done == 2


@pytest.mark.parametrize("protocol", [1, 2])
def test_wrong_label_count_reaches_the_parent_with_rasrs_reason(protocol):
    seg = CORPUS.segments[3]
    x = np.log(np.full((seg.num_frames, 1, 5), 1 / 5, np.float32))
    with SprintPool(1, sprint_args=EMULATOR, protocol=protocol) as pool:
        with pytest.raises(SprintRemoteError) as info:
            pool.compute(x, [seg.num_frames], [seg.name])
        assert "criterion 'ctc' with this lexicon has 11 labels, but the posteriors have 5" in str(
            info.value).splitlines()[0]
        good = np.log(np.full((seg.num_frames, 1, 11), 1 / 11, np.float32))
        res = pool.compute(good, [seg.num_frames], [seg.name])
        assert np.isfinite(res.loss[0])


@pytest.mark.parametrize("protocol", [1, 2])
def test_wrong_label_count_in_rasrs_own_trainer_then_the_next_batch(protocol):
    """Flow B: the PythonLayer refuses posteriors of another width; RASR ends on that (a critical
    error), the parent says why, and the pool restarts the child for the next batch."""
    seg = CORPUS.segments[3]
    args = EMULATOR + ["--*.action=supervised-segmentwise-training"]
    with SprintPool(1, sprint_args=args, protocol=protocol) as pool:
        bad = np.log(np.full((seg.num_frames, 1, 5), 1 / 5, np.float32))
        with pytest.raises((SprintRemoteError, SprintChildError)) as info:
            pool.compute(bad, [seg.num_frames], [seg.name])
        assert "the PythonLayer has 11 outputs, the parent's posteriors 5 labels" in str(info.value).splitlines()[0]
        good = np.log(np.full((seg.num_frames, 1, 11), 1 / 11, np.float32))
        res = pool.compute(good, [seg.num_frames], [seg.name])
        assert np.isfinite(res.loss[0]) and pool.instances[0].restarts == 1
