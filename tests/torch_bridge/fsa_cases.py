"""Random merged automata as torch tensors (general automata: unreachable finals, dead ends, shuffled edges),
for the device paths' tests."""

from __future__ import annotations

import numpy as np
import torch


def random_batch(seed: int, batch: int = 4, num_labels: int = 3, max_time: int = 5):
    """``(log_probs (T, B, V) float32, lens, edges (4, E), weights, start_end (2, B))``."""
    rng = np.random.default_rng(seed)
    edges, weights, start_end, offset = [], [], [], 0
    for b in range(batch):
        n = int(rng.integers(1, 5))
        k = int(rng.integers(1, 10))
        src, dst = rng.integers(0, n, k) + offset, rng.integers(0, n, k) + offset
        edges.append(np.stack([src, dst, rng.integers(0, num_labels, k), np.full(k, b)]))
        weights.append(rng.uniform(0, 2, k))
        start_end.append((offset, offset + n - 1))
        offset += n
    e = np.concatenate(edges, axis=1)
    perm = rng.permutation(e.shape[1])
    lp = torch.log_softmax(torch.from_numpy(rng.normal(size=(max_time, batch, num_labels)) * 2), -1).float()
    return (lp, torch.from_numpy(rng.integers(0, max_time + 1, batch)), torch.from_numpy(e[:, perm]),
            torch.from_numpy(np.concatenate(weights)[perm]).float(), torch.from_numpy(np.array(start_end).T.copy()))
