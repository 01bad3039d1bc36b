"""Automata without a child: a batch through the emulator's in-process builder (librasr's API) against through
an emulator child, and the cost of handing a batch out as i6_models' ``WeightedFsa`` (int32 index tensors are
shared, int64 ones converted). Skipped without PyTorch."""

from __future__ import annotations

import time

from . import _extras


class AutomataSource:
    """One batch of ``num_segments`` automata through ``automata_for_batch`` without a cache."""

    params = [["in-process", "child"], ["ctc", "fsa"]]
    param_names = ["source", "criterion"]
    num_segments = 100
    number = 1
    repeat = (1, 10, 20.0)
    timeout = 300

    def setup(self, source, criterion):
        _extras.torch()
        from sprint_control.emulator.builder import AllophoneStateFsaBuilder
        from sprint_control.parent import SprintPool, emulator_command
        from sprint_control.tools.bench_automata import emulator_args
        from sprint_control.torch import automata_for_batch

        args = emulator_args(self.num_segments, criterion)
        builder = AllophoneStateFsaBuilder(args)
        self.tags = builder.segment_names
        self.pool = SprintPool(1, emulator_command(), args, timeout=120) if source == "child" else None
        self.source = self.pool if self.pool is not None else builder
        self.automata_for_batch = automata_for_batch
        self.automata_for_batch(self.tags, self.source)  # the child's start is not the figure

    def teardown(self, source, criterion):
        if self.pool is not None:
            self.pool.close()

    def time_batch(self, source, criterion):
        self.automata_for_batch(self.tags, self.source)

    def track_automata_per_second(self, source, criterion):
        t0 = time.perf_counter()
        self.automata_for_batch(self.tags, self.source)
        return self.num_segments / (time.perf_counter() - t0)

    track_automata_per_second.unit = "automata/s"


class WeightedFsaConversion:
    """``as_weighted_fsa`` on an automaton of ``num_edges`` edges: from int32 index tensors nothing is copied
    (constant time), from int64 the edges are converted (linear in the edges)."""

    params = [["int32", "int64"]]
    param_names = ["index_dtype"]
    num_edges = 1_000_000

    def setup(self, index_dtype):
        torch = _extras.torch()
        from sprint_control.torch import Automaton, as_weighted_fsa

        dtype = getattr(torch, index_dtype)
        edges = torch.randint(0, 1000, (4, self.num_edges), dtype=dtype)
        start_end = torch.tensor([[0, 500], [499, 999]], dtype=dtype)
        self.automaton = Automaton(edges, torch.zeros(self.num_edges), start_end)
        self.convert = as_weighted_fsa

    def time_as_weighted_fsa(self, index_dtype):
        self.convert(self.automaton)

    def track_edges_shared(self, index_dtype):
        return float(self.convert(self.automaton).edges.data_ptr() == self.automaton.edges.data_ptr())

    track_edges_shared.unit = "shared (1) or copied (0)"
