"""Pictures of ``sprint-control bench`` and ``sprint-control demo`` (``--plot FILE.png``).

matplotlib is an optional extra (``pip install "sprint_control[plot]"``), imported only when a plot is
drawn; without it ``--plot`` is refused at argument parsing with that install line. Figures are drawn
with matplotlib's object API on the Agg canvas: no display, no pyplot state.

- ``plot_bench(rows, path)``: round-trip throughput (GB/s, both directions) against segment size (MB
  each way), one line per transport, log axes, and the limit two memcpy calls per round trip set
  (``two_memcpy_seconds`` of the rows, measured beside ``shm-region``).
- ``plot_demo(report, path)``: loss per frame and segments per second, per epoch.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, Optional

__all__ = ["INSTALL_HINT", "PlotUnavailable", "add_plot_option", "plot_bench", "plot_demo", "require_matplotlib"]

INSTALL_HINT = 'plots need matplotlib: pip install "sprint_control[plot]" (or: pip install "matplotlib>=3.5")'


class PlotUnavailable(ImportError):
    """matplotlib is not installed; the message says how to install it."""


def require_matplotlib() -> Any:
    """The ``matplotlib`` module, or PlotUnavailable with the install line."""
    try:
        import matplotlib
        from matplotlib.backends import backend_agg  # noqa: F401  (the canvas the figures are drawn on)
    except ImportError as exc:
        raise PlotUnavailable(f"{INSTALL_HINT} ({exc})") from None
    return matplotlib


def _plot_target(path: str) -> str:
    """argparse type of ``--plot``: refuses at once when matplotlib is missing, before any work."""
    try:
        require_matplotlib()
    except PlotUnavailable as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return path


def add_plot_option(parser: argparse.ArgumentParser, what: str) -> None:
    """Adds ``--plot FILE.png`` to a command's parser."""
    parser.add_argument("--plot", metavar="FILE.png", type=_plot_target, default=None,
                        help=f"also draw {what} into FILE (PNG, SVG or PDF by the suffix; needs matplotlib:"
                             ' pip install "sprint_control[plot]")')


def _figure(rows: int, width: float, height: float):
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True) if rows > 1 else [fig.subplots()]
    return fig, axes


_STYLE = {  # transport -> (label, marker)
    "v2": ("protocol v2", "o"),
    "v1": ("protocol v1", "s"),
    "v1c": ("protocol v1, C pickler", "D"),
    "bare": ("bare pipe (readv/writev)", "^"),
    "shm": ("shared memory", "v"),
    "shm-region": ("shared memory, batch in the region", "P"),
}


def plot_bench(rows: Sequence[dict], path: str, transports: Optional[Sequence[str]] = None,
               title: Optional[str] = None) -> str:
    """Draws the rows of ``bench.measure_sizes`` into ``path``; returns ``path``."""
    if not rows:
        raise ValueError("plot_bench: no rows to draw")
    rows = sorted(rows, key=lambda r: r["bytes_each_way"])
    if transports is None:
        transports = [t for t in _STYLE if any(t in r for r in rows)]
    fig, (ax,) = _figure(1, 7.5, 4.8)
    for t in transports:
        pts = [(r["bytes_each_way"] / 1e6, r[t]["gb_per_s"]) for r in rows if t in r]
        if pts:
            label, marker = _STYLE.get(t, (t, "x"))
            ax.plot(*zip(*pts), marker=marker, label=label)
    limit = [(r["bytes_each_way"] / 1e6, 2 * r["bytes_each_way"] / r["two_memcpy_seconds"] / 1e9)
             for r in rows if r.get("two_memcpy_seconds")]
    if limit:
        ax.plot(*zip(*limit), color="black", linestyle="--", linewidth=1.2, label="limit: 2 memcpy per round trip")
    for i, r in enumerate(rows):  # staggered, so that neighbouring sizes stay readable
        ax.annotate(f"({r['time']}, {r['labels']})", (r["bytes_each_way"] / 1e6, 0), xycoords=("data", "axes fraction"),
                    xytext=(0, 3 + 9 * (i % 2)), textcoords="offset points", ha="center", fontsize=7, color="0.4")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("segment size: MB each way (float32 (time, label), size in grey)")
    ax.set_ylabel("throughput, GB/s (both directions)")
    ax.set_title(title or "sprint_control round trip: throughput against segment size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path)
    return path


def plot_demo(report: Any, path: str) -> str:
    """Draws a ``demo.DemoReport``: loss per frame and seg/s per epoch; returns ``path``."""
    epochs = [e.epoch for e in report.epochs]
    if not epochs:
        raise ValueError("plot_demo: the report has no epochs")
    fig, (ax_loss, ax_speed) = _figure(2, 6.5, 5.5)
    ax_loss.plot(epochs, [e.loss_per_frame for e in report.epochs], marker="o", color="tab:red")
    ax_loss.set_ylabel("loss per frame")
    ax_loss.grid(True, alpha=0.3)
    protocols = sorted({e.protocol for e in report.epochs})
    ax_loss.set_title(f"sprint-control demo: criterion {report.criterion}, {report.instances} Sprint children,"
                      f" protocol {'/'.join(f'v{p}' for p in protocols)}")
    ax_speed.bar(epochs, [e.segments_per_second for e in report.epochs], color="tab:blue", width=0.6)
    ax_speed.set_ylabel("segments per second")
    ax_speed.set_xlabel("epoch")
    ax_speed.set_xticks(epochs)
    ax_speed.grid(True, axis="y", alpha=0.3)
    fig.savefig(path)
    return path
