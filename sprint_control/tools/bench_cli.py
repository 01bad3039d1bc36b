"""The ``sprint-control bench`` command: its options (checked before anything runs), the table it
prints and the JSON it writes. The measuring itself is ``bench``'s."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence
from typing import Optional

import numpy as np

from ..wire import framing
from . import bench, plot
from ._cli import OneLineParser, fail, positive_int, writable_file_problem
from .bench_child import child_main

PROG = "sprint-control bench"


def _fmt_rate(x: float) -> str:
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def format_table(rows: list[dict], transports: Sequence[str] = bench.TRANSPORTS) -> str:
    """One table a person can read: a row per size, segments/s and GB/s per transport, ratios, RSS."""
    heads = ["size (T, L)", "MB each way"]
    for t in transports:
        heads += [f"{t} seg/s", f"{t} GB/s"]
    ratios = [o for o in ("bare", "v1", "v1c") if o in transports and "v2" in transports]
    shm_ratios = [t for t in bench.SHM_TRANSPORTS if t in transports and "v2" in transports]
    heads += [f"v2/{o}" for o in ratios] + [f"{t}/v2" for t in shm_ratios]
    if "shm-region" in transports:
        heads.append("shm-region time / 2 memcpy")
    heads += ["peak RSS MiB", "in+out MiB"]
    lines = []
    for r in rows:
        cells = [f"({r['time']}, {r['labels']})", f"{r['bytes_each_way'] / 1e6:.2f}"]
        for t in transports:
            f = r.get(t)
            cells += [_fmt_rate(f["segments_per_s"]), f"{f['gb_per_s']:.2f}"] if f else ["-", "-"]
        for o in ratios:
            k = f"v2_over_{o}"
            cells.append(f"{r[k]:.2f}" if k in r else "-")
        for t in shm_ratios:
            k = f"{t}_over_v2"
            cells.append(f"{r[k]:.2f}" if k in r else "-")
        if "shm-region" in transports:
            k = "shm-region_over_two_memcpy"
            cells.append(f"{r[k]:.2f}" if k in r else "-")
        rss = r.get("peak_rss")
        cells.append(f"{rss['growth_bytes'] / 2**20:.1f}" if rss else "-")
        cells.append(f"{rss['arrays_bytes'] / 2**20:.1f}" if rss else "-")
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(heads)]
    out = ["| " + " | ".join(h.ljust(widths[i]) for i, h in enumerate(heads)) + " |",
           "|" + "|".join("-" * (wd + 2) for wd in widths) + "|"]
    for c in lines:
        out.append("| " + " | ".join(c[i].rjust(widths[i]) for i in range(len(heads))) + " |")
    return "\n".join(out)



def _parse_size(text: str) -> tuple[int, int]:
    try:
        t, l_ = text.lower().replace("x", ",").split(",")
        size = int(t), int(l_)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be TIME,LABELS (e.g. 1000,9001), got {text!r}") from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"size must be TIME,LABELS, both at least 1, got {text!r}")
    return size


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog=PROG, description=(bench.__doc__ or "").split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", type=_parse_size, default=list(bench.SIZES), metavar="T,L",
                    help="(time, label) sizes, float32 (default: the suite's five)")
    ap.add_argument("--child", choices=bench.CHILDREN, default="emulator",
                    help="emulator: the RASR emulator through SprintSubprocessInstance, as a user runs it"
                         " (default); pipe: a minimal child that measures the transport alone")
    ap.add_argument("--criterion", default="bench",
                    help="the emulator's --*.training-criterion (default bench: cheap, any label count)")
    ap.add_argument("--budget", type=_positive_float, default=1.0,
                    help="rough seconds per size and transport (more rounds: steadier medians)")
    ap.add_argument("--repeats", type=positive_int, default=None,
                    help="round trips per transport and size (overrides --budget)")
    ap.add_argument("--transports", nargs="+", choices=bench.TRANSPORTS, default=None,
                    help="default: every transport the child speaks (v2 v1 bare shm shm-region; pipe: also v1c)")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS probe (one fresh process per size)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    plot.add_plot_option(ap, "throughput against segment size")
    return ap


def run(argv: Sequence[str]) -> int:
    """``sprint-control bench [--sizes T,L ...] [--budget S] [--json FILE]``; returns the exit status."""
    ap = build_parser()
    args = ap.parse_args(list(argv))
    transports = args.transports or list(bench.CHILD_TRANSPORTS[args.child])
    bad = [t for t in transports if t not in bench.CHILD_TRANSPORTS[args.child]]
    if bad:
        fail(PROG, f"the {args.child} child does not speak {' '.join(bad)}:"
                   f" expected some of {' '.join(bench.CHILD_TRANSPORTS[args.child])}")
    if args.json:
        problem = writable_file_problem(args.json)
        if problem:  # found now, not after the whole run
            fail(PROG, f"--json: {problem}")
    rows = bench.measure_sizes(args.sizes, transports, budget=args.budget, repeats=args.repeats, child=args.child,
                               criterion=args.criterion)
    if not args.no_rss:
        for r in rows:
            r["peak_rss"] = bench.peak_rss_of_roundtrip(r["time"], r["labels"], "v2", args.child)
    if args.child == "emulator":
        who = (f"child: RASR emulator (criterion {args.criterion}) via SprintSubprocessInstance;"
               " v1 = this package's v1 on both ends; bare = bare readv/writev on a pipe child")
    else:
        who = "child: minimal pipe child (transport only); v1 = RETURNN's writer both ways, v1c = C pickler"
    print(f"sprint_control bench: framing core {framing.IMPLEMENTATION}, {os.cpu_count()} cores,"
          f" Python {platform.python_version()}, numpy {np.__version__}")
    print(who)
    print("round trip = parent sends (T, L) float32 posteriors, child answers a same-shape error signal;"
          " medians of interleaved rounds; GB/s counts both directions; peak RSS = parent's growth in one v2"
          " round trip")
    print(format_table(rows, transports))
    if args.plot:
        plot.plot_bench(rows, args.plot, transports)
    if args.json:
        doc = {"implementation": framing.IMPLEMENTATION, "child": args.child, "criterion": args.criterion,
               "transports": transports, "cpu_count": os.cpu_count(), "python": platform.python_version(),
               "numpy": np.__version__, "rows": rows}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """``sprint-control bench``: the child modes of ``bench``, the PyTorch bridge's table (``--torch``,
    ``bench_torch``) and the Ray pool's overhead (``--ray``, ``bench_ray``), else the link's table (``run``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--torch"]:
        from .bench_torch import main as torch_main

        return torch_main(argv[1:])
    if argv[:1] == ["--ray"]:
        from .bench_ray import main as ray_main

        return ray_main(argv[1:])
    if argv[:1] == ["--pipe-child"]:
        return child_main(argv[1:])
    if argv[:1] == ["--rss-probe"]:
        return bench.rss_probe(argv[1:])
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
