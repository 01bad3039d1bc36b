"""``--plot FILE.png`` of ``bench`` and ``demo``: the pictures are real PNGs with something drawn in
them, they come from the tools' own figures, and without matplotlib the flag says how to install it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from support import extra_reason

from sprint_control.tools import bench_cli, demo, plot
from sprint_control.tools.demo import DemoReport, EpochStats

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path, min_size=(400, 300)):
    """A PNG of at least ``min_size`` pixels with more than background in it."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= min_size[0] and height >= min_size[1]
    image = pytest.importorskip("matplotlib.image", reason=extra_reason("matplotlib.image")).imread(str(path))
    colours = np.unique(image[..., :3].reshape(-1, 3).round(2), axis=0)
    assert len(colours) > 20  # lines, markers, text and antialiasing, not a blank canvas
    return image


def _row(time_, labels, gbps, memcpy_seconds=None):
    nbytes = time_ * labels * 4
    row = {"time": time_, "labels": labels, "bytes_each_way": nbytes}
    for t, g in gbps.items():
        seconds = 2 * nbytes / g / 1e9
        row[t] = {"seconds": seconds, "segments_per_s": 1 / seconds, "gb_per_s": g}
    if memcpy_seconds is not None:
        row["two_memcpy_seconds"] = memcpy_seconds
    return row


def test_plot_bench_draws_every_transport_and_the_memcpy_limit(tmp_path):
    pytest.importorskip("matplotlib", reason=extra_reason("matplotlib"))
    rows = [_row(100, 4501, {"v2": 2.0, "v1": 0.3, "bare": 2.5, "shm-region": 4.0}, 1e-4),
            _row(1, 1, {"v2": 1e-4, "v1": 1e-5, "bare": 2e-4, "shm-region": 1e-4}, 1e-7),
            _row(1000, 9001, {"v2": 3.0, "v1": 0.4, "bare": 3.5, "shm-region": 8.0}, 1e-2)]
    out = tmp_path / "bench.png"
    assert plot.plot_bench(rows, str(out)) == str(out)
    _check_png(out)
    # the same figure as SVG: its text says what is drawn
    svg = tmp_path / "bench.svg"
    plot.plot_bench(rows, str(svg))
    text = svg.read_text()
    for label in ("protocol v2", "protocol v1", "bare pipe", "shared memory, batch in the region",
                  "limit: 2 memcpy per round trip", "(1000, 9001)"):
        assert label.replace("'", "&#39;") in text or label in text, label
    assert "C pickler" not in text  # no line for a transport the rows lack


def test_plot_bench_rejects_empty_rows(tmp_path):
    pytest.importorskip("matplotlib", reason=extra_reason("matplotlib"))
    with pytest.raises(ValueError, match="no rows"):
        plot.plot_bench([], str(tmp_path / "x.png"))


def _report():
    epochs = [EpochStats(epoch=i, loss_per_frame=3.0 / i, segments=40, skipped=0, frames=2000, seconds=0.5 + 0.1 * i,
                         sprint_seconds=0.2, mb_moved=3.0, protocol=2) for i in (1, 2, 3, 4)]
    return DemoReport(epochs, instances=2, criterion="ctc", num_labels=11, feature_dim=40, num_segments=40,
                      sprint_command="python -m sprint_control.emulator")


def test_plot_demo_draws_loss_and_speed(tmp_path):
    pytest.importorskip("matplotlib", reason=extra_reason("matplotlib"))
    out = tmp_path / "demo.png"
    plot.plot_demo(_report(), str(out))
    _check_png(out)
    svg = tmp_path / "demo.svg"
    plot.plot_demo(_report(), str(svg))
    text = svg.read_text()
    assert "loss per frame" in text and "segments per second" in text and "criterion ctc" in text


def test_bench_and_demo_commands_write_their_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason=extra_reason("matplotlib"))
    png = tmp_path / "bench.png"
    assert bench_cli.main(["--child", "pipe", "--sizes", "2,3", "40,50", "--transports", "v2", "bare", "shm-region",
                       "--repeats", "1", "--no-rss", "--plot", str(png)]) == 0
    _check_png(png)
    assert f"plot written to {png}" in capsys.readouterr().out.splitlines()
    png = tmp_path / "demo.png"
    assert demo.main(["--instances", "1", "--segments", "8", "--epochs", "2", "--batch-size", "4", "--no-progress",
                      "--plot", str(png)]) == 0
    _check_png(png)
    assert capsys.readouterr().out.splitlines()[-1] == f"plot written to {png}"


def test_without_matplotlib_the_flag_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # ``import matplotlib`` raises ImportError
    with pytest.raises(plot.PlotUnavailable, match=r'pip install "sprint_control\[plot\]"'):
        plot.plot_demo(_report(), str(tmp_path / "x.png"))
    for main in (bench_cli.main, demo.main):
        with pytest.raises(SystemExit) as exc:
            main(["--plot", str(tmp_path / "x.png")])  # refused at parsing, before any measurement
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "argument --plot" in err and 'pip install "sprint_control[plot]"' in err
    assert not (tmp_path / "x.png").exists()
