"""The README's promises: its code runs, and CI runs its test command."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_two_setup_commands():
    commands = _blocks("bash")[0].strip().splitlines()
    assert len(commands) == 2
    demo, tests = commands
    assert demo.startswith("python3.11 -m venv .venv") and demo.endswith("fdlayers demo")
    assert tests.startswith("python3.11 -m venv .venv") and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    test_command = _blocks("bash")[0].strip().splitlines()[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


# Programs, as opposed to the one-line signatures of the API reference.
PROGRAMS = [code for code in _blocks("python") if "import" in code]


def test_readme_has_programs():
    assert len(PROGRAMS) >= 2


@pytest.mark.parametrize("code", PROGRAMS, ids=lambda code: code.split("\n")[0][:30])
def test_readme_program_runs(code, tmp_path):
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    # Each comment '# value' after a print() is the output the README promises.
    for line in code.splitlines():
        if line.startswith("print(") and "#" in line:
            assert line.split("#", 1)[1].strip() in result.stdout
