"""The `fdlayers` command: the README's demo, its help and its errors."""

import re
import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "fdlayers", *args],
                          capture_output=True, text=True, timeout=300)


def test_demo_reports_small_errors_and_the_accuracy_as_rate():
    result = run("demo", "--steps", "48")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "(1, 1024, 1)" in out and "[3.]" in out
    rows = re.findall(r"^\s*(\S+)\s+(\d)\s+(\d)\s+(\w+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$",
                      out, flags=re.M)
    assert len(rows) >= 20
    for function, order, accuracy, padding, *errors, rate in rows:
        if rate == "exact":
            # A polynomial of degree < order + accuracy: rounding only
            # (values up to 5e3, weights up to ≈ 2e6 for order 4).
            assert float(errors[0]) < 1e-4 and float(errors[2]) < 1e-4
        elif function == "sin":
            # The observed rate reaches the accuracy (or more, where the
            # leading error term vanishes at the edge t = 0).
            assert float(rate) > int(accuracy) - 0.3, (function, order, accuracy)


@pytest.mark.parametrize("args", [["--help"], ["demo", "--help"]])
def test_help(args):
    result = run(*args)
    assert result.returncode == 0 and "usage: fdlayers" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["demo", "--steps", "3"], "expected an integer ≥ 16, got '3'"),
    (["demo", "--steps", "many"], "expected an integer ≥ 16, got 'many'"),
    (["demo", "--spacing", "-1"], "expected a positive number, got '-1'"),
    (["demo", "--spacing", "inf"], "expected a positive number, got 'inf'"),
    (["transmogrify"], "invalid choice"),
    ([], "required"),
])
def test_bad_arguments_exit_with_one_line(args, message):
    result = run(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
