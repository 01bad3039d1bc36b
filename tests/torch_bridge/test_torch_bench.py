"""The ``bench --torch`` tool on tiny sizes: its CTC automata, that its contenders solve the same problem, and
that the table and JSON it writes are complete and consistent (no timing is asserted)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import extra_reason

torch = pytest.importorskip("torch", reason=extra_reason("torch"))

from torch_testlib import ctc_automaton as reference_ctc  # noqa: E402

from sprint_control.tools import bench_torch  # noqa: E402
from sprint_control.torch import fullsum_loss  # noqa: E402


@pytest.mark.parametrize("labels", [[], [1], [1, 1], [1, 2], [2, 1, 3, 3, 1], [4, 4, 4]])
def test_ctc_automaton_is_the_tests_topology(labels):
    n, edges = bench_torch.ctc_automaton(labels)
    n_ref, e_ref, _ = reference_ctc(labels)
    assert n == n_ref
    assert sorted(map(tuple, edges.T.tolist())) == sorted(map(tuple, e_ref.T.tolist()))


def test_the_problem_is_the_same_for_fullsum_and_ctc_loss():
    lp, lens, targets, (edges, weights, start_end) = bench_torch.make_problem(40, 3, 6, 8, seed=2)
    assert lp.shape == (40, 3, 6) and lens.tolist() == [40, 35, 30] and targets.shape == (3, 8)
    ours = fullsum_loss(lp.double(), lens, edges, weights, start_end)
    ref = torch.nn.functional.ctc_loss(lp.double(), targets, lens, torch.full((3,), 8), reduction="none")
    torch.testing.assert_close(ours, ref)


def test_tool_prints_a_row_per_size_and_thread_count_and_writes_consistent_json(tmp_path, capsys):
    out = tmp_path / "torch.json"
    assert bench_torch.main(["--sizes", "8,2,3,2", "12,3,4,3", "--threads", "1", "2", "--repeats", "2",
                             "--clock", "process", "--json", str(out)]) == 0
    table = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    assert len(table) == 2 + 4
    for word in ("fullsum ms", "ops ms", "ctc_loss ms", "viterbi ms", "fullsum/ctc", "fullsum 2T/1T"):
        assert word in table[0]
    doc = json.loads(out.read_text())
    assert [r["size"] for r in doc["rows"]] == [[8, 2, 3, 2], [12, 3, 4, 3]]
    for r in doc["rows"]:
        secs = {int(k): v for k, v in r["seconds"].items()}
        assert set(secs) == {1, 2} and set(secs[1]) == set(bench_torch.CONTENDERS)
        for n, ratios in r["over_ctc"].items():
            for k, v in ratios.items():
                assert v == pytest.approx(secs[int(n)][k] / secs[int(n)]["ctc_loss"])
        assert r["two_over_one"]["fullsum"] == pytest.approx(secs[2]["fullsum"] / secs[1]["fullsum"])
        assert all(np.isfinite(v) and v > 0 for s in secs.values() for v in s.values())


@pytest.mark.parametrize("argv", [["--sizes", "10,2,3"], ["--sizes", "10,2,3,6"], ["--threads", "0"],
                                  ["--contenders", "nope"]])
def test_tool_rejects_bad_arguments_in_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_torch.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sprint-control bench --torch: error:")


def test_target_lines_name_each_target_and_whether_it_is_met():
    rows = [{"size": [100, 8, 40, 20], "over_ctc": {1: {"fullsum": 1.3}}},
            {"size": [500, 16, 80, 100], "over_ctc": {1: {"fullsum": 0.6}}, "two_over_one": {"fullsum": 0.5}},
            {"size": [7, 1, 2, 1], "over_ctc": {1: {"fullsum": 9.0}}}]
    lines = bench_torch.target_lines(rows)
    assert lines == [
        "target 100, 8, 40, 20: fullsum / ctc_loss on 1 thread 1.30 <= 1.10: MISSED",
        "target 500, 16, 80, 100: fullsum / ctc_loss on 1 thread 0.60 <= 0.70: met",
        "target 500, 16, 80, 100: fullsum 2 threads 2.00x faster than 1 >= 1.60x: met",
    ]
