"""``sprint-control bench --torch --automata`` on tiny sizes: both sources give the same automata, the table and
the JSON report every row, and the int32 conversion shares the edges while the int64 one converts them."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch", reason='needs the torch extra: pip install "sprint_control[torch]"')

from sprint_control.tools import bench_automata  # noqa: E402
from sprint_control.tools import bench_cli as bench  # noqa: E402


def test_the_automata_bench_through_sprint_control_bench(tmp_path, capsys):
    out = tmp_path / "automata.json"
    assert bench.main(["--torch", "--automata", "--segments", "4", "--repeats", "1", "--edges", "1000",
                       "--json", str(out)]) == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert [r["criterion"] for r in report["sources"]] == ["ctc", "fsa"]
    for r in report["sources"]:
        assert r["segments"] == 4 and r["edges"] > 0
        assert r["per_second"]["child"] > 0 and r["per_second"]["in-process"] > 0
        assert f"| {r['criterion']} | 4 | {r['edges']} |" in table
    shared = {r["index_dtype"]: r["edges_shared"] for r in report["conversion"]}
    assert shared == {"int32": True, "int64": False}
    assert "| from int32 | 1,000 |" in table and "no (converted)" in table


def test_the_automata_bench_refuses_bad_arguments():
    with pytest.raises(SystemExit):
        bench_automata.main(["--segments", "0"])
    with pytest.raises(SystemExit):
        bench_automata.main(["--criteria", "viterbi"])
