"""Every script in examples/ runs, from a directory other than the repository.

Each example is run once, in a fresh Python process, with `FDLAYERS_FAST=1`
(examples that train or benchmark shrink their work when it is set), from a
temporary working directory so that no example depends on the current
directory. Specific examples get checks of what they print.
"""

import functools
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import background

REPO = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("*.py"))


def _run(name, directory):
    env = dict(os.environ, FDLAYERS_FAST="1", TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_BACKEND="tensorflow")
    # The checkout's fdlayers, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / name)], cwd=directory,
        env=env, capture_output=True, text=True, timeout=300,
    )


def start_background_runs(config, items):
    """Run the selected examples in the background (tests/background.py)."""
    for item in items:
        path = getattr(item, "callspec", None) and item.callspec.params.get(
            "path")
        if path is not None:
            background.submit(config, path.name,
                              functools.partial(_run, path.name))


@pytest.fixture
def run_example(request):
    """Run an example (once per session) and return its CompletedProcess."""
    def run(name):
        return background.submit(request.config, name,
                                 functools.partial(_run, name)).result()

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


def test_second_derivative_none_answers_with_zeros(run_example):
    out = run_example("second_derivative_none.py").stdout
    assert "linear network, nested GradientTapes: dy/dx has shape (1025, 1), " \
           "d2y/dx2 is None" in out, out
    assert re.search(r"linear network, input_derivatives: dy/dx in "
                     r"\[(\S+), \1\], d2y/dx2 in \[0\.0000, 0\.0000\]", out), out
    assert "tanh network, nested GradientTapes: dy/dx has shape (1025, 1), " \
           "d2y/dx2 is (1025, 1)" in out, out
    # Autodiff and finite differences agree (accuracy 4, h = 1/256).
    errors = [float(e) for e in re.findall(r"autodiff\| = (\S+)", out)]
    assert len(errors) == 4 and max(errors) < 1e-8, out


def test_convergence_slopes_are_the_accuracies(run_example, tmp_path):
    out = run_example("convergence.py").stdout
    rows = re.findall(r"^\s+(\d)\s+(\d)\s+(\S+)\s+(\S+)$", out, flags=re.M)
    assert len(rows) == 6, out
    for order, accuracy, interior, edges in rows:
        for fitted in (interior, edges):
            assert abs(float(fitted) - int(accuracy)) < 0.3, (order, accuracy, out)


def test_learn_dynamics_recovers_the_coefficients(run_example):
    out = run_example("learn_dynamics.py").stdout
    true = re.search(r"true\s+(\S+)\s+(\S+)", out)
    learned = re.search(r"learned, clean samples\s+(\S+)\s+(\S+)", out)
    assert true and learned, out
    for want, got in zip(true.groups(), learned.groups()):
        assert abs(float(got) / float(want) - 1) < 1e-3, out


def test_noise_guide_shows_which_method_when(run_example):
    """The quick run's small grids: on noise, Savitzky-Golay and a spectral
    cutoff beat a finite difference several times; on clean periodic data
    the spectral derivative is exact to rounding; on non-periodic data its
    wrap-around jump makes it the worst."""
    out = run_example("noise.py").stdout
    errors = {(signal, method): float(error) for signal, method, error in
              re.findall(r"^(\S.*?\S) +\| ([\w ]+)\(.*\) \| RMS (\S+)$", out,
                         flags=re.M)}
    fd, sg, sd = "FiniteDifference1D", "SavitzkyGolay1D", "SpectralDerivative1D"
    for signal in ("periodic", "non-periodic"):
        for method in (fd, sg, sd):
            for noise in ("clean", "noisy"):
                assert (f"{signal}, {noise}", method) in errors, out
        assert errors[f"{signal}, noisy", fd] > 5 * errors[f"{signal}, noisy", sg], out
    assert errors["periodic, clean", sd] < 1e-12, out
    assert errors["periodic, noisy", fd] > 5 * errors["periodic, noisy", sd], out
    assert errors["non-periodic, noisy", sd] > 5 * errors["non-periodic, noisy", sg], out


def test_physics_informed_prints_its_error(run_example):
    """The quick run trains a few steps only; its error is printed, finite."""
    out = run_example("physics_informed.py").stdout
    assert re.search(r"backend tensorflow: 2 epochs of 4 steps", out), out
    error = re.search(r"relative L2 error against exp\(-pi\^2 t\) "
                      r"sin\(pi x\): (\S+)", out)
    assert error and np.isfinite(float(error.group(1))), out



def test_imu_jitter_fits_on_time_stamps_beat_finite_differences(run_example):
    out = run_example("imu_jitter.py").stdout
    rows = re.findall(r"^(\w+)\(.*\), (nominal spacing|true time stamps): "
                      r"RMS error (\S+) m/s$", out, flags=re.M)
    errors = {(layer, stamps): float(error) for layer, stamps, error in rows}
    assert len(errors) == 3, out
    sg = errors[("SavitzkyGolay1D", "true time stamps")]
    assert sg < errors[("FiniteDifference1D", "true time stamps")] / 4, out
    assert sg < errors[("SavitzkyGolay1D", "nominal spacing")], out


def test_fields_prints_errors_that_fall_with_accuracy(run_example):
    """|∇f|, ∇²f and the vorticity against their closed forms, edges and
    corners included: accuracy 4 is far closer than accuracy 2."""
    out = run_example("fields.py").stdout
    rows = re.findall(r"^(.+?)\s+\w+\(accuracy=(\d)\)\s+\d\s+(\S+)\s+(\S+)$",
                      out, flags=re.M)
    worst = {(name, int(accuracy)): float(m) for name, accuracy, m, _ in rows}
    assert len(worst) == 6, out
    for name in ("|grad f|", "laplacian f", "vorticity"):
        assert worst[name, 4] < worst[name, 2] / 10, (name, out)
    assert worst["vorticity", 4] < 1e-5, out
