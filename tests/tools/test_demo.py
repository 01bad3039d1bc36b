"""The demo trains for real: its loss falls, over both protocols; the console command prints the
per-epoch lines and the summary; ``bench`` is dispatched to its module."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from sprint_control import cli  # noqa: E402
from sprint_control.tools.demo import format_summary, run_demo  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.mark.parametrize("protocol,criterion", [(2, "ctc"), (1, "fsa")])
def test_demo_loss_falls(protocol, criterion):
    out = io.StringIO()
    report = run_demo(instances=2, segments=40, epochs=3, criterion=criterion, protocol=protocol,
                      batch_size=8, progress=False, out=out)
    losses = report.losses
    assert len(losses) == 3
    assert losses[2] < losses[1] < losses[0], losses
    assert losses[-1] < 0.8 * losses[0]
    assert all(e.protocol == protocol and e.segments == 40 and e.skipped == 0 for e in report.epochs)
    assert all(e.mb_moved > 0 and e.frames > 0 for e in report.epochs)
    text = out.getvalue()
    assert text.count("epoch ") >= 3 and "loss fell" in text
    assert format_summary(report) in text


def test_cli_demo_prints_epochs_and_summary(capsys):
    rc = cli.main(["demo", "--instances", "1", "--segments", "24", "--epochs", "2", "--batch-size", "6",
                   "--no-progress", "--seed", "3"])
    text = capsys.readouterr().out
    assert rc == 0
    epochs = re.findall(r"^epoch (\d+): loss/frame ([\d.]+) +([\d.]+) seg/s +([\d.]+) MB/s .* protocol v2$",
                        text, re.M)
    assert [e[0] for e in epochs] == ["1", "2"]
    assert float(epochs[1][1]) < float(epochs[0][1])
    assert re.search(r"^epoch \| loss/frame \| skipped \|", text, re.M)


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "sprint_control", "demo", "--segments", "8", "--epochs", "2",
                           "--instances", "1", "--batch-size", "4"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "loss fell" in proc.stdout
    assert "epoch 1/2" in proc.stdout  # the tqdm bar (it writes to the same stream)


def test_cli_without_command_and_bench_dispatch(capsys, monkeypatch):
    assert cli.main([]) == 2
    seen = {}

    class FakeBench:
        @staticmethod
        def main(args):
            seen["args"] = args
            return 0

    monkeypatch.setitem(sys.modules, "sprint_control.tools.bench_cli", FakeBench)
    import sprint_control.tools

    monkeypatch.setattr(sprint_control.tools, "bench_cli", FakeBench, raising=False)
    assert cli.main(["bench", "--sizes", "100,88", "--repeats", "1"]) == 0
    assert seen["args"] == ["--sizes", "100,88", "--repeats", "1"]


def test_cli_bench_missing_module(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sprint_control.tools.bench_cli", None)  # import fails
    import sprint_control.tools

    monkeypatch.delattr(sprint_control.tools, "bench_cli", raising=False)
    assert cli.main(["bench"]) == 2
    assert "not available" in capsys.readouterr().err


def test_demo_rejects_bad_options():
    with pytest.raises(ValueError, match="criterion"):
        run_demo(criterion="mmi", out=None)
    with pytest.raises(SystemExit):
        cli.main(["demo", "--protocol", "3"])


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_demo_refuses_a_timeout_that_cannot_work(capsys, value):
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--timeout", value])
    assert info.value.code == 2
    assert "--timeout must be a positive number of seconds" in capsys.readouterr().err


@pytest.fixture
def user_files(tmp_path, monkeypatch):
    """A user's Bliss lexicon (gzip'd) and corpus, one word of it missing from the lexicon, and a RASR
    config naming both; the lexicon cache in a temporary directory."""
    from sprint_control.emulator import synthetic_bliss as sb

    monkeypatch.setenv("SPRINT_CONTROL_CACHE_DIR", str(tmp_path / "cache"))
    lex = sb.write_lexicon(tmp_path / "lex.xml.gz", 200, seed=1)
    corpus = tmp_path / "corpus.xml"
    corpus.write_text(sb.corpus_text(30, sb.words(200, seed=1), seconds=(10.0, 14.0), unknown=["NOWORD"]))
    config = tmp_path / "train.config"
    config.write_text(f"[*]\ncorpus.file = {corpus}\nmodel-combination.lexicon.file = {lex}\n"
                      "hmm.states-per-phone = 1\n")
    return {"lexicon": str(lex), "corpus": str(corpus), "config": str(config)}


@pytest.mark.parametrize("how,criterion", [("files", "ctc"), ("config", "fsa")])
def test_demo_trains_on_a_users_corpus_and_lexicon(user_files, how, criterion):
    from sprint_control.emulator import criteria
    from sprint_control.emulator.bliss_lexicon import BlissLexicon

    out = io.StringIO()
    kwargs = ({"corpus": user_files["corpus"], "lexicon": user_files["lexicon"]} if how == "files"
              else {"config": user_files["config"]})
    report = run_demo(instances=2, epochs=3, criterion=criterion, batch_size=6, progress=False, out=out, **kwargs)
    lex = BlissLexicon(user_files["lexicon"], states_per_phone=1 if how == "config" else 3)
    assert report.num_labels == criteria.num_labels(criterion, lex)
    assert report.num_segments == 30 and all(e.skipped == 0 for e in report.epochs)
    losses = report.losses
    assert losses[2] < losses[1] < losses[0], losses
    text = out.getvalue()
    assert "30 segments of corpus 'synthetic'" in text and "loss fell" in text


def test_cli_demo_on_a_users_files_and_their_errors(user_files, tmp_path, capsys):
    rc = cli.main(["demo", "--corpus", user_files["corpus"], "--lexicon", user_files["lexicon"], "--instances", "1",
                   "--epochs", "2", "--segments", "8", "--batch-size", "4", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0 and "8 segments of corpus" in text and "loss fell" in text
    assert cli.main(["demo", "--corpus", str(tmp_path / "nowhere.xml")]) == 2
    assert "--corpus " in capsys.readouterr().err
    bad = tmp_path / "bad.xml"
    bad.write_text("<corpus>\n</corpus>\n")
    assert cli.main(["demo", "--corpus", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"sprint-control demo: error: {bad}:1: <corpus> needs a name attribute (the first part of" \
                          " every segment name)"
