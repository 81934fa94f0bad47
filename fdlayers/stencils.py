"""Finite-difference stencils: weights, standard stencils and edge plans.

Pure NumPy and `fractions`; nothing here knows about tensors.

Conventions. A stencil is a pair `(offsets, weights)` such that, on a grid of
unit spacing,

    f^(order)(0) ≈ Σ_k weights[k] · f(offsets[k]),

exactly when `f` is a polynomial of degree < len(offsets). On a grid of
spacing `h` the weights are divided by `h**order`. The *accuracy* of a stencil
is the exponent `a` in its truncation error `O(h**a)`.
"""

import functools
import itertools
import math
import numbers
import reprlib
from fractions import Fraction
from typing import NamedTuple

import numpy as np

#: Largest number of samples a stencil may use. Beyond this the weights grow
#: like binomial coefficients (≈ 2**width), so in floating point the result is
#: dominated by rounding; such a request is a mistake, refused before any work.
MAX_WIDTH = 64

KINDS = ("central", "forward", "backward")
PADDINGS = ("same", "valid", "periodic", "causal")
CENTRAL_PADDINGS = ("same", "valid", "periodic")


def check_positive_int(name, value):
    """Return `value` as an `int` if it is an integer ≥ 1, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be a positive integer. Received: {name}={value!r} "
            f"of type {type(value).__name__}"
        )
    if value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return int(value)


def check_order_accuracy(order, accuracy, central):
    """Validate a derivative order and an accuracy; return them as ints.

    Central stencils are symmetric, so their accuracy is even; one-sided
    stencils take any accuracy ≥ 1. The widest window the pair implies,
    `order + accuracy` samples, must not exceed `MAX_WIDTH`.
    """
    order = check_positive_int("order", order)
    accuracy = check_positive_int("accuracy", accuracy)
    if central and accuracy % 2:
        raise ValueError(
            "`accuracy` must be even for a central stencil (padding 'same', "
            "'valid' or 'periodic'); odd accuracies are available with "
            f"padding='causal'. Received: accuracy={accuracy}"
        )
    if order + accuracy > MAX_WIDTH:
        raise ValueError(
            f"`order` + `accuracy` must be at most {MAX_WIDTH}: wider stencils "
            "are dominated by rounding error. Received: "
            f"order={order}, accuracy={accuracy}"
        )
    return order, accuracy


def _lagrange_exact(order, offsets):
    """Exact weights from the Lagrange basis: w_j = L_j^(order)(0).

    With P(x) = Π_k (x - x_k) and Q_j(x) = P(x) / (x - x_j), the basis
    polynomial is L_j = Q_j / Q_j(x_j), so w_j = order! · [x^order] Q_j / Q_j(x_j).
    Q_j comes from P by synthetic division, O(n) per node: with integer
    offsets this is integer arithmetic until the final division, fast enough
    for the widest stencils.
    """
    n = len(offsets)
    poly = [1]  # coefficients of P, lowest degree first
    for x in offsets:
        shifted = [0] + poly
        for i, coef in enumerate(poly):
            shifted[i] -= x * coef
        poly = shifted
    weights = []
    for xj in offsets:
        # Synthetic division from the top: q_{i-1} = p_i + x_j q_i.
        q = [0] * n
        q[n - 1] = poly[n]
        for i in range(n - 1, 0, -1):
            q[i - 1] = poly[i] + xj * q[i]
        value = 0
        for coef in reversed(q):  # Horner: Q_j(x_j) = Π_{k≠j} (x_j - x_k)
            value = value * xj + coef
        weights.append(Fraction(math.factorial(order) * q[order]) / Fraction(value))
    return weights


def _as_fraction(value):
    if isinstance(value, Fraction):
        return value
    if isinstance(value, numbers.Integral):
        return Fraction(int(value))
    return Fraction(float(value))  # the exact binary value of the float


def _offset_list(offsets):
    """`offsets` as a list, refused before it is built when it is too long."""
    try:
        count = str(len(offsets))
    except TypeError:  # an iterator: take one more than allowed, no more
        offsets = list(itertools.islice(offsets, MAX_WIDTH + 1))
        count = f"more than {MAX_WIDTH}" if len(offsets) > MAX_WIDTH else ""
    if len(offsets) > MAX_WIDTH:
        raise ValueError(
            f"`offsets` may have at most {MAX_WIDTH} entries. "
            f"Received: {count} offsets"
        )
    if np.ndim(offsets) != 1:
        raise ValueError(
            "`offsets` must be a 1-D sequence of numbers. Received: "
            f"offsets with {np.ndim(offsets)} dimensions"
        )
    return offsets.tolist() if isinstance(offsets, np.ndarray) else list(offsets)


def coefficients(order, offsets, exact=False):
    """Weights of the `order`-th derivative at 0 from samples at `offsets`.

    Returns `w` with `f^(order)(0) = Σ_k w[k]·f(offsets[k])` for every
    polynomial `f` of degree < len(offsets), on unit spacing. The truncation
    error on smooth `f` is `O(h**(len(offsets) - order))` in general, one order
    better for offsets symmetric about 0 when that difference is odd.

    Args:
        order: integer ≥ 1, or 0 for interpolation weights.
        offsets: 1-D sequence of distinct finite numbers (integers, floats or
            `fractions.Fraction`), more than `order` of them. Non-integers
            describe non-uniform grids.
        exact: if True, return a list of `fractions.Fraction`, computed in
            exact rational arithmetic (floats are taken at their exact binary
            value).

    Returns:
        float64 ndarray of the same length as `offsets` (or a list of
        `Fraction` when `exact=True`). For integer or rational offsets the
        float weights are the exact rationals (Lagrange basis in rational
        arithmetic) correctly rounded; otherwise they come from Fornberg's
        recurrence in float64.

    Raises:
        TypeError, ValueError: for an invalid `order` or `offsets`.
    """
    if isinstance(order, bool) or not isinstance(order, numbers.Integral):
        raise TypeError(
            f"`order` must be a non-negative integer. Received: order={order!r}"
        )
    if order < 0:
        raise ValueError(
            f"`order` must be a non-negative integer. Received: order={order!r}"
        )
    order = int(order)
    values = _offset_list(offsets)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (numbers.Real, Fraction)):
            raise TypeError(f"`offsets` must contain real numbers. Received: {v!r}")
        if not math.isfinite(float(v)):
            raise ValueError(f"`offsets` must be finite. Received: {v!r}")
    if len(values) <= order:
        raise ValueError(
            f"`offsets` must have more than `order` entries ({order + 1} at "
            f"least for order={order}). Received: {len(values)} offsets"
        )
    if len(set(_as_fraction(v) for v in values)) != len(values):
        raise ValueError(f"`offsets` must be distinct. Received: offsets={values}")

    rational = all(
        isinstance(v, (numbers.Integral, Fraction)) or float(v).is_integer()
        for v in values
    )
    if exact or rational:
        fractions_ = [_as_fraction(v) for v in values]
        if all(f.denominator == 1 for f in fractions_):
            fractions_ = [int(f) for f in fractions_]
        weights = _lagrange_exact(order, fractions_)
        if exact:
            return weights
        # Fraction -> float is correctly rounded.
        return np.array([float(w) for w in weights], dtype=np.float64)
    # Fornberg's recurrence (see `fornberg`), stable in float64.
    return np.array(fornberg(order, [float(v) for v in values]), dtype=np.float64)


def _offsets(order, accuracy, kind):
    if kind == "central":
        radius = (order - 1) // 2 + accuracy // 2
        return list(range(-radius, radius + 1))
    width = order + accuracy
    if kind == "forward":
        return list(range(width))
    return list(range(1 - width, 1))


@functools.lru_cache(maxsize=256)
def _exact_stencil(order, accuracy, kind):
    offsets = _offsets(order, accuracy, kind)
    return tuple(offsets), tuple(coefficients(order, offsets, exact=True))


def stencil(order, accuracy=2, kind="central"):
    """The standard stencil of a derivative at a given accuracy.

    - `central`: offsets `-r..r` with `r = (order - 1) // 2 + accuracy // 2`
      (`2r + 1` samples); `accuracy` must be even.
    - `forward`: offsets `0..order + accuracy - 1`.
    - `backward`: offsets `-(order + accuracy - 1)..0`.

    Each is exact for polynomials of degree < number of samples and has
    truncation error `O(h**accuracy)`.

    Returns:
        `(offsets, weights)`: an int ndarray and a float64 ndarray (the exact
        rational weights, correctly rounded), for unit spacing.
    """
    if kind not in KINDS:
        raise ValueError(
            f"`kind` must be one of {', '.join(map(repr, KINDS))}. "
            f"Received: kind={kind!r}"
        )
    order, accuracy = check_order_accuracy(order, accuracy, kind == "central")
    offsets, weights = _exact_stencil(order, accuracy, kind)
    return (
        np.array(offsets, dtype=np.int64),
        np.array([float(w) for w in weights], dtype=np.float64),
    )


class Plan(NamedTuple):
    """How to differentiate a whole sequence of length `n` (unit spacing).

    The output is the concatenation, along the sequence axis, of

    - `head @ x[:head.shape[1]]`: one row of weights per leading output;
    - the interior: `Σ_k weights[k] · x[i + offsets[k]]` for every `i` whose
      stencil lies inside the sequence;
    - `tail @ x[n - tail.shape[1]:]`: one row per trailing output.

    When `periodic`, the edge windows wrap around: with `r` edge rows, the
    head acts on `x[n-r:] ++ x[:cols-r]` and the tail on
    `x[n-cols+r:] ++ x[:r]`, where `cols` is the number of columns.

    `head_accuracy` and `tail_accuracy` give the formal accuracy of each edge
    row (0 for a row that is identically zero). `min_length` is the shortest
    sequence the plan can be applied to.
    """

    offsets: np.ndarray
    weights: np.ndarray
    head: np.ndarray
    tail: np.ndarray
    periodic: bool
    min_length: int
    head_accuracy: tuple
    tail_accuracy: tuple

    @property
    def width(self):
        """Number of samples spanned by the interior stencil."""
        return int(self.offsets[-1] - self.offsets[0] + 1)

    def output_length(self, length):
        """Output length for an input of `length` steps (None if unknown)."""
        if length is None or self.head.shape[0] + self.tail.shape[0]:
            return length
        return length - self.width + 1


def _as_float_rows(rows, cols):
    out = np.zeros((len(rows), cols), dtype=np.float64)
    for i, (start, weights) in enumerate(rows):
        out[i, start:start + len(weights)] = [float(w) for w in weights]
    return out


def plan(order, accuracy=2, padding="same"):
    """The stencil plan of `order` and `accuracy` under a padding mode.

    - `same`: the central stencil wherever it fits; each of the `r` points
      nearest an edge uses its own window of `order + accuracy` samples flush
      with that edge (point `i < r` uses samples `0..order+accuracy-1`, i.e.
      offsets `-i..order+accuracy-1-i`), so every point has accuracy at least
      `accuracy`. Minimum length `order + accuracy`.
    - `valid`: the central stencil only; `width - 1` fewer outputs.
      Minimum length `width`.
    - `periodic`: the central stencil on the sequence wrapped around.
      Minimum length `width`.
    - `causal`: the backward stencil of `order + accuracy` samples wherever it
      fits; step `t < order + accuracy - 1` uses the backward stencil over all
      `t + 1` samples it has (accuracy `t + 1 - order`), and steps
      `t < order`, which have too few samples for any estimate, are 0.
      Minimum length `order + accuracy`.

    Returns:
        A `Plan` with float64 weights for unit spacing.
    """
    if padding not in PADDINGS:
        raise ValueError(
            f"`padding` must be one of {', '.join(map(repr, PADDINGS))}. "
            f"Received: padding={padding!r}"
        )
    order, accuracy = check_order_accuracy(
        order, accuracy, padding in CENTRAL_PADDINGS
    )
    # Cached only after the checks: True == 1 and 2.0 == 2 hash alike.
    return _plan(order, accuracy, padding)


@functools.lru_cache(maxsize=256)
def _plan(order, accuracy, padding):
    empty = np.zeros((0, 0), dtype=np.float64)
    if padding == "causal":
        offsets, weights = stencil(order, accuracy, "backward")
        width = order + accuracy
        rows, head_accuracy = [], []
        for t in range(width - 1):
            if t < order:
                rows.append((0, []))
                head_accuracy.append(0)
            else:
                rows.append((0, _exact_stencil(order, t + 1 - order, "backward")[1]))
                head_accuracy.append(t + 1 - order)
        return Plan(offsets, weights, _as_float_rows(rows, width - 1), empty,
                    False, width, tuple(head_accuracy), ())

    offsets, weights = stencil(order, accuracy, "central")
    width = len(offsets)
    radius = width // 2
    if padding == "valid":
        return Plan(offsets, weights, empty, empty, False, width, (), ())
    if padding == "periodic":
        # Point i < r sees samples i-r..i+r: columns i..i+2r of the wrapped
        # window x[n-r:] ++ x[:2r], and the tail is the same band shifted.
        band = np.zeros((radius, 3 * radius))
        for i in range(radius):
            band[i, i:i + width] = weights
        edge_accuracy = (accuracy,) * radius
        return Plan(offsets, weights, band, band.copy(), True, width,
                    edge_accuracy, edge_accuracy)

    window = order + accuracy
    head, tail = [], []
    for i in range(radius):
        head.append((0, coefficients(order, range(-i, window - i), exact=True)))
        # The mirror image: point n-1-i sees offsets -(window-1-i)..i.
        tail.append((0, coefficients(order, range(i - window + 1, i + 1), exact=True)))
    tail.reverse()
    edge_accuracy = (accuracy,) * radius
    return Plan(offsets, weights, _as_float_rows(head, window),
                _as_float_rows(tail, window), False, window,
                edge_accuracy, edge_accuracy)


# Non-uniform grids -----------------------------------------------------------

#: Paddings defined on a non-uniform grid; 'periodic' needs a period, which a
#: coordinate vector does not give.
COORDINATE_PADDINGS = ("same", "valid", "causal")


def fornberg(order, offsets):
    """Fornberg's recurrence on a window of nodes, vectorised over points.

    `offsets` is a list of the window's `m` node positions relative to the
    evaluation point, each a number or an array (NumPy or tensor, one entry
    per point, all of one shape); the result is the list of the `m` weights
    of the `order`-th derivative at 0, of that shape. Only `+ - * /` are
    used, so the same code computes static weights in float64 NumPy here and
    per-sample weights inside a tensor graph (`fdlayers.ops`). Division by
    zero (two equal nodes) gives inf or NaN weights.

    B. Fornberg, Math. Comp. 51 (1988) 699-706: exact for polynomials of
    degree < m, stable for any distinct nodes.
    """
    m = len(offsets)
    c = [[0.0] * (order + 1) for _ in range(m)]
    c[0][0] = 1.0
    c1 = 1.0
    c4 = offsets[0]
    for i in range(1, m):
        c2 = 1.0
        c5 = c4
        c4 = offsets[i]
        top = min(i, order)
        for j in range(i):
            c3 = offsets[i] - offsets[j]
            c2 = c2 * c3
            if j == i - 1:
                for k in range(top, 0, -1):
                    c[i][k] = c1 * (k * c[i - 1][k - 1] - c5 * c[i - 1][k]) / c2
                c[i][0] = -c1 * c5 * c[i - 1][0] / c2
            # Downwards in k: each update reads the old value below it.
            for k in range(top, 0, -1):
                c[j][k] = (c4 * c[j][k] - k * c[j][k - 1]) / c3
            c[j][0] = c4 * c[j][0] / c3
        c1 = c2
    return [c[j][order] for j in range(m)]


def fornberg_scaled(order, offsets):
    """`fornberg` on the offsets divided by the window's extent:
    `(weights, inverse)`, where the derivative's weights are
    `weights · inverse**order`. For weights computed in the input's dtype
    (per-sample coordinates); multiply the weighted sum by `inverse`,
    `order` times, rather than the weights, so that the result overflows
    only where it does not fit.

    On the raw offsets the recurrence multiplies up to m - 1 of them, which
    reaches (m - 1)!·h**(m - 1) and leaves float32's range for wide windows
    (m = 63 with spacing 1, or 0.01: inf and NaN) or far-off spacings; on
    offsets within [-1, 1] those products stay between about e**-m and 1.
    The offsets must be in increasing order (`offsets[-1] - offsets[0]` is
    the extent), and may be numbers, arrays or tensors, as for `fornberg`.
    """
    inverse = 1.0 / (offsets[-1] - offsets[0])
    return fornberg(order, [o * inverse for o in offsets]), inverse


class Windows(NamedTuple):
    """The sample windows of a derivative on a non-uniform grid of `n` points.

    Every window has at most `width = order + accuracy` samples:

    - interior: output point `i` uses `x[i - left : i - left + width]`, for
      every point whose window fits (`left ≤ i ≤ n - 1 - right`,
      `right = width - 1 - left`);
    - `head`: one `(point, size)` per leading output, before the interior:
      the window `x[0:size]` at sample `point` (`size == 0`: the output is 0);
    - `tail`: one `point` per trailing output, after the interior: the window
      `x[n - width:]` at sample `n - width + point`.
    """

    width: int
    left: int
    head: tuple
    tail: tuple

    @property
    def right(self):
        return self.width - 1 - self.left

    @property
    def min_length(self):
        return self.width

    def output_length(self, length):
        """Output length for an input of `length` steps (None if unknown)."""
        if length is None or self.head or self.tail:
            return length
        return length - self.width + 1


def windows(order, accuracy=2, padding="same"):
    """The windows of a non-uniform-grid derivative under a padding mode.

    A window of `m = order + accuracy` samples differentiates polynomials of
    degree < m exactly, with error O(h**accuracy) on smooth data for any
    spacing (a non-uniform grid has no symmetric stencil, so even orders
    take one sample more than the uniform central stencil).

    - `same`: point `i` uses the window with `left = (m - 1) // 2` samples
      before it, clamped flush to the edges (the first `left` points use
      `x[0:m]`, the last `m - 1 - left` use `x[n-m:]`);
    - `valid`: only points whose window fits; `m - 1` fewer outputs;
    - `causal`: the backward window `x[i-m+1 : i+1]`; point `t < m - 1`
      uses its `t + 1` samples (accuracy `t + 1 - order`) and points
      `t < order` are 0, as on a uniform grid.

    Minimum length `m` for all three.
    """
    if padding not in COORDINATE_PADDINGS:
        raise ValueError(
            "`padding` must be one of "
            f"{', '.join(map(repr, COORDINATE_PADDINGS))} with sample "
            "coordinates: a coordinate vector does not define a period. "
            f"Received: padding={padding!r}"
        )
    order, accuracy = check_order_accuracy(order, accuracy, padding != "causal")
    m = order + accuracy
    if padding == "causal":
        head = tuple((t, t + 1 if t >= order else 0) for t in range(m - 1))
        return Windows(m, m - 1, head, ())
    left = (m - 1) // 2
    if padding == "valid":
        return Windows(m, left, (), ())
    head = tuple((i, m) for i in range(left))
    tail = tuple(range(left + 1, m))
    return Windows(m, left, head, tail)


def check_coordinates(coordinates, min_length=1):
    """`coordinates` as a float64 vector, if 1-D, finite, strictly increasing
    and at least `min_length` long; else a ValueError naming `spacing`."""
    try:
        # Numbers only: NumPy would also parse strings and take booleans.
        kind = np.asarray(coordinates).dtype.kind
        if kind not in "iuf" and not (kind == "O" and all(
                isinstance(v, numbers.Real) and not isinstance(v, bool)
                for v in np.ravel(coordinates))):
            raise TypeError
        values = np.asarray(coordinates, dtype=np.float64)
    except OverflowError:  # an integer beyond float64's range
        raise ValueError(
            "`spacing` coordinates must be finite. Received: spacing="
            f"{reprlib.repr(coordinates)}"
        ) from None
    except (TypeError, ValueError):
        raise TypeError(
            "`spacing` must be a positive number or a 1-D array of sample "
            f"coordinates. Received: spacing={reprlib.repr(coordinates)}"
        ) from None
    if values.ndim != 1:
        raise ValueError(
            "`spacing` as coordinates must be a 1-D array, one coordinate "
            f"per step. Received: spacing of shape {values.shape}"
        )
    if len(values) < min_length:
        raise ValueError(
            f"`spacing` has {len(values)} coordinates; this order and "
            f"accuracy need at least {min_length} steps."
        )
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(
            "`spacing` coordinates must be finite. Received: "
            f"spacing[{bad[0]}]={values[bad[0]]}"
        )
    steps = np.diff(values)
    bad = np.flatnonzero(~(steps > 0))
    if bad.size:
        i = bad[0]
        raise ValueError(
            "`spacing` coordinates must be strictly increasing. Received: "
            f"spacing[{i}]={values[i]!r} followed by spacing[{i + 1}]="
            f"{values[i + 1]!r}"
        )
    return values


# Bytes of float64 work arrays that `window_weights` keeps at once. (On
# 2**21 points, order 2, accuracy 4, blocks of 8 MB took 0.28 s, of 32 MB
# 0.43-0.60 s: the smaller stay in the caches.)
WORKING_BYTES = 8 * 2**20


def window_weights(coordinates, order, accuracy=2, padding="same"):
    """Float64 weights of every output point on a non-uniform grid.

    Args:
        coordinates: 1-D strictly increasing sample positions (`n` of them).
        order, accuracy, padding: as for `windows`.

    Returns:
        `(windows, head, interior, tail)`: the `Windows`; `head`, a list of
        one weight vector per head row (its window's size); `interior`, an
        `(n_interior, m)` array, row `r` for point `left + r`; `tail`, an
        `(len(windows.tail), m)` array (window `x[n-m:]`). Row `i` of the derivative is
        `Σ_k weights[k] · x[start + k]` over its window (see `Windows`).
    """
    layout, head, blocks, tail = window_weight_blocks(coordinates, order,
                                                      accuracy, padding)
    interior = np.empty((blocks.rows, layout.width))
    for start, rows in blocks:
        interior[start:start + len(rows)] = rows
    return layout, head, interior, tail


class _Blocks:
    """The interior rows of `window_weight_blocks`, an iterable of `(start,
    rows)`: `rows` an `(k, m)` float64 array of rows `start` to
    `start + k - 1`, each computed as it is reached. `rows`: how many in
    all."""

    def __init__(self, t, order, layout):
        self.t, self.order, self.layout = t, order, layout
        self.rows = len(t) - layout.width + 1

    def __iter__(self):
        t, order = self.t, self.order
        m, left = self.layout.width, self.layout.left
        # Row r: samples r..r+m-1 around point r+left; relative offsets
        # first, so that large absolute coordinates do not cost digits.
        nodes = np.lib.stride_tricks.sliding_window_view(t, m)
        # The recurrence holds m·(order + 1) arrays of the points it runs on
        # at once (≈ 32 KB a point at order 62): in chunks of points, that
        # working set stays near WORKING_BYTES whatever the grid's length.
        chunk = max(256, WORKING_BYTES // (8 * m * (order + 1)))
        for start in range(0, self.rows, chunk):
            stop = min(start + chunk, self.rows)
            offsets = nodes[start:stop] - t[left + start:left + stop, None]
            yield start, np.stack(fornberg(order, list(offsets.T)), axis=1)


def window_weight_blocks(coordinates, order, accuracy=2, padding="same"):
    """`window_weights` with its interior as blocks of rows, computed one at
    a time as they are iterated (see `_Blocks`): a caller can write them
    where they are kept, without a float64 array of them all."""
    layout = windows(order, accuracy, padding)
    m = layout.width
    t = check_coordinates(coordinates, layout.min_length)
    n = len(t)
    head = [np.asarray(fornberg(order, list(t[:size] - t[point])))
            if size else np.zeros(0) for point, size in layout.head]
    window = t[n - m:]
    tail = np.array([fornberg(order, list(window - window[point]))
                     for point in layout.tail]).reshape(-1, m)
    return layout, head, _Blocks(t, order, layout), tail
