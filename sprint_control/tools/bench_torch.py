"""Full-sum over RASR-style automata against ``torch.nn.functional.ctc_loss``, on one and two threads.

``python -m sprint_control.tools.bench_torch [--sizes T,B,V,U ...] [--threads 1 2] [--repeats N] [--json FILE]``
(``sprint-control bench --torch ...`` where the command forwards to :func:`main`). The problem is the one of the
issue that asked for the kernel: CTC-topology automata (one initial state, the blank/label alternation, one final
state; see :func:`ctc_automaton`), random float32 log-posteriors of ``B`` sequences with lengths spread from ``T``
down to ``3T/4``, ``U`` random labels each. Every contender runs forward and backward on the same tensors; the
rounds are interleaved (one call of each per round) and the medians reported, with the ratios taken in the same
run. Contenders: ``fullsum`` (the compiled kernel, the CPU path of ``fullsum_loss``), ``ops`` (the device path's
per-frame torch ops, forced on the CPU; one thread only, and only up to ``OPS_LIMIT``), ``ctc_loss`` and
``viterbi`` (``fullsum_viterbi``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Callable, Optional

import numpy as np

from ._cli import OneLineParser, parse_torch_bench_args, positive_int

PROG = "sprint-control bench --torch"
#: (T, B, V, U): frames, sequences, labels (blank included), target labels per sequence
SIZES = ((100, 8, 40, 20), (500, 16, 80, 100), (1000, 32, 100, 200))
CONTENDERS = ("fullsum", "ops", "ctc_loss", "viterbi")
#: the ops path keeps (T, S, W) slot scores: skipped above this many frames x states by default
OPS_LIMIT = 5_000_000
#: the kernel's targets, one thread, forward+backward: full-sum / ctc_loss at most this, same run
TARGETS = {(100, 8, 40, 20): 1.1, (500, 16, 80, 100): 0.7}
#: and two threads at least this much faster than one at T=500 (on two idle cores)
TWO_THREAD_TARGETS = {(500, 16, 80, 100): 1.6}


def ctc_automaton(labels: Sequence[int], blank: int = 0) -> tuple[int, np.ndarray]:
    """CTC as an automaton of the merged layout's kind: ``(num_states, edges (3, e) from/to/emission)``.

    State 0 is initial; position ``p`` of ``blank y1 blank y2 ... blank`` is state ``p + 1``; each frame moves
    along one edge and emits the label of the position it enters (loop, next, or skip over a blank between
    different labels). The last state is the single final state: the edges into the last label and the trailing
    blank are repeated into it.
    """
    u = len(labels)
    npos = 2 * u + 1
    lab = np.full(npos, blank, dtype=np.int64)
    lab[1::2] = labels
    pos = np.arange(npos)
    src_parts = [np.zeros(min(2, npos), np.int64), pos + 1, pos[:-1] + 1]
    dst_parts = [np.arange(1, min(2, npos) + 1), pos + 1, pos[1:] + 1]
    skip = pos[1:-2:2] if u > 1 else pos[:0]
    skip = skip[lab[skip + 2] != lab[skip]]
    src_parts.append(skip + 1)
    dst_parts.append(skip + 3)
    src, dst = np.concatenate(src_parts), np.concatenate(dst_parts)
    ends = np.isin(dst, [npos, npos - 1] if u else [npos])
    final = npos + 1
    emission = lab[dst - 1]
    edges = np.stack([np.r_[src, src[ends]], np.r_[dst, np.full(int(ends.sum()), final)],
                      np.r_[emission, emission[ends]]])
    return final + 1, edges


def make_problem(max_time: int, batch: int, num_labels: int, target_len: int, seed: int = 0):
    """``(log_probs (T, B, V) float32, lens, targets (B, U), automaton tensors (edges, weights, start_end))``."""
    import torch

    rng = np.random.default_rng(seed)
    lens = np.linspace(max_time, max(1, (3 * max_time) // 4), batch).round().astype(np.int64)
    target_len = min(target_len, int(lens.min()) // 2) if num_labels > 1 else 0
    targets = rng.integers(1, max(num_labels, 2), size=(batch, target_len))
    parts: list[np.ndarray] = []
    start_end, offset = [], 0
    for b in range(batch):
        n, e = ctc_automaton(targets[b].tolist())
        parts.append(np.vstack([e[:2] + offset, e[2:], np.full((1, e.shape[1]), b)]))
        start_end.append((offset, offset + n - 1))
        offset += n
    edges = np.concatenate(parts, axis=1)
    gen = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(torch.randn(max_time, batch, num_labels, generator=gen), -1)
    automaton = (torch.from_numpy(edges), torch.zeros(edges.shape[1]), torch.from_numpy(np.array(start_end).T.copy()))
    return log_probs, torch.from_numpy(lens), torch.from_numpy(targets), automaton


def contenders(problem) -> dict[str, Callable[[], None]]:
    """One forward+backward call per contender on the same problem (viterbi: its forward)."""
    import torch

    from ..torch import fullsum_loss, fullsum_viterbi

    log_probs, lens, targets, (edges, weights, start_end) = problem
    target_lens = torch.full((lens.shape[0],), targets.shape[1], dtype=torch.long)

    def fullsum(backend: str) -> Callable[[], None]:
        def run() -> None:
            lp = log_probs.detach().requires_grad_()
            fullsum_loss(lp, lens, edges, weights, start_end, backend=backend).sum().backward()

        return run

    def ctc() -> None:
        lp = log_probs.detach().requires_grad_()
        torch.nn.functional.ctc_loss(lp, targets, lens, target_lens, reduction="sum").backward()

    def viterbi() -> None:
        fullsum_viterbi(log_probs, lens, edges, weights, start_end)

    return {"fullsum": fullsum("kernel"), "ops": fullsum("ops"), "ctc_loss": ctc, "viterbi": viterbi}


#: ``wall``: elapsed time; ``process``: CPU time of the whole process (all threads): on a loaded machine the
#: one-thread figures it gives do not include the time spent waiting for a core
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def measure(size: Sequence[int], threads: Sequence[int], repeats: int, names: Sequence[str] = CONTENDERS,
            clock: str = "wall") -> dict:
    """Median seconds per thread count and contender (``{threads: {name: seconds}}``). The rounds interleave
    everything: each round runs every contender on every thread count (torch's and the kernel's), so a
    change of the machine's load hits all of them alike. ``ops`` runs on one thread only (on several CPU
    threads it measures torch's scheduling of tiny parallel ops, not the path)."""
    import torch

    before = torch.get_num_threads()
    calls = contenders(make_problem(*size))
    plan = [(n, k) for n in threads for k in names if k in calls and (k != "ops" or n == 1)]
    times: dict = {(n, k): [] for n, k in plan}
    now = CLOCKS[clock]
    try:
        for n, k in plan:  # warm-up: first-call allocations and thread start-up
            torch.set_num_threads(n)
            calls[k]()
        for _ in range(repeats):
            for n, k in plan:
                torch.set_num_threads(n)
                t0 = now()
                calls[k]()
                times[(n, k)].append(now() - t0)
    finally:
        torch.set_num_threads(before)
    out: dict = {n: {} for n in threads}
    for (n, k), v in times.items():
        out[n][k] = statistics.median(v)
    return out


def measure_sizes(sizes: Sequence[Sequence[int]], threads: Sequence[int], repeats: int,
                  names: Sequence[str] = CONTENDERS, clock: str = "wall") -> list[dict]:
    """A row per size: medians per thread count and contender, ratios to ctc_loss and two threads over one."""
    rows = []
    for size in sizes:
        chosen = [n for n in names if n != "ops" or size[0] * size[1] * (2 * size[3] + 3) <= OPS_LIMIT]
        row: dict = {"size": list(size), "seconds": measure(size, threads, repeats, chosen, clock)}
        for n, secs in row["seconds"].items():
            if "ctc_loss" in secs:
                row.setdefault("over_ctc", {})[n] = {k: v / secs["ctc_loss"] for k, v in secs.items()
                                                     if k != "ctc_loss"}
        if 1 in threads and 2 in threads:
            one, two = row["seconds"][1], row["seconds"][2]
            row["two_over_one"] = {k: two[k] / one[k] for k in one if k in two}
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown: a line per size and thread count, milliseconds per contender and the ratios."""
    names = [k for k in CONTENDERS if any(k in s for r in rows for s in r["seconds"].values())]
    heads = ["T, B, V, U", "threads"] + [f"{k} ms" for k in names]
    heads += [f"{k}/ctc" for k in names if k != "ctc_loss"] + ["fullsum 2T/1T"]
    lines = []
    for r in rows:
        for n, secs in r["seconds"].items():
            cells = [", ".join(map(str, r["size"])), str(n)]
            cells += [f"{secs[k] * 1e3:.2f}" if k in secs else "-" for k in names]
            ratios = r.get("over_ctc", {}).get(n, {})
            cells += [f"{ratios[k]:.2f}" if k in ratios else "-" for k in names if k != "ctc_loss"]
            two = r.get("two_over_one", {}).get("fullsum")
            cells.append(f"{two:.2f}" if two is not None and n == 2 else "-")
            lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(heads)]
    out = ["| " + " | ".join(h.ljust(widths[i]) for i, h in enumerate(heads)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(c[i].rjust(widths[i]) for i in range(len(heads))) + " |" for c in lines]
    return "\n".join(out)


def target_lines(rows: list[dict]) -> list[str]:
    """One line per target whose size was measured: the figure, the bound, met or missed."""
    lines = []
    for r in rows:
        size = tuple(r["size"])
        ratio = r.get("over_ctc", {}).get(1, {}).get("fullsum")
        if size in TARGETS and ratio is not None:
            ok = "met" if ratio <= TARGETS[size] else "MISSED"
            lines.append(f"target {', '.join(map(str, size))}: fullsum / ctc_loss on 1 thread {ratio:.2f} "
                         f"<= {TARGETS[size]:.2f}: {ok}")
        two = r.get("two_over_one", {}).get("fullsum")
        if size in TWO_THREAD_TARGETS and two is not None:
            speedup = 1.0 / two
            ok = "met" if speedup >= TWO_THREAD_TARGETS[size] else "MISSED (needs two idle cores)"
            lines.append(f"target {', '.join(map(str, size))}: fullsum 2 threads {speedup:.2f}x faster than 1 "
                         f">= {TWO_THREAD_TARGETS[size]:.2f}x: {ok}")
    return lines


def _parse_size(text: str) -> tuple[int, int, int, int]:
    try:
        size = tuple(int(x) for x in text.split(","))
    except ValueError:
        size = ()
    if len(size) != 4 or min(size) < 1 or size[3] * 2 > size[0] or size[2] < 2:
        raise argparse.ArgumentTypeError(
            f"size must be T,B,V,U (frames, sequences, labels >= 2, target length <= T/2), got {text!r}")
    return size[0], size[1], size[2], size[3]


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", type=_parse_size, default=list(SIZES), metavar="T,B,V,U",
                    help="frames, sequences, labels, target labels (default: 100,8,40,20 500,16,80,100 "
                         "1000,32,100,200)")
    ap.add_argument("--threads", nargs="+", type=positive_int, default=[1, 2], help="thread counts (default 1 2)")
    ap.add_argument("--repeats", type=positive_int, default=7, help="interleaved rounds per size (default 7)")
    ap.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    ap.add_argument("--clock", choices=list(CLOCKS), default="wall",
                    help="wall: elapsed time (default); process: CPU time of all threads")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, torch = parse_torch_bench_args(PROG, build_parser(), None if argv is None else list(argv))
    from .. import fsa

    rows = measure_sizes(args.sizes, args.threads, args.repeats, args.contenders, args.clock)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"sprint_control bench --torch: fsa kernel {fsa.IMPLEMENTATION}, torch {torch.__version__},"
          f" {os.cpu_count()} cores, load average {load:.1f}, Python {platform.python_version()}")
    print(f"forward+backward, CPU float32, {args.clock} clock, medians of {args.repeats} interleaved rounds;"
          " ratios to ctc_loss in the same run")
    print(format_table(rows))
    for line in target_lines(rows):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "implementation": fsa.IMPLEMENTATION, "load_average": load,
                       "clock": args.clock, "repeats": args.repeats,
                       "cpu_count": os.cpu_count(), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
