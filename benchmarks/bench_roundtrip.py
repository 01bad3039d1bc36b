"""Round trips between two processes: v2, v1 (RETURNN-style pickle) and bare os.writev/readv over real
pipes, and v2 over shared memory (ordinary arrays, and buffers allocated in the region).

A round trip: the parent sends (time, label) float32 posteriors, the child answers with a same-shape
error signal derived from them in place, the parent has it as an ndarray. The ``track_*`` ratios are
measured inside one process run, interleaving the transports, so they hold on a noisy machine.
"""

from __future__ import annotations

import numpy as np

from ._pipes import SIZE_LIST, PipePeer, expected_error_signal, make_posteriors, measure_sizes, peak_rss_of_roundtrip


class RoundTrip:
    """Time of one round trip, per size and transport."""

    params = [SIZE_LIST, ["v2", "v1", "bare", "shm", "shm-region"]]
    param_names = ["size", "transport"]
    number = 1
    repeat = (1, 5, 10.0)
    warmup_time = 0
    timeout = 600

    def setup(self, size, transport):
        self.post = make_posteriors(*size)
        self.peer = PipePeer(transport)
        _, err = self.peer.roundtrip(self.post)  # warm-up, and a check that the answer is right
        if not np.array_equal(err, expected_error_signal(self.post)):
            self.peer.close()
            raise AssertionError(f"{transport}: wrong error signal")

    def teardown(self, size, transport):
        self.peer.close()

    def time_roundtrip(self, size, transport):
        self.peer.roundtrip(self.post)

    def peakmem_roundtrip(self, size, transport):
        self.peer.roundtrip(self.post)


class RoundTripRatios:
    """Segments/s ratios measured side by side in one run (medians of interleaved round trips)."""

    params = [SIZE_LIST]
    param_names = ["size"]
    number = 1
    repeat = 1
    timeout = 900
    #: interleaved round trips per transport
    rounds = 5

    def setup(self, size):
        self.peers = {t: PipePeer(t) for t in ("v2", "v1", "bare", "shm", "shm-region")}

    def teardown(self, size):
        for p in self.peers.values():
            p.close()

    def _row(self, size, transports):
        return measure_sizes([size], transports, repeats=self.rounds, peers=self.peers)[0]

    def track_v2_over_bare(self, size):
        return self._row(size, ("v2", "bare"))["v2_over_bare"]

    track_v2_over_bare.unit = "ratio"

    def track_v2_over_v1(self, size):
        return self._row(size, ("v2", "v1"))["v2_over_v1"]

    track_v2_over_v1.unit = "ratio"

    def track_shm_over_v2(self, size):
        return self._row(size, ("v2", "shm"))["shm_over_v2"]

    track_shm_over_v2.unit = "ratio"

    def track_shm_region_over_v2(self, size):
        return self._row(size, ("v2", "shm-region"))["shm-region_over_v2"]

    track_shm_region_over_v2.unit = "ratio"

    def track_shm_region_time_over_two_memcpy(self, size):
        """A round trip with the parent's buffers in the region, in units of two plain copies."""
        return self._row(size, ("shm-region",))["shm-region_over_two_memcpy"]

    track_shm_region_time_over_two_memcpy.unit = "ratio"


class ParentPeakRss:
    """The parent's peak RSS during one v2 round trip (a fresh process), above its idle state, in MiB;
    and what that leaves beyond the input and output arrays."""

    params = [SIZE_LIST]
    param_names = ["size"]
    number = 1
    repeat = 1
    timeout = 600

    def track_growth_mib(self, size):
        return peak_rss_of_roundtrip(*size, "v2")["growth_bytes"] / 2**20

    track_growth_mib.unit = "MiB"

    def track_overhead_beyond_arrays_mib(self, size):
        return peak_rss_of_roundtrip(*size, "v2")["overhead_bytes"] / 2**20

    track_overhead_beyond_arrays_mib.unit = "MiB"
