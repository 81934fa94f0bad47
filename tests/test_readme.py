"""The README's promises: its code runs, and CI runs its test command."""

import pathlib
import re
import subprocess
import sys

import pytest

import background

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


# The programs run one after another in one fresh process (one import of
# TensorFlow, not one per program), each in a namespace and a working
# directory of its own, with Keras' global settings put back between them.
_RUNNER = r"""
import contextlib, io, json, os, sys, tempfile, traceback
programs = json.loads(sys.stdin.read())
results = []
for code in programs:
    out = io.StringIO()
    with tempfile.TemporaryDirectory() as directory:
        os.chdir(directory)
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(code, "<README program>", "exec"),
                     {"__name__": "__main__"})
            error = None
        except BaseException:
            error = traceback.format_exc()
        os.chdir("/")
    results.append({"stdout": out.getvalue(), "error": error})
    if "keras" in sys.modules:
        import keras
        keras.config.set_dtype_policy("float32")
        keras.config.set_floatx("float32")
        keras.utils.clear_session()
print(json.dumps(results))
"""


def _alone(code):
    """Whether a program must have a process of its own: it sets up devices,
    which TensorFlow allows only before it first uses them."""
    return "device_configuration" in code or "set_visible_devices" in code


def _run(programs, directory):
    import json

    result = subprocess.run([sys.executable, "-c", _RUNNER],
                            input=json.dumps(programs), cwd=directory,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _run_all(directory):
    shared = iter(_run([c for c in PROGRAMS if not _alone(c)], directory))
    return [_run([c], directory)[0] if _alone(c) else next(shared)
            for c in PROGRAMS]


def start_background_runs(config, items):
    """Run the programs in the background (tests/background.py)."""
    if any(item.name.startswith("test_readme_program_runs") for item in items):
        background.submit(config, "README programs", _run_all)


@pytest.fixture
def program_results(request):
    return background.submit(request.config, "README programs",
                             _run_all).result()


@pytest.mark.parametrize("index", range(len(PROGRAMS)),
                         ids=[code.split("\n")[0][:30] for code in PROGRAMS])
def test_readme_program_runs(index, program_results):
    code, result = PROGRAMS[index], program_results[index]
    assert result["error"] is None, result["error"][-2000:]
    # Each comment '# value' after a print() is the output the README promises.
    for line in code.splitlines():
        if line.startswith("print(") and "#" in line:
            assert line.split("#", 1)[1].strip() in result["stdout"]
