"""An independent float64 reference for fdlayers' stencils, from the README.

Nothing here calls fdlayers. Weights come from the defining moment
conditions, solved directly:

- uniform grids: `Σ_k w_k · o_k**p / p! = [p == order]` for `p < m`, solved
  exactly by Gaussian elimination in `fractions.Fraction` (so a weight that
  is zero is exactly zero), then rounded once;
- non-uniform grids: the same Vandermonde system on the window's offsets
  divided by the window's mean spacing, solved in float64 by
  `numpy.linalg.solve`, with its condition number (the reference's own
  error is about `cond · 2⁻⁵³` relative to the weights);
- Savitzky–Golay: the least-squares polynomial's derivative,
  `w(s) = D(s)ᵀ (VᵀV)⁻¹ Vᵀ`, in Fractions.

The edge rules are the README's (Semantics, Irregular sampling and the
Savitzky–Golay section), written out again here row by row. Every function
returns a dense `(outputs, n)` operator, unit spacing unless stated, so that
tests can apply it, take `|M| @ |x|` as the rounding scale, and read off
which outputs a sample reaches (`support`).
"""

import functools
import math
from fractions import Fraction

import numpy as np


def solve_exact(matrix, rhs):
    """`matrix⁻¹ @ rhs` in exact rational arithmetic (Gauss–Jordan)."""
    n = len(matrix)
    rows = [[Fraction(v) for v in row] + [Fraction(b)]
            for row, b in zip(matrix, rhs)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        lead = rows[col][col]
        rows[col] = [v / lead for v in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                factor = rows[r][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col])]
    return [row[n] for row in rows]


@functools.lru_cache(maxsize=None)
def taylor_weights(order, offsets):
    """Exact weights of the `order`-th derivative at 0 from integer `offsets`:
    the solution of the Taylor (moment) conditions, as Fractions."""
    m = len(offsets)
    matrix = [[Fraction(o) ** p / math.factorial(p) for o in offsets]
              for p in range(m)]
    return tuple(solve_exact(matrix, [int(p == order) for p in range(m)]))


def _rows_to_matrix(rows, n):
    """Rows `(columns, weights)` (None for a zero row) as a float64 matrix
    and the exact support (which weights are nonzero)."""
    matrix = np.zeros((len(rows), n))
    support = np.zeros((len(rows), n), dtype=bool)
    for i, row in enumerate(rows):
        if row is None:
            continue
        for column, weight in zip(*row):
            matrix[i, column] += float(weight)
            support[i, column] |= weight != 0
    return matrix, support


def minimum_length(order, accuracy, padding):
    radius = (order - 1) // 2 + accuracy // 2
    return order + accuracy if padding in ("same", "causal") else 2 * radius + 1


def uniform_operator(order, accuracy, padding, n):
    """The README's stencil of each output point on `n` uniform samples.

    same: central `-r..r` (r = (order-1)//2 + accuracy//2) where it fits;
    point i < r uses x[0..m-1], point n-1-i uses x[n-m..n-1] (m = order +
    accuracy). valid: central points only. periodic: central, wrapped.
    causal: point t < order is 0, else the backward stencil over its last
    min(t + 1, m) samples.
    """
    r = (order - 1) // 2 + accuracy // 2
    m = order + accuracy
    central = tuple(range(-r, r + 1))
    rows = []
    for i in range(n):
        if padding == "causal":
            if i < order:
                rows.append(None)
                continue
            count = min(i + 1, m)
            offsets = tuple(range(1 - count, 1))
        elif r <= i < n - r:
            offsets = central
        elif padding == "valid":
            continue
        elif padding == "periodic":
            weights = taylor_weights(order, central)
            rows.append(([(i + o) % n for o in central], weights))
            continue
        elif i < r:
            offsets = tuple(range(-i, m - i))
        else:
            j = n - 1 - i
            offsets = tuple(range(j + 1 - m, j + 1))
        rows.append(([i + o for o in offsets], taylor_weights(order, offsets)))
    return _rows_to_matrix(rows, n)


def coordinate_windows(order, accuracy, padding, n):
    """`(start, size)` of each output's window on `n` coordinates (size 0:
    the output is 0), by the README's rules for non-uniform grids."""
    m = order + accuracy
    left = (m - 1) // 2
    if padding == "causal":
        return [(i - min(i + 1, m) + 1, min(i + 1, m) if i >= order else 0)
                for i in range(n)]
    if padding == "valid":
        return [(i - left, m) for i in range(left, n - (m - 1 - left))]
    return [(min(max(i - left, 0), n - m), m) for i in range(n)]


def vandermonde_weights(order, offsets):
    """float64 weights from arbitrary offsets, and the condition number of
    the (scaled) system solved."""
    offsets = np.asarray(offsets, dtype=np.float64)
    m = len(offsets)
    unit = np.ptp(offsets) / (m - 1)
    d = offsets / unit
    matrix = np.array([d ** p / math.factorial(p) for p in range(m)])
    rhs = np.array([float(p == order) for p in range(m)])
    return (np.linalg.solve(matrix, rhs) / unit ** order,
            float(np.linalg.cond(matrix)))


def coordinate_operator(t, order, accuracy, padding):
    """The derivative on coordinates `t` (1-D): `(matrix, support, cond)`,
    `support` the windows (all their samples) and `cond` each row's
    condition number (1 for a zero row)."""
    t = np.asarray(t, dtype=np.float64)
    n = len(t)
    windows = coordinate_windows(order, accuracy, padding, n)
    centres = (range(n) if padding != "valid" else
               range((order + accuracy - 1) // 2,
                     (order + accuracy - 1) // 2 + len(windows)))
    matrix = np.zeros((len(windows), n))
    support = np.zeros((len(windows), n), dtype=bool)
    cond = np.ones(len(windows))
    for row, (i, (start, size)) in enumerate(zip(centres, windows)):
        if not size:
            continue
        nodes = t[start:start + size] - t[i]
        matrix[row, start:start + size], cond[row] = vandermonde_weights(
            order, nodes)
        support[row, start:start + size] = True
    return matrix, support, cond


@functools.lru_cache(maxsize=None)
def savgol_rows(order, window, polyorder):
    """Exact Savitzky–Golay weights for every position s = -r..r in the
    window (row s + r): the order-th derivative at s of the least-squares
    polynomial of degree polyorder through the samples at -r..r."""
    r = window // 2
    nodes = range(-r, r + 1)
    gram = [[sum(Fraction(j) ** (p + q) for j in nodes)
             for q in range(polyorder + 1)] for p in range(polyorder + 1)]
    # Columns of (VᵀV)⁻¹ Vᵀ, one solve per sample j.
    coeffs = [solve_exact(gram, [Fraction(j) ** p for p in range(polyorder + 1)])
              for j in nodes]  # coeffs[j][p]
    rows = []
    for s in range(-r, r + 1):
        scales = [Fraction(math.perm(p, order)) * Fraction(s) ** (p - order)
                  if p >= order else Fraction(0) for p in range(polyorder + 1)]
        rows.append(tuple(sum(c * a for c, a in zip(scales, coeffs[j]))
                          for j in range(window)))
    return tuple(rows)


def savgol_operator(order, window, polyorder, padding, n):
    """The README's Savitzky–Golay operator on `n` samples (unit spacing):
    same (scipy's mode='interp': the first and last r = window // 2 points
    use the polynomial of the first and last full window), valid, periodic."""
    r = window // 2
    rows_at = savgol_rows(order, window, polyorder)
    centre = rows_at[r]
    rows = []
    for i in range(n):
        if r <= i < n - r:
            rows.append((list(range(i - r, i + r + 1)), centre))
        elif padding == "valid":
            continue
        elif padding == "periodic":
            rows.append(([(i + o) % n for o in range(-r, r + 1)], centre))
        elif i < r:
            rows.append((list(range(window)), rows_at[i]))
        else:
            rows.append((list(range(n - window, n)), rows_at[i - (n - window)]))
    return _rows_to_matrix(rows, n)


def runs(mask_row):
    """The maximal runs of True in a 1-D boolean array, as index arrays."""
    steps = np.flatnonzero(mask_row)
    if not steps.size:
        return []
    return np.split(steps, np.flatnonzero(np.diff(steps) > 1) + 1)


def masked_operator(operator_of, mask_row, padding, min_length, radius):
    """The operator of a masked sequence (one batch row), by the README's
    masking rules: for 'same' and 'causal' each unmasked run is a sequence
    of its own (a 'same' run shorter than `min_length` is masked); for
    'valid' and 'periodic' an output is kept where every sample of its
    stencil's window (`radius` each side, wrapped for 'periodic') is
    unmasked. `operator_of(n)` gives `(matrix, support)` of a whole
    sequence of n samples. Returns `(matrix, support, kept)` with masked
    outputs as zero rows and `kept` False."""
    n = len(mask_row)
    if padding in ("valid", "periodic"):
        matrix, support = operator_of(n)
        kept = np.ones(matrix.shape[0], dtype=bool)
        for i in range(matrix.shape[0]):
            centre = i + radius if padding == "valid" else i
            reach = np.arange(centre - radius, centre + radius + 1) % n
            kept[i] = mask_row[reach].all()
        matrix = np.where(kept[:, None], matrix, 0.0)
        support = support & kept[:, None]
        return matrix, support, kept
    matrix = np.zeros((n, n))
    support = np.zeros((n, n), dtype=bool)
    kept = np.zeros(n, dtype=bool)
    for run in runs(mask_row):
        if padding == "same" and len(run) < min_length:
            continue
        m, s = operator_of(len(run))[:2]
        matrix[np.ix_(run, run)] = m
        support[np.ix_(run, run)] = s
        kept[run] = True
    return matrix, support, kept


def apply(matrix, x, axis):
    """`matrix` applied along `axis` of `x` (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return np.moveaxis(np.tensordot(matrix, x, axes=[[1], [axis]]), 0, axis)
