"""Analytic validation of fdlayers.derivative and FiniteDifference1D on tf.range grids.

Every input is sampled on `t = tf.cast(tf.range(n), tf.float64) * h + t0` and every
result is compared with an independent reference: analytic derivatives of
polynomials, sin and exp; numpy.gradient; the exact discrete symbol of the stencil
on periodic modes; findiff.

Rounding bounds use the *rounding scale* of output point i,

    S_i = Σ_k |w_ik / h**order| · |x_k|,

where row i of the documented plan (built by `plan_matrix` from
`fdlayers.coefficients`, itself checked in exact arithmetic in test_stencils.py)
holds the weights point i uses. Any evaluation of Σ_k w_ik x_k / h**order in
floating point with unit roundoff u errs by at most about (width + 2)·u·S_i.
"""

import math

import findiff
import keras
import numpy as np
import pytest
import tensorflow as tf
from numpy.polynomial import polynomial as P

import fdlayers

EPS64 = np.finfo(np.float64).eps
EPS32 = float(np.finfo(np.float32).eps)
ORDERS = (1, 2, 3, 4)
CENTRAL_CASES = [(o, a) for o in ORDERS for a in (2, 4, 6)]
CAUSAL_CASES = [(o, a) for o in ORDERS for a in (1, 2, 3, 4, 6)]


def radius(order, accuracy):
    """Half-width of the central stencil, as documented: (order-1)//2 + accuracy//2."""
    return (order - 1) // 2 + accuracy // 2


def grid(n, h, t0):
    """Sample points t0 + i·h, i < n, built with tf.range: shape (len(t0), n)."""
    t0 = tf.reshape(tf.constant(t0, dtype=tf.float64), (-1, 1))
    return (tf.cast(tf.range(n), tf.float64)[None, :] * h + t0).numpy()


def fd(x, **kwargs):
    """fdlayers.derivative on a NumPy array, back as NumPy."""
    return np.asarray(fdlayers.derivative(tf.constant(x), **kwargs))


def plan_matrix(order, accuracy, padding, n):
    """Dense (outputs, n) matrix of the documented stencils, unit spacing.

    same: central stencil where it fits, point i < r uses x[0:order+accuracy]
    (mirrored at the far end); valid: central points only; periodic: central
    stencil wrapped around; causal: backward stencil over min(t+1, order+accuracy)
    samples, zero rows for t < order.
    """
    window, r = order + accuracy, radius(order, accuracy)
    matrix = np.zeros((n, n))
    if padding == "causal":
        for t in range(order, n):
            first = max(0, t - window + 1)
            matrix[t, first:t + 1] = fdlayers.coefficients(order, range(first - t, 1))
        return matrix
    central = fdlayers.coefficients(order, range(-r, r + 1))
    for i in range(n):
        if padding == "periodic":
            np.add.at(matrix[i], (i + np.arange(-r, r + 1)) % n, central)
        elif r <= i < n - r:
            matrix[i, i - r:i + r + 1] = central
        elif padding == "same" and i < r:
            matrix[i, :window] = fdlayers.coefficients(order, range(-i, window - i))
        elif padding == "same":
            matrix[i, n - window:] = fdlayers.coefficients(order, range(n - window - i,
                                                                        n - i))
    return matrix[r:n - r] if padding == "valid" else matrix


def rounding_scale(x, matrix, h, order):
    """S[b, i, c] = Σ_k |matrix[i, k]| / h**order · |x[b, k, c]| (steps on axis 1)."""
    return np.einsum("ik,bkc->bic", np.abs(matrix), np.abs(x)) / h**order


def random_polynomials(rng, degree, count):
    """`count` coefficient vectors of degree `degree`, c_j ~ N(0, 1) / j!."""
    scale = np.array([1.0 / math.factorial(j) for j in range(degree + 1)])
    return rng.standard_normal((count, degree + 1)) * scale


def sample_polynomials(coefs, t, order):
    """Values and exact order-th derivatives of polynomials on t: (B, n, count)."""
    values = np.stack([P.polyval(t, c) for c in coefs], axis=-1)
    derivs = np.stack([P.polyval(t, P.polyder(c, order)) for c in coefs], axis=-1)
    return values, derivs


# --------------------------------------------------------------------------
# Exactness on polynomials

EXACT_CASES = ([(o, a, p) for p in ("same", "valid") for o, a in CENTRAL_CASES]
               + [(o, a, "causal") for o, a in CAUSAL_CASES])
T0S = (0.0, -3.7, 11.25)
EXACT_BOUND = 1000 * EPS64  # × the rounding scale S_i


@pytest.mark.parametrize("h", [1.0, 0.1, 0.37])
@pytest.mark.parametrize("order,accuracy,padding", EXACT_CASES)
def test_polynomials_are_differentiated_exactly(order, accuracy, padding, h, rng):
    """Degree < order + accuracy: exact to rounding at every point, edges included
    (causal: at every point with order+accuracy-1 samples of history).

    Bound: |error| ≤ EXACT_BOUND · S_i = 1000·eps·S_i (≈ 2.2e-13·S_i, tighter than
    1e-9·S_i). Arithmetic rounding alone is ≤ (width+2)·eps·S_i; the rest covers the
    rounding of the samples and of the reference, evaluated on the inexact float64
    grid t_i (measured: ≤ 25·eps·S_i).
    """
    window = order + accuracy
    n = 3 * window + 7
    t = grid(n, h, T0S)
    coefs = random_polynomials(rng, window - 1, 3)
    x, exact = sample_polynomials(coefs, t, order)
    y = fd(x, order=order, spacing=h, accuracy=accuracy, padding=padding)
    matrix = plan_matrix(order, accuracy, padding, n)
    scale = rounding_scale(x, matrix, h, order)
    r = radius(order, accuracy)
    if padding == "valid":
        exact = exact[:, r:n - r]
    assert y.shape == exact.shape
    points = slice(window - 1, None) if padding == "causal" else slice(None)
    error = np.abs(y - exact)[:, points]
    bound = EXACT_BOUND * scale[:, points]
    worst = np.unravel_index(np.argmax(error / bound), error.shape)
    assert np.all(error <= bound), (
        f"worst point {worst}: error {error[worst]:.3g}, bound {bound[worst]:.3g}")


@pytest.mark.parametrize("order,accuracy", CAUSAL_CASES)
def test_causal_first_steps(order, accuracy, rng):
    """Causal step t < order+accuracy-1 uses the backward stencil over its t+1
    samples: exact for every polynomial of degree ≤ t; steps t < order are 0.

    With causality (next test), exactness for all degrees ≤ t on t+1 samples
    determines the weights uniquely, so this pins down the documented rule.
    """
    window = order + accuracy
    n = window + 4
    h = 0.3
    t = grid(n, h, (0.7, -2.0))
    coefs = [random_polynomials(rng, d, 1)[0] for d in range(window)]  # channel d
    x, exact = sample_polynomials(coefs, t, order)
    y = fd(x, order=order, spacing=h, accuracy=accuracy, padding="causal")
    scale = rounding_scale(x, plan_matrix(order, accuracy, "causal", n), h, order)
    np.testing.assert_array_equal(y[:, :order], 0.0)
    for degree in range(window):
        steps = slice(max(order, degree), None)
        error = np.abs(y[:, steps, degree] - exact[:, steps, degree])
        assert np.all(error <= EXACT_BOUND * scale[:, steps, degree]), (degree, error)


# --------------------------------------------------------------------------
# Convergence on sin and exp

# Where to measure, and the h range: the smallest h is 10**(-c / (order+accuracy)),
# where truncation (≈ C·h**accuracy) still dominates rounding (≈ eps·Σ|w|/h**order)
# by orders of magnitude; the central interior has small constants and tolerates
# larger h than the one-sided edge windows.
REGIONS = {"interior": ("same", 8.0), "edge": ("same", 12.0), "history": ("causal", 12.0)}
# Left out: 'same' edges for order+accuracy ≥ 9 (orders 3 and 4 at accuracy 6),
# and causal points on exp for the same stencils. There no h range exists in
# float64 where the slope is within ±0.3: wherever rounding is negligible, the
# next truncation term of these wide one-sided windows (relative size
# ≈ h·(order+accuracy)/2) still tilts it by more than 0.3 (measured: best
# deviation 0.3-0.6). That is float64 arithmetic, not the implementation; the
# polynomial test above checks the formal accuracy of those windows exactly.
WIDE = 9
CONVERGENCE_CASES = (
    [("interior", o, a, f) for o, a in CENTRAL_CASES for f in ("sin", "exp")]
    + [("edge", o, a, f) for o, a in CENTRAL_CASES if o + a < WIDE
       for f in ("sin", "exp")]
    + [("history", o, a, "sin") for o, a in CAUSAL_CASES]
    + [("history", o, a, "exp") for o, a in CAUSAL_CASES if o + a < WIDE]
)


def max_error(name, order, accuracy, region, h, length, t0=0.3):
    """Max over a region of the error on [t0, t0 + length] sampled at h.

    exp: |error| / e^t. sin: two channels, sin(t + φ) with φ such that the
    (order+accuracy)-th derivative is ±1 at the left end (channel 0) or at the
    right end (channel 1), so that the next truncation term vanishes at the edge
    whose error the channel gives ('edge' region); elsewhere both channels count.
    """
    window, r = order + accuracy, radius(order, accuracy)
    n = int(round(length / h)) + 1
    t = grid(n, h, [t0])[0]
    if name == "sin":
        phases = np.pi / 2 - window * np.pi / 2 - np.array([t[0], t[-1]])
        x = np.sin(t[:, None] + phases)
        error = np.abs(fd(x[None], order=order, spacing=h, accuracy=accuracy,
                          padding=REGIONS[region][0])[0]
                       - np.sin(t[:, None] + phases + order * np.pi / 2))
    else:
        y = fd(np.exp(t)[None, :, None], order=order, spacing=h, accuracy=accuracy,
               padding=REGIONS[region][0])[0, :, 0]
        error = (np.abs(y - np.exp(t)) / np.exp(t))[:, None]
    if region == "interior":
        return error[r:n - r].max()
    if region == "edge":
        return max(error[:r, 0].max(), error[n - r:, -1].max())
    return error[window - 1:].max()


@pytest.mark.parametrize("region,order,accuracy,name", CONVERGENCE_CASES)
def test_convergence_rate(region, order, accuracy, name):
    """The log-log slope of the max error vs h, over two halvings of h, is
    `accuracy` ± 0.3 (errors relative to e^t for exp)."""
    window = order + accuracy
    h_min = max(10 ** (-REGIONS[region][1] / window), 2.0**-10)
    steps = h_min * np.array([4.0, 2.0, 1.0])
    length = steps[0] * max(math.ceil(2.0 / steps[0]), 2 * window)
    errors = [max_error(name, order, accuracy, region, h, length) for h in steps]
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - accuracy) <= 0.3, (slope, steps, errors)


# --------------------------------------------------------------------------
# float32 against float64

FLOAT32_CASES = [(1, 2), (2, 4), (3, 6), (4, 2), (4, 6)]


@pytest.mark.parametrize("padding", ["same", "valid", "periodic", "causal"])
@pytest.mark.parametrize("order,accuracy", FLOAT32_CASES)
def test_float32_within_rounding_of_float64(order, accuracy, padding, rng):
    """|y32 − y64| ≤ (m_i + 2) · u · S_i, the README's bound, with u = 2⁻²⁴ the
    float32 unit roundoff, m_i the number of samples point i uses and S_i its
    rounding scale: rounding the input to float32 (u·S_i), the
    weight·h**-order to float32 (u·S_i), the products and the m_i − 1
    additions (≈ m_i·u·S_i)."""
    n, h = 48, 0.1
    t = grid(n, h, (0.0, 5.0))
    x64 = np.sin(3 * t)[..., None] + 0.5 * rng.standard_normal((2, n, 3))
    y64 = fd(x64, order=order, spacing=h, accuracy=accuracy, padding=padding)
    y32 = fd(x64.astype(np.float32), order=order, spacing=h, accuracy=accuracy,
             padding=padding)
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    matrix = plan_matrix(order, accuracy, padding, n)
    used = np.count_nonzero(matrix, axis=1)[None, :, None]
    bound = (used + 2) * (EPS32 / 2) * rounding_scale(x64, matrix, h, order)
    error = np.abs(y32.astype(np.float64) - y64)
    worst = np.unravel_index(np.argmax(error / np.maximum(bound, 1e-300)), error.shape)
    assert np.all(error <= bound), (
        f"worst point {worst}: error {error[worst]:.3g}, bound {bound[worst]:.3g}, "
        f"= {error[worst] / bound[worst] * (used.ravel()[worst[1]] + 2):.3g} "
        "u·S")


# --------------------------------------------------------------------------
# numpy.gradient


@pytest.mark.parametrize("shape,axis", [
    ((7, 11), 1), ((7, 11), 0), ((7, 11), -1),
    ((5, 9, 3), 1), ((5, 9, 3), 2), ((5, 9, 3), 0),
    ((3, 8, 4, 6), 1), ((3, 8, 4, 6), 2), ((3, 8, 4, 6), 3), ((3, 8, 4, 6), 0),
])
def test_matches_numpy_gradient(shape, axis, rng):
    """order=1, accuracy=2, 'same' is numpy.gradient(x, h, axis, edge_order=2)."""
    h = 0.37
    x = rng.standard_normal(shape)
    y = fd(x, order=1, spacing=h, accuracy=2, padding="same", axis=axis)
    reference = np.gradient(x, h, axis=axis, edge_order=2)
    # Σ|w| ≤ 4 (edge row 3/2, 2, 1/2): both sides round within 4·eps·4·max|x|/h.
    np.testing.assert_allclose(y, reference, rtol=0,
                               atol=16 * EPS64 * np.abs(x).max() / h)


# --------------------------------------------------------------------------
# Periodic: exact discrete symbol


@pytest.mark.parametrize("order,accuracy", CENTRAL_CASES)
def test_periodic_mode_gets_the_stencil_symbol(order, accuracy, rng):
    """x_j = cos(θj + φ), θ = 2πm/n, gives Re(S·e^{i(θj+φ)}) / h**order with
    S = Σ_k w_k e^{iθ o_k}: the central stencil acting on a periodic mode."""
    n, h = 24, 0.5
    modes = np.array([0, 1, 5, 11, 12])  # 12 = n/2 is the Nyquist mode
    phases = rng.uniform(0, 2 * np.pi, len(modes))
    j = tf.range(n).numpy()
    # θ·j reduced exactly modulo 2π, so the samples are exactly n-periodic.
    angle = 2 * np.pi * ((modes[None, :] * j[:, None]) % n) / n + phases
    x = np.cos(angle)[None]
    offsets, weights = fdlayers.stencil(order, accuracy, "central")
    theta = 2 * np.pi * modes / n
    symbol = (weights[:, None] * np.exp(1j * theta[None, :] * offsets[:, None])).sum(0)
    expected = np.real(symbol * np.exp(1j * angle)) / h**order
    y = fd(x, order=order, spacing=h, accuracy=accuracy, padding="periodic")
    tol = (len(offsets) + 8) * EPS64 * np.abs(weights).sum() / h**order
    np.testing.assert_allclose(y[0], expected, rtol=0, atol=tol)


# --------------------------------------------------------------------------
# Causality


@pytest.mark.parametrize("future", ["finite", "nonfinite"])
@pytest.mark.parametrize("order,accuracy", [(1, 1), (1, 2), (2, 3), (3, 4), (4, 6)])
def test_causal_output_ignores_the_future(order, accuracy, future, rng):
    """output[t] is bitwise unchanged when x[t+1:] changes, even to inf/nan: it may
    depend on x[0..t] only."""
    n, window = 30, order + accuracy
    cuts = sorted({0, order - 1, order, window - 2, window - 1, window, 17, n - 2})
    cuts = [c for c in cuts if 0 <= c < n - 1]
    # One batch row per cut, and the same batch shape for both calls: a matmul
    # may round differently for another batch size, which is not causality.
    x = np.repeat(rng.standard_normal((1, n, 2)), len(cuts), axis=0)
    changed = x.copy()
    for b, cut in enumerate(cuts):
        if future == "finite":
            changed[b, cut + 1:] = 1e3 * rng.standard_normal((n - cut - 1, 2))
        else:
            changed[b, cut + 1:] = np.nan
            changed[b, cut + 1::2, 1] = np.inf
    kwargs = dict(order=order, spacing=0.25, accuracy=accuracy, padding="causal")
    y = fd(x, **kwargs)
    y_changed = fd(changed, **kwargs)
    for b, cut in enumerate(cuts):
        np.testing.assert_array_equal(
            y_changed[b, :cut + 1], y[b, :cut + 1],
            err_msg=f"outputs up to step {cut} changed with the samples after it")


# --------------------------------------------------------------------------
# Layer and op


@pytest.mark.parametrize("padding", ["same", "valid", "periodic", "causal"])
@pytest.mark.parametrize("order,accuracy", [(1, 2), (2, 4), (3, 2), (4, 6)])
def test_layer_agrees_with_op(order, accuracy, padding, rng):
    """Eager layer call = op, bitwise; a compiled Keras model (tf.function) agrees to
    rounding; 'valid' shortens by width − 1 with findiff's central width."""
    n, h = 33, 0.2
    x = np.sin(grid(n, h, (0.0, 1.0, 2.0)))[..., None] * np.array([1.0, -2.0])
    x = (x + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)
    kwargs = dict(order=order, spacing=h, accuracy=accuracy, padding=padding)
    y_op = fd(x, **kwargs)
    layer = fdlayers.FiniteDifference1D(**kwargs)
    y_layer = np.asarray(layer(tf.constant(x)))
    np.testing.assert_array_equal(y_layer, y_op)

    width = len(findiff.coefficients(deriv=order, acc=accuracy)["center"]["offsets"])
    expected_steps = n - (width - 1) if padding == "valid" else n
    assert y_op.shape == (3, expected_steps, 2)
    assert tuple(layer.compute_output_shape((None, n, 2))) == (None, expected_steps, 2)

    model = keras.Sequential([keras.Input((None, 2)),
                              fdlayers.FiniteDifference1D(**kwargs)])
    y_model = model.predict(x, verbose=0)
    matrix = plan_matrix(order, accuracy, padding, n)
    used = np.count_nonzero(matrix, axis=1)[None, :, None]
    bound = 2 * (used + 2) * EPS32 * rounding_scale(x.astype(np.float64), matrix, h, order)
    assert y_model.shape == y_op.shape
    assert np.all(np.abs(y_model.astype(np.float64) - y_op) <= bound)


@pytest.mark.parametrize("padding", ["same", "valid", "periodic", "causal"])
def test_float64_layer_agrees_with_op(padding, rng):
    x = rng.standard_normal((2, 20, 3))
    kwargs = dict(order=2, spacing=0.5, accuracy=4, padding=padding)
    y_layer = fdlayers.FiniteDifference1D(dtype="float64", **kwargs)(tf.constant(x))
    assert y_layer.dtype == tf.float64
    np.testing.assert_array_equal(np.asarray(y_layer), fd(x, **kwargs))


@pytest.mark.parametrize("accuracy", [2, 4, 6])
def test_the_original_series(accuracy):
    """The motivating case: tf.range(3, 3075, 3) as (1, 1024, 1) has derivative 3.0
    at every one of its 1024 points (integer input, float32 layer)."""
    x = tf.reshape(tf.range(3, 3075, 3), (1, 1024, 1))
    y = np.asarray(fdlayers.FiniteDifference1D(order=1, accuracy=accuracy)(x))
    assert y.shape == (1, 1024, 1) and y.dtype == np.float32
    if accuracy == 2:
        np.testing.assert_array_equal(y, 3.0)  # every product and sum is exact
    matrix = plan_matrix(1, accuracy, "same", 1024)
    bound = (accuracy + 3) * EPS32 * rounding_scale(
        np.asarray(x, dtype=np.float64), matrix, 1.0, 1)
    assert np.all(np.abs(y - 3.0) <= bound)


# --------------------------------------------------------------------------
# Edges: better than findiff's one-sided stencils

EDGE_CASES = [(o, a) for o, a in CENTRAL_CASES if radius(o, a) >= 2]


@pytest.mark.parametrize("order,accuracy", EDGE_CASES)
def test_edge_points_beat_findiff(order, accuracy):
    """At points 1..r-1 from either edge, fdlayers uses a window flush with the edge
    (offsets -i..) where findiff 0.16 uses a forward stencil starting at the point;
    at the same accuracy the error on sin is smaller. Channel 0 has its
    (order+accuracy)-th derivative at ±1 on the left edge, channel 1 on the right.
    """
    window, r = order + accuracy, radius(order, accuracy)
    h = 10 ** (-11 / window)
    n = 4 * window
    t = grid(n, h, [0.3])[0]
    ends = np.array([t[0], t[-1]])
    phases = np.pi / 2 - window * np.pi / 2 - ends  # sin^(window)(t_end + φ) = ±1
    x = np.sin(t[:, None] + phases)
    exact = np.sin(t[:, None] + phases + order * np.pi / 2)
    ours = np.abs(fd(x[None], order=order, spacing=h, accuracy=accuracy)[0] - exact)
    theirs = np.abs((findiff.Diff(0, h, acc=accuracy) ** order)(x) - exact)
    for i in range(1, r):
        assert ours[i, 0] < theirs[i, 0], (i, ours[i, 0], theirs[i, 0])
        assert ours[n - 1 - i, 1] < theirs[n - 1 - i, 1], (i, ours[n - 1 - i, 1],
                                                           theirs[n - 1 - i, 1])
