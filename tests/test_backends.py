"""The backend-neutral tests, run again on JAX and on PyTorch.

The suite itself runs on TensorFlow (tests/conftest.py). These tests run the
modules that exercise fdlayers through Keras, on each other backend, in a
fresh Python process with `KERAS_BACKEND` set (a backend is chosen once per
process). Both runs start as soon as collection ends and run alongside the
TensorFlow tests; the tests here wait for them.

Which tests, and why:

- test_layers.py, test_irregular.py, test_ops.py: the layer contract
  (harness.py), models, training, saving, argument and input errors, dtypes,
  static and per-sample coordinates, and every execution path of the op with
  its gradient and second derivative, with each backend's autodiff and
  compiler (per_backend.py).
- test_masking.py, test_savgol.py, test_autodiff.py, test_partials.py,
  test_training.py: masks run by run, SavitzkyGolay1D against scipy, and
  the derivatives of a model with respect to its input, whose gradients are
  each backend's own, with the weight gradients of losses built from them
  and model.fit with such a loss.
- test_properties.py, test_fuzzing.py, test_robustness.py: random
  configurations against an independent reference, junk arguments,
  non-finite samples, extremes and threads, on each backend's paths.
- test_bounded_cost.py: the most expensive accepted configurations, and a
  crafted model file, in a child process under limits of memory and time;
  many distinct lengths; caches bounded by bytes.
- test_export.py: `model.export` traces each backend's own way (on JAX
  with symbolic lengths), and on PyTorch fails as Keras itself does.
- test_cli_backends.py: `fdlayers demo`, float64 on each backend.
- test_spectral.py: SpectralDerivative1D through each backend's FFT, its
  gradients in each compiled mode, and the layer contract.
- test_savgol_irregular.py: SavitzkyGolay1D on coordinates and time stamps,
  whose least-squares weights each backend computes in its own graph.
- test_fields.py: partial derivatives and vector calculus of fields, on
  each backend's paths (JAX compiles each operator whole).
- Tests marked `tensorflow_only` (lengths known only at run time in a
  TensorFlow graph, and its run-time errors) are deselected there by
  conftest.py.
- Of each cross product, the cases that the default run takes on every
  backend (covering.py): every value of every argument, every pair where
  a test is marked `pairwise`; `FDLAYERS_SLOW=1` takes them all.
- Not repeated: test_stencils.py (NumPy only, no backend), test_validation.py
  (numerical validation on `tf.range` grids; the stencil is the same
  `keras.ops` code on every backend, and test_ops checks each backend's paths
  against the same dense references), and the command, README and example
  tests, which run TensorFlow programs.
"""

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NEUTRAL_MODULES = ["tests/test_layers.py", "tests/test_irregular.py",
                   "tests/test_ops.py", "tests/test_masking.py",
                   "tests/test_savgol.py", "tests/test_autodiff.py",
                   "tests/test_partials.py", "tests/test_training.py",
                   "tests/test_properties.py", "tests/test_fuzzing.py",
                   "tests/test_robustness.py", "tests/test_bounded_cost.py",
                   "tests/test_export.py", "tests/test_cli_backends.py",
                   "tests/test_savgol_irregular.py"]
NEUTRAL_MODULES += ["tests/test_spectral.py"]
NEUTRAL_MODULES += ["tests/test_fields.py"]
NEUTRAL_MODULES += ["tests/test_taylor.py"]
BACKENDS = ["jax", "torch"]
TIMEOUT = 1800  # seconds for each backend's run
_RUNS = pytest.StashKey[dict]()


def start_backend_runs(config):
    """Start a run of the neutral modules on each installed backend, once.

    conftest.py calls this as soon as collection ends, so that the runs use
    the cores while the TensorFlow tests run; the tests below wait for them.
    Returns backend -> (process, log file).
    """
    if _RUNS in config.stash:
        return config.stash[_RUNS]
    directory = tempfile.mkdtemp(prefix="fdlayers-backends-")
    started = {}
    for backend in BACKENDS:
        if importlib.util.find_spec(backend) is None:
            continue
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        # The checkout's fdlayers, installed or not.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        log = open(os.path.join(directory, f"{backend}.log"), "w+")
        process = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             *NEUTRAL_MODULES],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        started[backend] = process, log

    def stop():
        for process, log in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
        shutil.rmtree(directory, ignore_errors=True)

    config.add_cleanup(stop)
    config.stash[_RUNS] = started
    return started


@pytest.fixture(scope="module")
def runs(request):
    return start_backend_runs(request.config)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_neutral_tests_pass(backend, runs, record_property):
    if backend not in runs:
        pytest.skip(f"{backend} is not installed: pip install -e '.[{backend}]'")
    process, log = runs[backend]
    try:
        code = process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    log.seek(0)
    output = log.read()
    lines = output.strip().splitlines()
    summary = lines[-1] if lines else "(no output)"
    record_property("backend run", f"KERAS_BACKEND={backend}: {summary}")
    assert code == 0, (
        f"The backend-neutral tests failed on KERAS_BACKEND={backend} "
        f"(exit code {code}):\n{output[-20000:]}")
    assert " passed" in summary and "failed" not in summary, output[-5000:]
