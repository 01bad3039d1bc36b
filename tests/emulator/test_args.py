"""RASR-style argument parsing."""

from __future__ import annotations

import pytest

from sprint_control.emulator.args import OPTIONS, ArgumentError, option_table_markdown, parse_args


def test_plain_and_wildcard_keys():
    cfg = parse_args(["--pymod-name=a", "--*.pymod-path=/x", "--nn-trainer.corpus.file=c.txt"])
    assert cfg["pymod-name"] == "a"
    assert cfg["pymod-path"] == "/x"
    assert cfg["corpus.file"] == "c.txt"


def test_last_occurrence_wins_across_selectors():
    cfg = parse_args(["--*.pymod-name=a", "--pymod-name=b", "--*.corpus.seed=3", "--x.corpus.seed=4"])
    assert cfg["pymod-name"] == "b"
    assert cfg["corpus.seed"] == 4


def test_defaults():
    cfg = parse_args([])
    assert cfg["action"] == "python-control"
    assert cfg["python-control-loop-type"] == "python-control-loop"
    assert cfg["training-criterion"] == "ctc"
    assert cfg["input-in-log-space"] is True
    assert cfg["python-segment-order"] is False
    assert cfg["corpus.seed"] == 0
    assert cfg["version-number"] == "5"
    assert not cfg.given("pymod-name")


def test_option_names_are_matched_by_whole_components():
    # python-segment-order must not pick up python-segment-order-config and vice versa
    cfg = parse_args(["--*.python-segment-order-config=abc", "--*.python-segment-order=true"])
    assert cfg["python-segment-order"] is True
    assert cfg["python-segment-order-config"] == "abc"
    # "file" alone is not corpus.file
    assert parse_args(["--*.file=x"])["corpus.file"] == ""


def test_unknown_keys_kept_once_and_reported():
    cfg = parse_args(["--*.foo=1", "--*.foo=2", "--bar.baz=3", "--*.pymod-name=m"])
    assert cfg.unknown_keys() == ["*.foo", "bar.baz"]
    assert ("*.foo", "2") in cfg.entries


@pytest.mark.parametrize("raw,value", [("true", True), ("False", False), ("yes", True), ("0", False), ("1", True)])
def test_bools(raw, value):
    assert parse_args([f"--*.python-segment-order={raw}"])["python-segment-order"] is value


def test_bare_flag_is_true():
    assert parse_args(["--*.quiet"])["quiet"] is True


@pytest.mark.parametrize(
    "arg",
    ["--*.python-segment-order=maybe", "--*.corpus.seed=x", "--*.training-criterion=mmi", "--*.action=align", "--=3"],
)
def test_bad_values(arg):
    with pytest.raises(ArgumentError):
        parse_args([arg])


def test_criterion_and_loop_choices():
    cfg = parse_args(
        [
            "--*.training-criterion=full-sum",
            "--*.python-control-loop-type=iterate-corpus",
            "--*.action=supervised-segmentwise-training",
        ]
    )
    assert cfg["training-criterion"] == "full-sum"
    assert cfg["python-control-loop-type"] == "iterate-corpus"
    assert cfg["action"] == "supervised-segmentwise-training"


def test_config_file_sections_and_precedence(tmp_path):
    f = tmp_path / "train.config"
    f.write_text("# comment\n[*]\npymod-name = from_file\ncorpus.seed = 7\n[*.corpus]\nsynthetic = 5\n")
    cfg = parse_args(["--*.pymod-name=from_cli", f"--config={f}"])
    assert cfg["pymod-name"] == "from_cli"  # the command line wins even when the file comes later
    assert cfg["corpus.seed"] == 7
    assert cfg["corpus.synthetic"] == 5


def test_positional_arguments_are_kept():
    cfg = parse_args(["stray", "--*.pymod-name=m"])
    assert cfg.positional == ["stray"]


def test_value_may_contain_equals_and_colons():
    cfg = parse_args(["--*.pymod-config=c2p_fd:5,p2c_fd:6,x:a=b"])
    assert cfg["pymod-config"] == "c2p_fd:5,p2c_fd:6,x:a=b"


def test_docs_table_lists_every_option():
    table = option_table_markdown()
    for o in OPTIONS:
        assert f"`{o.name}`" in table


def test_docs_describe_every_option():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "emulator.md").read_text()
    for o in OPTIONS:
        assert f"`{o.name}`" in doc, f"docs/emulator.md does not describe {o.name}"


def test_a_config_file_that_is_not_utf8_is_refused_naming_it(tmp_path):
    f = tmp_path / "train.config"
    f.write_bytes(b"[*]\npymod-name = caf\xe9\n")
    with pytest.raises(ArgumentError, match=r"train\.config: byte 0xe9 at offset 20 is not UTF-8"):
        parse_args([f"--config={f}"])


@pytest.mark.parametrize("arg,words", [
    ("--*.corpus.synthetic=-5", ["corpus.synthetic", ">= 0", "'-5'"]),
    ("--*.corpus.feature-dim=0", ["corpus.feature-dim", ">= 1"]),
    ("--*.lexicon.states-per-symbol=0", ["lexicon.states-per-symbol", ">= 1"]),
    ("--*.corpus.noise=-0.5", ["corpus.noise", "a number >= 0"]),
])
def test_counts_below_their_minimum_are_refused(arg, words):
    with pytest.raises(ArgumentError) as err:
        parse_args([arg])
    for word in words:
        assert word in str(err.value)


def test_the_emulator_reports_a_bad_config_file_in_one_line(run_emulator, tmp_path):
    f = tmp_path / "latin1.config"
    f.write_bytes(b"pymod-config = \xff\n")
    run = run_emulator(f"--config={f}")
    assert run.returncode == 1  # RASR's status for a critical error
    assert run.stderr.strip().splitlines() == [
        f"[emulator] critical error: config file {f}: byte 0xff at offset 15 is not UTF-8;"
        " expected a RASR config file in UTF-8 text"
    ]


def test_the_emulator_refuses_a_json_segment_without_orth_naming_file_and_segment(run_emulator, tmp_path):
    f = tmp_path / "corpus.json"
    f.write_text('[{"name": "rec/1", "orth": "ab", "num_frames": 9}, {"name": "rec/2", "num_frames": 9}]')
    run = run_emulator(f"--*.corpus.file={f}")
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert f"corpus file {f}: segment #1 ('rec/2') has no 'orth'" in run.stderr
