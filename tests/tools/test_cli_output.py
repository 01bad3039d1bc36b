"""What the commands print about their own work: where a file went, a progress line per step of the
benchmark, a default table that fits a terminal, the shared-region ratio only where it means
something, and the emulator's choice options with their values."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest

from sprint_control.emulator import __main__ as emulator_main
from sprint_control.emulator.args import OPTIONS
from sprint_control.tools import bench, bench_cli
from sprint_control.wire.shm import DEFAULT_INLINE_BELOW

CHILD_TRANSPORTS = {"pipe": bench.TRANSPORTS, "emulator": bench.CHILD_TRANSPORTS["emulator"]}


def _row(time_, labels, seg_per_s, rss_mib=None, shm_inline=None):
    """A row like measure_sizes' with every transport at ``seg_per_s`` except v1, ten times slower."""
    nbytes = time_ * labels * 4
    row = {"time": time_, "labels": labels, "bytes_each_way": nbytes}
    for t in bench.TRANSPORTS:
        rate = seg_per_s / 10 if t == "v1" else seg_per_s
        row[t] = {"seconds": 1 / rate, "segments_per_s": rate, "gb_per_s": 2 * nbytes * rate / 1e9}
    row["v2_over_v1"] = 10.0
    row["two_memcpy_seconds"] = 1e-7
    row["shm-region_over_two_memcpy"] = (1 / seg_per_s) / 1e-7
    if shm_inline is not None:
        row["shm_inline"] = shm_inline
    if rss_mib is not None:
        row["peak_rss"] = {"growth_bytes": rss_mib * 2**20, "arrays_bytes": 2 * nbytes}
    return row


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.mark.parametrize("child", sorted(CHILD_TRANSPORTS))
def test_the_default_table_fits_100_columns_at_the_suite_s_sizes(child):
    """The widest figures a run can print (six-digit rates, a four-digit RSS) still fit."""
    transports = CHILD_TRANSPORTS[child]
    rows = [_row(t, labels, 999_999.0, rss_mib=9999.9) for t, labels in bench.SIZES]
    text = bench_cli.format_compact_table(rows, transports)
    assert max(len(line) for line in text.splitlines()) <= 100, text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert _cells(table[0]) == ["T x L", "MB"] + list(transports) + ["v2/v1", "RSS MiB"]
    assert len(table) == 2 + len(bench.SIZES)
    for line, (t, labels) in zip(table[2:], bench.SIZES):
        cells = _cells(line)
        assert cells[0] == f"{t}x{labels}"
        mb = t * labels * 4 / 1e6
        assert cells[1] == (f"{mb:.2f}" if mb >= 0.01 else "<0.01")
        assert cells[2 : 2 + len(transports)] == ["100000" if name == "v1" else "999999" for name in transports]
        assert cells[-2:] == ["10.00", "9999.9"]
    legend = " ".join(line for line in text.splitlines() if not line.startswith("|"))
    assert "--wide" in legend and "--json" in legend


def test_the_default_table_keeps_small_rates_readable():
    rows = [_row(1, 1, 12.345), _row(2, 2, 3.14159)]
    table = [line for line in bench_cli.format_compact_table(rows, ("v2", "v1")).splitlines() if line.startswith("|")]
    assert _cells(table[0]) == ["T x L", "MB", "v2", "v1", "v2/v1"]  # no RSS column without RSS figures
    assert _cells(table[2]) == ["1x1", "<0.01", "12.3", "1.23", "10.00"]
    assert _cells(table[3]) == ["2x2", "<0.01", "3.14", "0.31", "10.00"]


def test_the_memcpy_ratio_is_left_out_where_the_matrices_do_not_use_the_region():
    rows = [_row(1, 1, 1000.0, shm_inline=True), _row(300, 4501, 100.0, shm_inline=False)]
    text = bench_cli.format_table(rows, ("v2", "shm-region"))
    table = [line for line in text.splitlines() if line.startswith("|")]
    col = _cells(table[0]).index("shm-region time / 2 memcpy")
    assert _cells(table[2])[col] == "-"
    assert _cells(table[3])[col] == f"{rows[1]['shm-region_over_two_memcpy']:.2f}"
    note = " ".join(line for line in text.splitlines() if not line.startswith("|"))
    assert f"below {DEFAULT_INLINE_BELOW // 1024} KiB" in note and "inline through the pipe" in note
    # no note where every size uses the region
    assert "inline" not in bench_cli.format_table(rows[1:], ("v2", "shm-region"))


def test_measure_sizes_marks_the_sizes_that_travel_inline():
    sizes = [(1, 1), (200, 200)]  # 4 B and 160,000 B each way, on either side of the threshold
    seen = []
    rows = bench.measure_sizes(sizes, ("v2", "shm-region"), repeats=1,
                               progress=lambda i, n, size: seen.append((i, n, size)))
    assert seen == [(0, 2, (1, 1)), (1, 2, (200, 200))]
    assert [r["shm_inline"] for r in rows] == [t * labels * 4 < DEFAULT_INLINE_BELOW for t, labels in sizes]
    assert [r["shm_inline"] for r in rows] == [True, False]


@pytest.mark.parametrize("tty", [False, True])
def test_progress_is_a_line_per_step_or_one_line_rewritten_on_a_terminal(tty):
    class Stream(io.StringIO):
        def isatty(self):
            return tty

    stream = Stream()
    progress = bench_cli.Progress(stream, 3)
    for what in ("first", "second", "x" * 300):
        progress(what)
    progress.done()
    text = stream.getvalue()
    if tty:
        assert "\n" not in text
        parts = text.split("\r\033[K")
        assert parts[0] == "" and parts[-1] == ""  # each step overwrites the last; the end clears the line
        steps = parts[1:-1]
    else:
        assert "\r" not in text and "\033" not in text
        steps = text.splitlines()
    assert [s[: len("sprint-control bench: [1/3]")] for s in steps] == [
        f"sprint-control bench: [{i}/3]" for i in (1, 2, 3)]
    assert steps[0].endswith("first") and steps[1].endswith("second")
    assert max(len(s) for s in steps) < 100


def test_the_bench_command_reports_its_steps_and_its_files(tmp_path):
    out_json = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, "-m", "sprint_control.tools.bench", "--child", "pipe", "--sizes", "1,1", "4,9",
         "--transports", "v2", "v1", "--repeats", "1", "--json", str(out_json)],
        capture_output=True, text=True, timeout=180, cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    steps = proc.stderr.splitlines()  # stderr is a pipe here: one plain line per step
    assert len(steps) == 4 and all(len(s) < 100 for s in steps)
    assert re.match(r"sprint-control bench: \[1/4\] size 1x1: round trips of v2 v1$", steps[0])
    assert re.match(r"sprint-control bench: \[2/4\] size 4x9: ", steps[1])
    assert all(re.match(rf"sprint-control bench: \[{i}/4\] size .*peak RSS", steps[i - 1]) for i in (3, 4))
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[-1] == f"figures written to {out_json}"
    assert [r["time"] for r in json.loads(out_json.read_text())["rows"]] == [1, 4]
    table = [line for line in lines if line.startswith("|")]
    assert _cells(table[0]) == ["T x L", "MB", "v2", "v1", "v2/v1", "RSS MiB"]


def test_the_emulator_help_lists_the_values_of_its_choice_options(capsys):
    assert emulator_main.main(["--help"]) == 0
    out = capsys.readouterr().out
    choices = [o for o in OPTIONS if o.kind == "choice"]
    assert choices, "the emulator has no choice option left to check"
    for o in choices:
        (line,) = [ln for ln in out.splitlines() if ln.strip().startswith(f"--*.{o.name} ")]
        listed = re.search(r"\[one of (.*), default ", line).group(1).split(" | ")
        assert listed == list(o.choices), line
        assert o.default in listed
