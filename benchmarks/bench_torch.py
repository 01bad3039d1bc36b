"""The PyTorch bridge on the CPU: full-sum (compiled kernel and the device path's torch ops) against
``torch.nn.functional.ctc_loss``, Viterbi, and ``sprint_loss``'s backward.

Sizes are ``(time, labels)`` like the rest of the suite; the batch and the target length follow from them
(:func:`problem`), so the tiny sizes of the suite's smoke test give tiny problems. Skipped without PyTorch.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from . import _extras

#: (time, labels) -> (T, B, V, U) of ``sprint_control.tools.bench_torch.SIZES``
SIZE_LIST = [(100, 40), (500, 80), (1000, 100)]
BATCH = {100: 8, 500: 16, 1000: 32}


def problem(size):
    """(T, B, V, U) for a (time, labels) size: the batch of the tool's table, U = T / 5."""
    max_time, labels = size
    return max_time, BATCH.get(max_time, 2), max(labels, 2), max_time // 5



class _Contenders:
    params = [SIZE_LIST, [1, 2]]
    param_names = ["size", "threads"]
    number = 1
    repeat = (1, 5, 20.0)
    timeout = 600

    def setup(self, size, threads):
        torch = _extras.torch()
        from sprint_control.tools import bench_torch

        self._threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        self.calls = bench_torch.contenders(bench_torch.make_problem(*problem(size)))

    def teardown(self, size, threads):
        _extras.torch().set_num_threads(self._threads)


class FullSum(_Contenders):
    """Forward+backward, CPU float32, one and two threads (torch's and the kernel's)."""

    def time_fullsum_kernel(self, size, threads):
        self.calls["fullsum"]()

    def time_ctc_loss(self, size, threads):
        self.calls["ctc_loss"]()

    def time_viterbi(self, size, threads):
        self.calls["viterbi"]()


class FullSumOps(_Contenders):
    """The device path (per-frame torch ops) forced on the CPU, one thread: what the kernel replaced there."""

    params = [SIZE_LIST[:2]]
    param_names = ["size"]

    def setup(self, size):  # type: ignore[override]
        super().setup(size, 1)

    def teardown(self, size):  # type: ignore[override]
        super().teardown(size, 1)

    def time_fullsum_ops(self, size):
        self.calls["ops"]()


class FullSumRatios(_Contenders):
    """Ratios taken in one run (interleaved rounds, medians): full-sum over ctc_loss on one thread (targets in
    ``sprint_control.tools.bench_torch.TARGETS``: <= 1.1 at T=100, <= 0.7 at T=500), and full-sum on two
    threads over one (``TWO_THREAD_TARGETS``: two threads >= 1.6x faster at T=500, i.e. a ratio <= 0.625, on
    two idle cores)."""

    params = [SIZE_LIST]
    param_names = ["size"]
    rounds = 5
    repeat = 1

    def setup(self, size):  # type: ignore[override]
        super().setup(size, 1)

    def teardown(self, size):  # type: ignore[override]
        super().teardown(size, 1)

    def _medians(self, runs):
        times = {k: [] for k in runs}
        for _ in range(self.rounds):
            for k, run in runs.items():
                t0 = time.perf_counter()
                run()
                times[k].append(time.perf_counter() - t0)
        return {k: statistics.median(v) for k, v in times.items()}

    def track_fullsum_over_ctc_loss(self, size):
        m = self._medians({k: self.calls[k] for k in ("fullsum", "ctc_loss")})
        return m["fullsum"] / m["ctc_loss"]

    track_fullsum_over_ctc_loss.unit = "ratio"

    def track_two_threads_over_one(self, size):
        torch = _extras.torch()

        def on(n):
            def run():
                torch.set_num_threads(n)
                self.calls["fullsum"]()

            return run

        m = self._medians({1: on(1), 2: on(2)})
        torch.set_num_threads(1)
        return m[2] / m[1]

    track_two_threads_over_one.unit = "ratio"


class SprintLossBackward:
    """``sprint_loss`` forward+backward on an in-process pool: unit incoming gradients (``sum``) return the saved
    error signal, scaled ones (``mean``) scale it in place; neither makes a (time, batch, label) tensor."""

    batch_shape = (300, 16, 4501)
    number = 1
    repeat = (1, 5, 20.0)
    timeout = 300

    def setup(self):
        torch = _extras.torch()
        from sprint_control.torch import sprint_loss

        shape = self.batch_shape

        class Pool:
            def get_batch_loss_and_error_signal(self, log_posteriors, seq_lengths, tags):
                return np.zeros(shape[1]), np.full(shape, 1e-3, dtype=np.float32)

        self.pool = Pool()
        self.sprint_loss = sprint_loss
        self.logits = torch.zeros(shape, requires_grad=True)
        self.lens = [shape[0]] * shape[1]
        self.tags = [f"seg{b}" for b in range(shape[1])]

    def _run(self, reduce):
        self.logits.grad = None
        reduce(self.sprint_loss(self.logits, self.lens, self.tags, self.pool)).backward()

    def time_sum(self):
        self._run(lambda loss: loss.sum())

    def time_mean(self):
        self._run(lambda loss: loss.mean())

    def peakmem_mean(self):
        self._run(lambda loss: loss.mean())


class LfMmi:
    """``lfmmi_loss`` forward+backward on the CTC problem of (100, 8, 40, 20), one thread: a unigram (order 1)
    and a bigram CTC denominator over the 39 labels, and the denominator alone shared (one graph for the
    batch, the kernel's shared mode) against the same graph copied once per sequence."""

    params = [[1, 2]]
    param_names = ["order"]
    number = 1
    repeat = (1, 5, 20.0)
    timeout = 300

    def setup(self, order):
        torch = _extras.torch()
        from sprint_control.fsa.denominator import denominator_graph, label_ngram
        from sprint_control.tools import bench_torch
        from sprint_control.torch.lfmmi import _replicated

        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)
        log_probs, lens, targets, automaton = bench_torch.make_problem(100, 8, 40, 20)
        units = (targets.numpy() - 1).tolist()  # labels 1..39, blank 0
        self.den = denominator_graph(label_ngram(units, 39, order=order), topology="ctc", blank=0)
        self.copied = _replicated(self.den, log_probs.shape[1], log_probs.device)
        self.args = (log_probs, lens, automaton)

    def teardown(self, order):
        _extras.torch().set_num_threads(self._threads)

    def time_lfmmi(self, order):
        from sprint_control.torch import lfmmi_loss

        log_probs, lens, automaton = self.args
        lp = log_probs.detach().requires_grad_()
        lfmmi_loss(lp, lens, automaton, self.den).sum().backward()

    def time_denominator_shared(self, order):
        from sprint_control.torch import denominator_loss

        log_probs, lens, _ = self.args
        lp = log_probs.detach().requires_grad_()
        denominator_loss(lp, lens, self.den).sum().backward()

    def time_denominator_copied(self, order):
        from sprint_control.torch import fullsum_loss

        log_probs, lens, _ = self.args
        lp = log_probs.detach().requires_grad_()
        fullsum_loss(lp, lens, *self.copied, backend="kernel").sum().backward()
