"""python -m eval.research: one tool, a subcommand per diagnostic, each listed in one line of --help."""

import os
import subprocess
import sys

import pytest

from eval.research.__main__ import SUBCOMMANDS, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_help_lists_every_subcommand_on_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for name, (_, summary) in SUBCOMMANDS.items():
        assert [line.split() for line in lines if line.strip().startswith(name + " ")] == [[name, *summary.split()]]


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_parses_its_own_options(capsys, name):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m eval.research {name} ")


def test_an_unknown_subcommand_is_refused_with_the_list():
    result = subprocess.run([sys.executable, "-m", "eval.research", "pesq_headroom"], capture_output=True,
                            text=True, cwd=REPO)
    assert result.returncode == 2
    assert "invalid choice: 'pesq_headroom'" in result.stderr and "'pesq-headroom'" in result.stderr
