"""Savitzky–Golay weights as stencil plans: NumPy and fractions only.

A Savitzky–Golay filter fits, by least squares, a polynomial of degree
`polyorder` to the `window` samples around each point and returns the
`order`-th derivative of that polynomial at the point (order 0 smooths).
The fit is linear in the samples, so each output is a fixed weighted sum of
the window: a stencil, applied by the same kernels as a finite difference.

Weights are exact rationals (the normal equations solved in integer and
rational arithmetic), rounded once to float64: the Vandermonde systems of
wide windows and high degrees are far too ill-conditioned for a float64
solve to give every weight to the last bit.

On coordinates (a non-uniform grid, or time stamps), every window has
nodes of its own, so there is no exact arithmetic to fall back on: the
weights come from polynomials orthonormal on each window's nodes
(`local_weights`), in float64, `window_weights` arranging them as
`stencils.window_weights` arranges a finite difference's.
"""

import functools
import math
from fractions import Fraction

import numpy as np

from fdlayers import stencils

#: Paddings of a Savitzky–Golay plan: 'same' evaluates the polynomial fitted
#: to the first (last) window at the points before (after) the first
#: (last) full window, as scipy's `savgol_filter(mode="interp")` does.
PADDINGS = ("same", "valid", "periodic")

#: The widest window: beyond it the least-squares weights of a low degree are
#: tiny and many, and a convolution by FFT would be the better tool.
MAX_WINDOW = 255
#: The highest degree: exact weights of degree 32 over 255 samples take
#: ≈ 1 s to compute (the cost grows as polyorder³), and a least-squares fit
#: of higher degree follows the noise it is meant to remove.
MAX_POLYORDER = 32


def check_arguments(order, window, polyorder):
    """Validate `(order, window, polyorder)`; return them as ints.

    `order` ≥ 0; `window` odd, ≥ 1 and at most `MAX_WINDOW`;
    `0 ≤ polyorder < window`, `polyorder ≤ MAX_POLYORDER`;
    `order ≤ polyorder` (a derivative above the
    degree of the fitted polynomial is identically zero).
    """
    order = _check_int("order", order, 0)
    window = _check_int("window", window, 1)
    polyorder = _check_int("polyorder", polyorder, 0)
    if window % 2 == 0:
        raise ValueError(
            "`window` must be odd: the window is centred on each point. "
            f"Received: window={window}")
    if window > MAX_WINDOW:
        raise ValueError(
            f"`window` must be at most {MAX_WINDOW}. Received: window={window}")
    if polyorder > MAX_POLYORDER:
        raise ValueError(
            f"`polyorder` must be at most {MAX_POLYORDER}. Received: "
            f"polyorder={polyorder}")
    if polyorder >= window:
        raise ValueError(
            "`polyorder` must be less than `window`: a polynomial of degree "
            "window - 1 already passes through every sample. Received: "
            f"polyorder={polyorder}, window={window}")
    if order > polyorder:
        raise ValueError(
            "`order` must be at most `polyorder`: higher derivatives of the "
            f"fitted polynomial are zero. Received: order={order}, "
            f"polyorder={polyorder}")
    return order, window, polyorder


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"`{name}` must be an integer ≥ {minimum}. Received: {name}="
            f"{value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(
            f"`{name}` must be an integer ≥ {minimum}. Received: {name}={value}")
    return int(value)


def _inverse(matrix):
    """`(adjugate-like A, d)` with `A / d` the exact inverse of an integer
    matrix: Gauss–Jordan elimination in Fractions, then one common
    denominator, so that what follows is integer arithmetic."""
    n = len(matrix)
    rows = [[Fraction(v) for v in row] + [Fraction(int(i == k)) for k in range(n)]
            for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        lead = rows[col][col]
        rows[col] = [v / lead for v in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                factor = rows[r][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col])]
    inverse = [row[n:] for row in rows]
    d = math.lcm(*(v.denominator for row in inverse for v in row))
    return [[int(v * d) for v in row] for row in inverse], d


@functools.lru_cache(maxsize=256)
def _exact_rows(order, window, polyorder, positions):
    """Exact weights, one row per position `s` (relative to the window's
    centre), as `(integer rows, common denominator)`: the `order`-th
    derivative at `s` of the degree-`polyorder` least-squares polynomial
    through the samples at `-r..r`.

    With the normal equations `G c = Vᵀ x` (`G[p][q] = Σ_j j^(p+q)`,
    `V[j][p] = j^p`), the weights are `w(s) = D(s)ᵀ G⁻¹ Vᵀ`, where
    `D_p(s) = p!/(p-order)! · s^(p-order)` differentiates `Σ_p c_p s^p`.
    """
    r = window // 2
    nodes = range(-r, r + 1)
    sums = [sum(j ** k for j in nodes) for k in range(2 * polyorder + 1)]
    inverse, d = _inverse([[sums[p + q] for q in range(polyorder + 1)]
                           for p in range(polyorder + 1)])
    # B = d · G⁻¹ Vᵀ, integers, one row per power p.
    basis = [[sum(a * j ** q for q, a in enumerate(row)) for j in nodes]
             for row in inverse]
    rows = []
    for s in positions:
        scales = [math.perm(p, order) * s ** (p - order)
                  for p in range(order, polyorder + 1)]
        rows.append(tuple(sum(c * basis[p][j] for c, p in
                              zip(scales, range(order, polyorder + 1)))
                          for j in range(window)))
    return tuple(rows), d


def _floats(row, d):
    # int / int is correctly rounded in Python.
    return [num / d for num in row]


def coefficients(order, window, polyorder, position=0, exact=False):
    """Savitzky–Golay weights for the point `position` samples from the
    window's centre (`-window // 2 < position ≤ window // 2`), unit spacing.

    `y = Σ_j w[j] · x[j - window // 2]` is the `order`-th derivative at
    `position` of the degree-`polyorder` least-squares polynomial through
    the window. These are correlation weights: scipy's `savgol_coeffs`
    returns them reversed (convolution order) unless `use="dot"`.

    Returns:
        float64 ndarray of `window` weights (each the correctly rounded exact
        value), or a tuple of `fractions.Fraction` when `exact=True`.
    """
    order, window, polyorder = check_arguments(order, window, polyorder)
    r = window // 2
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) \
            or not -r <= position <= r:
        raise ValueError(
            f"`position` must be an integer in [{-r}, {r}]. Received: "
            f"position={position!r}")
    (row,), d = _exact_rows(order, window, polyorder, (int(position),))
    if exact:
        return tuple(Fraction(num, d) for num in row)
    return np.array(_floats(row, d))


def plan(order, window, polyorder, padding="same"):
    """The `stencils.Plan` of a Savitzky–Golay filter (unit spacing).

    - `same`: the centred weights wherever the window fits; the first
      (last) `window // 2` points evaluate the polynomial fitted to the
      first (last) `window` samples (scipy's `mode="interp"`);
    - `valid`: the centred weights only, `window - 1` fewer outputs;
    - `periodic`: the series wraps around.

    `head_accuracy` and `tail_accuracy` hold `polyorder + 1 - order`: the
    plan is exact for polynomials of degree ≤ `polyorder` everywhere.
    """
    if not isinstance(padding, str) or padding.lower() not in PADDINGS:
        raise ValueError(
            f"`padding` must be one of {', '.join(map(repr, PADDINGS))} for a "
            f"Savitzky–Golay filter. Received: padding={padding!r}")
    return _plan(*check_arguments(order, window, polyorder), padding.lower())


@functools.lru_cache(maxsize=128)
def _plan(order, window, polyorder, padding):
    r = window // 2
    offsets = np.arange(-r, r + 1)
    # The head rows and the centre; a tail row is a head row mirrored:
    # w(s)[j] = (-1)**order · w(-s)[-j].
    exact, d = _exact_rows(order, window, polyorder, tuple(range(-r, 1)))
    head = np.array([_floats(row, d) for row in exact]).reshape(r + 1, window)
    weights = head[r]
    tail = (-1) ** order * head[r - 1::-1, ::-1] if r else head[:0]
    rows = np.concatenate([head, tail])
    empty = np.zeros((0, 0))
    accuracy = polyorder + 1 - order
    if padding == "valid" or r == 0:
        return stencils.Plan(offsets, weights, empty, empty, False, window, (), ())
    edge_accuracy = (accuracy,) * r
    if padding == "periodic":
        band = np.zeros((r, 3 * r))
        for i in range(r):
            band[i, i:i + window] = weights
        return stencils.Plan(offsets, weights, band, band.copy(), True, window,
                             edge_accuracy, edge_accuracy)
    return stencils.Plan(offsets, weights, rows[:r], rows[r + 1:], False, window,
                         edge_accuracy, edge_accuracy)


# Irregular time stamps ---------------------------------------------------------

#: Paddings of a Savitzky–Golay filter on coordinates: a coordinate vector
#: (or a batch of time stamps) does not define a period, so 'periodic' is
#: refused, as `FiniteDifference1D` refuses it on coordinates.
COORDINATE_PADDINGS = ("same", "valid")

#: Points whose weights NumPy computes at once (`window_weights`): each
#: holds `window × (polyorder + 2)` float64 values while it is fitted, so
#: a chunk stays under ≈ 70 MB whatever the length of the grid.
_CHUNK_VALUES = 1 << 23


def windows(window, padding="same"):
    """The `stencils.Windows` of a Savitzky–Golay filter on coordinates.

    Point `i` fits the `window` samples `x[i - r : i + r + 1]`,
    `r = window // 2`, where they exist. `same`: the first (last) `r`
    points take the fit to the first (last) `window` samples, evaluated at
    their own coordinate (the edge rule of the uniform filter, scipy's
    `mode="interp"`); `valid`: only points with a full window, `window - 1`
    fewer outputs. Minimum length `window`.
    """
    if padding not in COORDINATE_PADDINGS:
        raise ValueError(
            "`padding` must be one of "
            f"{', '.join(map(repr, COORDINATE_PADDINGS))} for a "
            "Savitzky–Golay filter on coordinates or time stamps: they do "
            f"not define a period. Received: padding={padding!r}")
    r = window // 2
    if padding == "valid":
        return stencils.Windows(window, r, (), ())
    return stencils.Windows(window, r, tuple((i, window) for i in range(r)),
                            tuple(range(r + 1, window)))


def local_weights(nodes, order, polyorder):
    """Least-squares derivative weights at 0 for each row of `nodes`.

    `nodes` is `(..., m)`, the abscissae `s_j` of a window relative to the
    point the derivative is wanted at (ideally scaled to about [-1, 1]).
    Returns `w` of the same shape with `Σ_j w_j f(s_j) = p^(order)(0)`,
    `p` the polynomial of degree `polyorder` fitted by least squares to
    `(s_j, f(s_j))`: row `order` of the pseudo-inverse of the Vandermonde
    matrix `V[j, k] = s_j**k`, times `order!`.

    Not through the Vandermonde matrix, whose condition number grows
    exponentially with the degree: the polynomials orthonormal on the
    nodes are built by Stieltjes' three-term recurrence (Forsythe's method
    of least-squares fitting), each reorthogonalised once against all
    before it (without that, orthogonality, and with it the fit, is lost
    as polyorder nears m - 1), and the derivatives at 0 follow the same
    recurrence. Measured against exact rational solutions of the normal
    equations on jittered windows up to 255 samples and degree 32: within
    2·10⁻¹⁴ of the largest weight in float64, 7·10⁻⁶ in float32
    (`fdlayers.kernels.savgol_loop` is the same algorithm in `keras.ops`).
    """
    nodes = np.asarray(nodes, dtype=np.float64)
    m = nodes.shape[-1]
    shape = nodes.shape[:-1]
    q = np.full(nodes.shape, 1 / math.sqrt(m))
    q_prev = np.zeros(nodes.shape)
    basis = [q]
    # derivative[d]: the d-th derivative at 0 of the current polynomial.
    derivative = [np.full(shape, 1 / math.sqrt(m))] + [np.zeros(shape)] * order
    previous = [np.zeros(shape)] * (order + 1)
    weights = q * derivative[order][..., None]
    beta = np.zeros(shape)
    for _ in range(polyorder):
        v = nodes * q - beta[..., None] * q_prev
        alpha = np.sum(v * q, axis=-1)
        v = v - alpha[..., None] * q
        for u in basis:
            v = v - np.sum(v * u, axis=-1, keepdims=True) * u
        norm = np.sqrt(np.sum(v * v, axis=-1))
        following = [(d * derivative[d - 1] if d else 0.0)
                     - alpha * derivative[d] - beta * previous[d]
                     for d in range(order + 1)]
        q_prev, q = q, v / norm[..., None]
        previous, derivative = derivative, [f / norm for f in following]
        beta = norm
        basis.append(q)
        weights = weights + q * derivative[order][..., None]
    return weights


def _window_rows(t, starts, points, order, polyorder, m):
    """Weights `(len(points), m)` of the windows `t[start : start + m]`
    evaluated at `t[point]`, in chunks of points (`_CHUNK_VALUES`)."""
    rows = np.empty((len(points), m))
    chunk = max(1, _CHUNK_VALUES // (m * (polyorder + 2)))
    for first in range(0, len(points), chunk):
        start = starts[first:first + chunk]
        point = points[first:first + chunk]
        offsets = t[start[:, None] + np.arange(m)] - t[point][:, None]
        # Half the window's extent as unit: nodes within [-2, 2].
        unit = (offsets[:, -1] - offsets[:, 0]) / 2 if m > 1 else np.ones(1)
        rows[first:first + chunk] = (
            local_weights(offsets / unit[:, None], order, polyorder)
            / unit[:, None] ** order)
    return rows


def window_weights(coordinates, order, window, polyorder, padding="same"):
    """Float64 Savitzky–Golay weights of every point of a non-uniform grid.

    As `stencils.window_weights` returns them for a finite difference:
    `(windows, head, interior, tail)`, `head` a list of one weight vector
    per head row, `interior` `(n - window + 1, window)`, `tail`
    `(len(windows.tail), window)`; each row is the `order`-th derivative,
    at the point's own coordinate, of the degree-`polyorder` least-squares
    polynomial through its window (`windows`), by `local_weights`.
    """
    order, window, polyorder = check_arguments(order, window, polyorder)
    layout = windows(window, padding)
    m, r = layout.width, layout.left
    t = stencils.check_coordinates(coordinates, m)
    n = len(t)
    inner = np.arange(n - m + 1)
    interior = _window_rows(t, inner, inner + r, order, polyorder, m)
    edges = np.arange(len(layout.head))
    head = list(_window_rows(t, np.zeros(len(edges), int), edges, order,
                             polyorder, m))
    tail = _window_rows(t, np.full(len(layout.tail), n - m, int),
                        n - m + np.array(layout.tail, int), order, polyorder,
                        m).reshape(-1, m)
    return layout, head, interior, tail
