"""The ``sprint-control bench`` command: its options (checked before anything runs), its progress
lines on stderr, the tables it prints (compact by default, the full one with ``--wide``) and the JSON
it writes. The measuring itself is ``bench``'s."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence
from typing import Optional, TextIO

import numpy as np

from ..wire import framing
from . import bench, plot
from ._cli import OneLineParser, fail, positive_int, writable_file_problem
from .bench_child import child_main

PROG = "sprint-control bench"
#: the columns the default output keeps within (the compact table, the wrapped notes, progress lines)
WIDTH = 100


def _fmt_rate(x: float) -> str:
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _ratio_means_nothing(r: dict) -> bool:
    """Below the region's inline threshold shm-region's matrices go through the pipe: its time over two
    copies of a few bytes measures the pipe, not the region."""
    return bool(r.get("shm_inline"))


def format_table(rows: list[dict], transports: Sequence[str] = bench.TRANSPORTS) -> str:
    """The full table (``--wide``): a row per size, segments/s and GB/s per transport, ratios, RSS."""
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
            cells.append(f"{r[k]:.2f}" if k in r and not _ratio_means_nothing(r) else "-")
        rss = r.get("peak_rss")
        cells.append(f"{rss['growth_bytes'] / 2**20:.1f}" if rss else "-")
        cells.append(f"{rss['arrays_bytes'] / 2**20:.1f}" if rss else "-")
        lines.append(cells)
    table = _layout(heads, lines)
    if "shm-region" in transports and any(_ratio_means_nothing(r) for r in rows):
        table += "\n" + _wrap(f"shm-region time / 2 memcpy: '-' below {_inline_below_text()} each way, where the"
                              " matrices travel inline through the pipe and not through the region"
                              " (--json still has the figure, with shm_inline true)")
    return table


def format_compact_table(rows: list[dict], transports: Sequence[str] = bench.TRANSPORTS) -> str:
    """The default table, within ``WIDTH`` columns for the suite's sizes: round trips per second per
    transport, how many times v2 beats v1, the parent's peak RSS growth; a legend below it."""
    heads = ["T x L", "MB"] + list(transports)
    speedup = "v1" in transports and "v2" in transports
    heads += ["v2/v1"] if speedup else []
    rss_shown = any(r.get("peak_rss") for r in rows)
    heads += ["RSS MiB"] if rss_shown else []
    lines = []
    for r in rows:
        mb = r["bytes_each_way"] / 1e6
        cells = [f"{r['time']}x{r['labels']}", f"{mb:.2f}" if mb >= 0.01 else "<0.01"]
        cells += [_fmt_count(r[t]["segments_per_s"]) if t in r else "-" for t in transports]
        if speedup:
            cells.append(f"{r['v2_over_v1']:.2f}" if "v2_over_v1" in r else "-")
        if rss_shown:
            rss = r.get("peak_rss")
            cells.append(f"{rss['growth_bytes'] / 2**20:.1f}" if rss else "-")
        lines.append(cells)
    legend = ("round trips per second (segments/s, medians of interleaved rounds) per transport"
              + ("; v2/v1: how many times faster v2 is" if speedup else "")
              + ("; RSS MiB: the parent's peak growth in one v2 round trip" if rss_shown else "")
              + ". --wide: GB/s, every ratio and the arrays' size; --json FILE: every figure")
    return _layout(heads, lines) + "\n" + _wrap(legend)


def _fmt_count(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _inline_below_text() -> str:
    from ..wire.shm import DEFAULT_INLINE_BELOW

    return f"{DEFAULT_INLINE_BELOW // 1024} KiB"


def _wrap(text: str) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, WIDTH, break_on_hyphens=False))


def _layout(heads: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(heads)]
    out = ["| " + " | ".join(h.ljust(widths[i]) for i, h in enumerate(heads)) + " |",
           "|" + "|".join("-" * (wd + 2) for wd in widths) + "|"]
    for c in lines:
        out.append("| " + " | ".join(c[i].rjust(widths[i]) for i in range(len(heads))) + " |")
    return "\n".join(out)


class Progress:
    """What the run is doing, on ``stream`` (stderr): on a terminal one line rewritten in place and
    cleared at the end, otherwise one short line per step, so that a log shows the run moving."""

    def __init__(self, stream: TextIO, total_steps: int):
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.total = total_steps
        self.step = 0

    def __call__(self, what: str) -> None:
        self.step += 1
        line = f"{PROG}: [{self.step}/{self.total}] {what}"[:WIDTH - 1]
        self.stream.write(f"\r\033[K{line}" if self.tty else line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


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
    ap.add_argument("--wide", action="store_true",
                    help="print the full table (GB/s, every ratio, the arrays' size) instead of the compact one")
    ap.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE")
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
    steps = Progress(sys.stderr, len(args.sizes) * (1 if args.no_rss else 2))
    rows = bench.measure_sizes(
        args.sizes, transports, budget=args.budget, repeats=args.repeats, child=args.child,
        criterion=args.criterion,
        progress=lambda i, n, size: steps(f"size {size[0]}x{size[1]}: round trips of {' '.join(transports)}"),
    )
    if not args.no_rss:
        for r in rows:
            steps(f"size {r['time']}x{r['labels']}: peak RSS of one v2 round trip, in a fresh process")
            r["peak_rss"] = bench.peak_rss_of_roundtrip(r["time"], r["labels"], "v2", args.child)
    steps.done()
    if args.child == "emulator":
        who = (f"child: RASR emulator (criterion {args.criterion}) via SprintSubprocessInstance;"
               " v1 = this package's v1 on both ends; bare = bare readv/writev on a pipe child")
    else:
        who = "child: minimal pipe child (transport only); v1 = RETURNN's writer both ways, v1c = C pickler"
    print(_wrap(f"sprint_control bench: framing core {framing.IMPLEMENTATION}, {os.cpu_count()} cores,"
                f" Python {platform.python_version()}, numpy {np.__version__}"))
    print(_wrap(who))
    print(_wrap("round trip = parent sends (T, L) float32 posteriors, child answers a same-shape error signal;"
                " medians of interleaved rounds; GB/s counts both directions; peak RSS = parent's growth in one"
                " v2 round trip"))
    print(format_table(rows, transports) if args.wide else format_compact_table(rows, transports))
    if args.plot:
        plot.plot_bench(rows, args.plot, transports)
        print(f"plot written to {args.plot}")
    if args.json:
        doc = {"implementation": framing.IMPLEMENTATION, "child": args.child, "criterion": args.criterion,
               "transports": transports, "cpu_count": os.cpu_count(), "python": platform.python_version(),
               "numpy": np.__version__, "rows": rows}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
        print(f"figures written to {args.json}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """``sprint-control bench``: the child modes of ``bench``, the PyTorch bridge's table (``--torch``,
    ``bench_torch``; ``--torch --automata``: automata in-process against through a child, ``bench_automata``) and
    the Ray pool's overhead (``--ray``, ``bench_ray``), else the link's table (``run``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["--torch", "--automata"]:
        from .bench_automata import main as automata_main

        return automata_main(argv[2:])
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
