"""SavitzkyGolay1D: scipy's savgol_filter to 1e-8, noise, the layer contract."""

import math
from fractions import Fraction

import keras
import numpy as np
import pytest
from numpy.polynomial import polynomial
from scipy.signal import savgol_coeffs, savgol_filter

import fdlayers
from fdlayers import ops as fd_ops
from fdlayers import savgol
from harness import input_gradient, run_layer_test

SG = fdlayers.SavitzkyGolay1D

# (window, polyorder, order): smoothing, low and high degrees, every order up
# to the degree, wide and minimal windows.
COMBINATIONS = [
    (5, 2, 0), (5, 2, 1), (5, 2, 2), (7, 3, 1), (7, 3, 3), (9, 4, 2),
    (11, 2, 1), (11, 5, 4), (15, 6, 3), (21, 3, 1), (31, 4, 2), (9, 8, 8),
    (3, 1, 1), (1, 0, 0), (41, 10, 5),
]


def _numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def _ids(combination):
    return "w{}p{}d{}".format(*combination)


def _assert_relative(actual, desired, rtol):
    scale = np.abs(desired).max()
    np.testing.assert_allclose(actual, desired, rtol=0, atol=rtol * scale)


FLOAT64 = keras.backend.backend() != "jax"  # JAX runs float32 without x64
DTYPE = "float64" if FLOAT64 else "float32"
RTOL = 1e-8 if FLOAT64 else 1e-5


@pytest.mark.parametrize("window,polyorder,order", COMBINATIONS, ids=[_ids(c) for c in COMBINATIONS])
def test_same_equals_scipy_interp_edges_included(window, polyorder, order, rng):
    x = rng.standard_normal((2, 97, 3))
    layer = SG(order, window, polyorder, spacing=0.1, dtype=DTYPE)
    want = savgol_filter(x, window, polyorder, deriv=order, delta=0.1, axis=1,
                         mode="interp")
    _assert_relative(_numpy(layer(x.astype(DTYPE))), want, RTOL)


@pytest.mark.parametrize("window,polyorder,order", COMBINATIONS[:8], ids=[_ids(c) for c in COMBINATIONS[:8]])
def test_periodic_equals_scipy_wrap_and_valid_the_interior(
        window, polyorder, order, rng):
    x = rng.standard_normal((2, 64, 2))
    want = savgol_filter(x, window, polyorder, deriv=order, delta=0.5, axis=1,
                         mode="wrap")
    periodic = SG(order, window, polyorder, 0.5, "periodic", dtype=DTYPE)
    _assert_relative(_numpy(periodic(x.astype(DTYPE))), want, RTOL)
    r = window // 2
    valid = SG(order, window, polyorder, 0.5, "valid", dtype=DTYPE)
    _assert_relative(_numpy(valid(x.astype(DTYPE))), want[:, r:64 - r], RTOL)


@pytest.mark.parametrize("window,polyorder,order", COMBINATIONS, ids=[_ids(c) for c in COMBINATIONS])
def test_weights_are_the_least_squares_fit_and_exact(window, polyorder, order):
    """Against scipy at the centre; at every position against NumPy's
    `polyfit` of each unit sample (scipy's off-centre `savgol_coeffs` loses
    digits to its Vandermonde solve at high degrees, 0.2 off for window 41,
    degree 10, order 5 at the window's end)."""
    r = window // 2
    nodes = np.arange(-r, r + 1)
    fits = polynomial.polyfit(nodes, np.eye(window), polyorder)
    derivative = polynomial.polyder(fits, order)
    for position in range(-r, r + 1):
        weights = savgol.coefficients(order, window, polyorder, position)
        want = polynomial.polyval(position, derivative)
        np.testing.assert_allclose(weights, want, rtol=0,
                                   atol=1e-8 * np.abs(want).max())
    # scipy solves in float64 too (3e-9 off for window 9, degree 8): 1e-8 of
    # the largest weight, the filter's tolerance.
    want = savgol_coeffs(window, polyorder, deriv=order, use="dot")
    np.testing.assert_allclose(savgol.coefficients(order, window, polyorder),
                               want, rtol=0, atol=1e-8 * np.abs(want).max())
    exact = savgol.coefficients(order, window, polyorder, 0, exact=True)
    assert all(isinstance(w, Fraction) for w in exact)
    # Each float weight is its exact value rounded once.
    assert [float(w) for w in exact] == list(
        savgol.coefficients(order, window, polyorder, 0))
    # Exact for every polynomial of degree ≤ polyorder: d^order/ds^order of
    # s^k at 0 is k! when k == order.
    for k in range(polyorder + 1):
        value = sum(w * Fraction(j) ** k for w, j in zip(exact, range(-r, r + 1)))
        assert value == (math.factorial(k) if k == order else 0)


def test_polynomials_are_exact_at_every_point():
    t = np.arange(40.0) * 0.25
    x = (0.5 * t ** 3 - t ** 2 + 2).reshape(1, -1, 1)
    second = 3.0 * t - 2.0
    y = _numpy(SG(2, 9, 3, 0.25, dtype=DTYPE)(x.astype(DTYPE)))[0, :, 0]
    np.testing.assert_allclose(y, second, rtol=0, atol=1e-9 if FLOAT64 else 1e-3)


def _noisy_sine(rng, steps=600, spacing=0.01, sigma=0.01):
    t = np.arange(steps) * spacing
    x = np.sin(t) + rng.normal(0, sigma, steps)
    return t, x.reshape(1, -1, 1)


def test_noise_is_suppressed_several_fold():
    """sin + white noise σ = 0.01, h = 0.01: the derivative's error is
    several times smaller than FiniteDifference1D's, at every point."""
    rng = np.random.default_rng(7)
    t, x = _noisy_sine(rng)
    fd = _numpy(fdlayers.FiniteDifference1D(1, 0.01, dtype=DTYPE)(x))[0, :, 0]
    sg = _numpy(SG(1, 41, 3, 0.01, dtype=DTYPE)(x))[0, :, 0]
    fd_error = np.sqrt(np.mean((fd - np.cos(t)) ** 2))
    sg_error = np.sqrt(np.mean((sg - np.cos(t)) ** 2))
    # FD: σ·√2/(2h) ≈ 0.71 RMS; SG over 41 samples: ≈ 0.02.
    assert fd_error > 10 * sg_error, (fd_error, sg_error)
    assert np.abs(sg - np.cos(t)).max() < 0.2


@pytest.mark.parametrize("kwargs,shape", [
    ({"order": 1, "window": 7, "polyorder": 3}, (2, 20, 2)),
    ({"order": 0, "window": 5, "polyorder": 2, "padding": "valid"}, (2, 20, 1)),
    ({"order": 2, "window": 9, "polyorder": 4, "padding": "periodic",
      "spacing": 0.5}, (3, 16)),
    ({"order": 1, "window": 5, "polyorder": 2, "axis": 2}, (2, 4, 12)),
])
def test_layer_contract(kwargs, shape, rng, tmp_path):
    x = rng.standard_normal(shape).astype("float32")
    run_layer_test(SG, kwargs, x, tmp_path=tmp_path)


def test_config_has_every_argument_normalised():
    layer = SG(order=np.int64(1), window=7, polyorder=3, spacing=2,
               padding="PERIODIC", axis=-2)
    config = layer.get_config()
    assert {k: config[k] for k in ("order", "window", "polyorder", "spacing",
                                   "padding", "axis")} == {
        "order": 1, "window": 7, "polyorder": 3, "spacing": 2.0,
        "padding": "periodic", "axis": -2}
    assert type(config["order"]) is int and type(config["spacing"]) is float


def test_input_gradient_is_the_adjoint(rng):
    x = rng.standard_normal((1, 12, 1)).astype("float32")
    g = rng.standard_normal((1, 12, 1)).astype("float32")
    layer = SG(1, 5, 2, 0.5)
    matrix = np.stack([_numpy(layer(e.reshape(1, 12, 1).astype("float32")))[0, :, 0]
                       for e in np.eye(12)], axis=1)
    grad = input_gradient(lambda v: keras.ops.multiply(layer(v), g), x)
    np.testing.assert_allclose(grad[0, :, 0], matrix.T @ g[0, :, 0], rtol=1e-5,
                               atol=1e-5)


def test_masked_runs_are_filtered_as_their_own_sequences(rng):
    x = rng.standard_normal((2, 30, 1))
    mask = np.ones((2, 30), bool)
    mask[0, 20:] = False
    mask[1, 6:9] = False  # leaves a run of 6 (< window 7) and one of 21
    poisoned = np.where(mask[..., None], x, np.nan).astype(DTYPE)
    y = _numpy(fd_ops.savitzky_golay(poisoned, 1, 7, 3, mask=mask))
    out = _numpy(fd_ops.savitzky_golay_mask(mask, 3, 1, 7, 3))
    assert not np.isnan(y).any()
    assert not out[1, :6].any() and out[1, 9:].all() and out[0, :20].all()
    for b, run in ((0, slice(0, 20)), (1, slice(9, 30))):
        want = savgol_filter(x[b, run], 7, 3, deriv=1, axis=0, mode="interp")
        _assert_relative(y[b, run], want, RTOL)


@pytest.mark.parametrize("kwargs,error,fragment", [
    ({"window": 6}, ValueError, "`window` must be odd.*Received: window=6"),
    ({"window": 0}, ValueError, "`window` must be an integer ≥ 1"),
    ({"window": 257}, ValueError, "`window` must be at most 255"),
    ({"window": 5.0}, TypeError, "`window` must be an integer"),
    ({"window": 5, "polyorder": 5}, ValueError,
     "`polyorder` must be less than `window`.*polyorder=5, window=5"),
    ({"window": 71, "polyorder": 40}, ValueError, "`polyorder` must be at most 32"),
    ({"order": 3, "polyorder": 2}, ValueError,
     "`order` must be at most `polyorder`.*order=3, polyorder=2"),
    ({"order": -1}, ValueError, "`order` must be an integer ≥ 0"),
    ({"order": True}, TypeError, "`order` must be an integer"),
    ({"spacing": 0.0}, ValueError, "`spacing` must be a positive finite number"),
    ({"spacing": float("nan")}, ValueError, "`spacing` must be a positive finite"),
    ({"spacing": "1"}, TypeError, "`spacing` must be a positive finite number"),
    ({"padding": "causal"}, ValueError,
     "`padding` must be one of 'same', 'valid', 'periodic'.*padding='causal'"),
    ({"axis": 0}, ValueError, "`axis` must not be the batch axis"),
])
def test_bad_arguments_are_refused(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        SG(**kwargs)


def test_a_sequence_shorter_than_the_window_is_refused():
    layer = SG(1, window=7, polyorder=2)
    with pytest.raises(ValueError, match="needs at least 7 steps.*Received: 6 steps"):
        layer(np.zeros((1, 6, 1), "float32"))
    assert tuple(layer(np.zeros((1, 7, 1), "float32")).shape) == (1, 7, 1)


def test_fdlayers_exports_it():
    assert fdlayers.SavitzkyGolay1D is SG
