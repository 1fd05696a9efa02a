"""The command line lists every stage, and each stage explains every option."""
import argparse
import re

from effnet.cli import build_parser

STAGES = ["doctor", "demo-data", "prepare", "index", "train"]


def test_help_lists_the_stages_in_pipeline_order(cli):
    out = cli("--help", check=True).stdout
    assert re.findall(r"^    (\S+)\s", out, flags=re.M) == STAGES


def test_every_option_of_every_stage_has_help():
    (subparsers,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(subparsers.choices) == STAGES
    for stage, parser in subparsers.choices.items():
        assert parser.description, stage
        for action in parser._actions:
            assert action.help, f"{stage} {action.option_strings} has no help text"


def test_stage_help_runs(cli):
    out = cli("prepare", "--help", check=True).stdout
    assert "--skip-corrupt" in out and "1-based" in out


def test_unknown_stage_is_rejected(cli):
    proc = cli("train-everything")
    assert proc.returncode == 2 and "invalid choice: 'train-everything'" in proc.stderr
