"""Type stub of the compiled full-sum kernel (``_fsa.pyx``); the numpy twin ``_fsa_py`` has the same API."""

from typing import Literal, Optional

import numpy as np
import numpy.typing as npt

from ._fsa_py import BatchLayout as BatchLayout

IMPLEMENTATION: Literal["cython"]

def batch_layout(
    shape: tuple[int, ...],
    seq_lengths: npt.ArrayLike,
    edges: npt.ArrayLike,
    weights: npt.ArrayLike,
    start_end_states: npt.ArrayLike,
    ranges: Optional[npt.ArrayLike] = ...,
) -> BatchLayout: ...
def shared_layout(
    shape: tuple[int, ...],
    seq_lengths: npt.ArrayLike,
    edges: npt.ArrayLike,
    weights: npt.ArrayLike,
    start_end_states: npt.ArrayLike,
) -> BatchLayout: ...
def fullsum(
    log_probs: npt.ArrayLike,
    seq_lengths: npt.ArrayLike,
    edges: npt.ArrayLike,
    weights: npt.ArrayLike,
    start_end_states: npt.ArrayLike,
    *,
    out: Optional[np.ndarray] = ...,
    scale: Optional[npt.ArrayLike] = ...,
    edge_out: Optional[np.ndarray] = ...,
    num_threads: int = ...,
    ranges: Optional[npt.ArrayLike] = ...,
    layout: Optional[BatchLayout] = ...,
    shared: bool = ...,
    leak: float = ...,
    leak_init: Optional[npt.ArrayLike] = ...,
) -> np.ndarray: ...
def forward_backward(
    log_probs: npt.ArrayLike,
    num_states: int,
    edges_from: npt.ArrayLike,
    edges_to: npt.ArrayLike,
    edges_label: npt.ArrayLike,
    weights: npt.ArrayLike,
    start: int,
    final: int,
) -> tuple[float, Optional[np.ndarray]]: ...
def viterbi(
    log_probs: npt.ArrayLike,
    seq_lengths: npt.ArrayLike,
    edges: npt.ArrayLike,
    weights: npt.ArrayLike,
    start_end_states: npt.ArrayLike,
    *,
    num_threads: int = ...,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
