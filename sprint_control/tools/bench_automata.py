"""Automata per second in-process (the emulator's librasr-style builder) against through a Sprint child, and the
cost of handing a batch out as i6_models' ``WeightedFsa``.

``sprint-control bench --torch --automata [--segments N] [--repeats N] [--edges E] [--json FILE]``. The corpus is
the emulator's synthetic one (``--*.corpus.synthetic=N``, CTC or HMM automata); both sources build the same
automata from the same options (the builder asks the very callback a child would). Each round fetches the whole
corpus as one batch through ``automata_for_batch`` without a cache, in-process and through one emulator child,
interleaved; medians reported. The conversion rows time ``as_weighted_fsa`` on an automaton of ``E`` edges whose
index tensors are already int32 (shared, nothing copied) and int64 (converted), and say whether the edges were
shared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Optional

from ._cli import OneLineParser, parse_torch_bench_args, positive_int

PROG = "sprint-control bench --torch --automata"
CRITERIA = ("ctc", "fsa")


def emulator_args(num_segments: int, criterion: str) -> list[str]:
    return [f"--*.corpus.synthetic={num_segments}", "--*.corpus.seed=0", "--*.corpus.max-frames=200",
            f"--*.training-criterion={criterion}", "--*.log-level=warning"]


def measure_sources(num_segments: int, criterion: str, repeats: int) -> dict:
    """Median seconds per batch of ``num_segments`` automata, in-process and through one child."""
    from ..emulator.builder import AllophoneStateFsaBuilder
    from ..parent import SprintPool, emulator_command
    from ..torch import automata_for_batch

    args = emulator_args(num_segments, criterion)
    builder = AllophoneStateFsaBuilder(args)
    tags = builder.segment_names
    times: dict[str, list[float]] = {"in-process": [], "child": []}
    with SprintPool(1, emulator_command(), args, timeout=120) as pool:
        sources = {"in-process": builder, "child": pool}
        for source in sources.values():  # warm-up: the child's start, first allocations
            automata_for_batch(tags, source)
        for _ in range(repeats):
            for name, source in sources.items():
                t0 = time.perf_counter()
                automaton = automata_for_batch(tags, source)
                times[name].append(time.perf_counter() - t0)
    seconds = {k: statistics.median(v) for k, v in times.items()}
    return {"criterion": criterion, "segments": num_segments, "edges": int(automaton.edges.shape[1]),
            "seconds": seconds, "per_second": {k: num_segments / v for k, v in seconds.items()},
            "speedup": seconds["child"] / seconds["in-process"]}


def measure_conversion(num_edges: int, repeats: int) -> list[dict]:
    """``as_weighted_fsa`` on ``num_edges`` edges with int32 and int64 index tensors: median seconds, shared?"""
    import torch

    from ..torch import Automaton, as_weighted_fsa

    batch = 16
    rows = []
    for dtype in (torch.int32, torch.int64):
        edges = torch.randint(0, 1000, (4, num_edges), dtype=dtype)
        start_end = torch.stack([torch.arange(batch) * 10, torch.arange(batch) * 10 + 9]).to(dtype)
        aut = Automaton(edges, torch.zeros(num_edges), start_end)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fsa = as_weighted_fsa(aut)
            times.append(time.perf_counter() - t0)
        rows.append({"index_dtype": str(dtype).replace("torch.", ""), "edges": num_edges,
                     "seconds": statistics.median(times), "edges_shared": fsa.edges.data_ptr() == edges.data_ptr()})
    return rows


def format_tables(sources: list[dict], conversion: list[dict]) -> str:
    out = ["| criterion | segments | edges | in-process automata/s | child automata/s | in-process/child |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in sources:
        ps = r["per_second"]
        out.append(f"| {r['criterion']} | {r['segments']} | {r['edges']} | {ps['in-process']:,.0f} | "
                   f"{ps['child']:,.0f} | {r['speedup']:.2f}x |")
    out += ["", "| as_weighted_fsa | edges | µs | edges shared |", "|---|---:|---:|---|"]
    for r in conversion:
        out.append(f"| from {r['index_dtype']} | {r['edges']:,} | {r['seconds'] * 1e6:,.1f} | "
                   f"{'yes' if r['edges_shared'] else 'no (converted)'} |")
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--segments", type=positive_int, default=200, help="segments per batch (default 200)")
    ap.add_argument("--criteria", nargs="+", choices=CRITERIA, default=list(CRITERIA),
                    help="automaton topologies: ctc, fsa (HMM) (default both)")
    ap.add_argument("--repeats", type=positive_int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--edges", type=positive_int, default=2_000_000,
                    help="edges of the automaton converted to a WeightedFsa (default 2000000)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, torch = parse_torch_bench_args(PROG, build_parser(), None if argv is None else list(argv))
    sources = [measure_sources(args.segments, c, args.repeats) for c in args.criteria]
    conversion = measure_conversion(args.edges, max(args.repeats, 5))
    print(f"sprint_control bench --torch --automata: torch {torch.__version__}; one batch of {args.segments} "
          f"segments per round, no cache, medians of {args.repeats} interleaved rounds")
    print(format_tables(sources, conversion))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "repeats": args.repeats, "sources": sources,
                       "conversion": conversion}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
