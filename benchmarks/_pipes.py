"""Shared pieces of the asv suite: the sizes and the pipe children (from ``sprint_control.tools.bench``).

Every round-trip benchmark starts its child in ``setup`` (not timed) and ends it in ``teardown``;
the child is ``python -m sprint_control.tools.bench --pipe-child`` on two fresh pipes.
"""

from __future__ import annotations

from sprint_control.tools.bench import (
    SIZES,
    PipePeer,
    PipePool,
    expected_error_signal,
    make_posteriors,
    measure_sizes,
    peak_rss_of_roundtrip,
)

__all__ = [
    "SIZES",
    "SIZE_LIST",
    "PipePeer",
    "PipePool",
    "expected_error_signal",
    "make_posteriors",
    "measure_sizes",
    "peak_rss_of_roundtrip",
]

#: asv parameter values: (time, label) float32 sizes.
SIZE_LIST = list(SIZES)
