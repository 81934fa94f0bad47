"""Every script in examples/ runs, from a directory other than the repository.

Each example is run once, in a fresh Python process, with `FDLAYERS_FAST=1`
(examples that train or benchmark shrink their work when it is set), from a
temporary working directory so that no example depends on the current
directory. Specific examples get checks of what they print.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("*.py"))


@pytest.fixture(scope="module")
def run_example(tmp_path_factory):
    """Run an example (once per module) and return its CompletedProcess."""
    results = {}

    def run(name):
        if name not in results:
            cwd = tmp_path_factory.mktemp(name.replace(".", "_"))
            env = dict(os.environ, FDLAYERS_FAST="1", TF_CPP_MIN_LOG_LEVEL="3",
                       KERAS_BACKEND="tensorflow")
            # The checkout's fdlayers, installed or not.
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(REPO), env.get("PYTHONPATH")) if p)
            results[name] = subprocess.run(
                [sys.executable, str(REPO / "examples" / name)], cwd=cwd,
                env=env, capture_output=True, text=True, timeout=300,
            )
        return results[name]

    return run


def test_there_are_examples():
    assert EXAMPLES, "examples/ holds no scripts"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path, run_example):
    result = run_example(path.name)
    assert result.returncode == 0, (
        f"{path.name} exited with {result.returncode}:\n{result.stderr[-3000:]}"
    )
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stdout.strip(), f"{path.name} printed nothing"


def test_series_derivative_prints_three_everywhere(run_example):
    result = run_example("series_derivative.py")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"output shape:\s*\(1, 1024, 1\)", out), out
    assert re.search(r"exactly 3\.0 at 1024 of 1024 points", out), out
    # The values printed at both edges are 3, not the -1.5 or 1536 of the
    # hand-made layer the example replaces.
    for label in ("first values", "last values"):
        line = re.search(rf"{label}:\s*\[([^\]]*)\]", out)
        assert line, out
        assert [float(v) for v in line.group(1).split()] == [3.0] * 4, line.group(0)
