"""Consistent edges (issue 24): one exit-code rule, click-validated options, --help in the order
one works, tables that line up."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from imgrank.cli import cli


def run(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("command", ["train", "suspects", "dupes", "score", "top", "order", "restore"])
def test_nothing_to_do_yet_is_exit_0_with_one_line_saying_what_to_run(command):
    result = run(command)
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.exception is None
    said = (result.stderr + result.stdout).strip().splitlines()
    assert len(said) == 1, said


def test_a_port_out_of_range_is_a_usage_error_not_a_traceback():
    result = run("review", "--port", "99999", "--no-open")
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "0<=x<=65535" in result.output and "Traceback" not in result.output


def test_help_lists_the_commands_in_the_order_one_uses_them():
    listed = re.findall(r"^  (\S+)", run("--help").output.split("Commands:")[1], re.M)
    assert listed[:4] == ["scan", "status", "roots", "relabel"]
    for earlier, later in [("scan", "train"), ("relabel", "train"), ("train", "order"), ("order", "restore")]:
        assert listed.index(earlier) < listed.index(later)
    assert sorted(listed) == sorted(cli.commands)
