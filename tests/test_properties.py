"""Property-based tests against an independent float64 reference.

Hypothesis draws the rank (2-4), the axis (any but the batch axis), the
length (from the minimum up), order 1-4, accuracy (even for the central
paddings, any for causal), padding, dtype (float32, float64), uniform or
non-uniform spacing (static coordinates, or per-sample time stamps), masks,
and Savitzky–Golay windows; the reference (tests/reference.py) builds each
output's weights from the moment conditions and the README's edge rules,
without fdlayers.

Tolerances. Output i is a sum of `m_i` products `w_k·x[k]` (the row's
nonzero weights, scaled by `h**-order`), each weight rounded once to the
dtype. Evaluated in any order in a dtype of unit roundoff `u = eps/2`, the
sum is within `(m_i + 2)·u·S_i` of the exact value, the README's bound, with

    S_i = Σ_k |w_ik · x[k]| / h**order,

the rounding scale of the point (the weights' own rounding, each product
and the `m_i - 1` additions; first order in u). The reference, in float64,
adds `(m_i + 2)·2⁻⁵³·S_i` of its own. On a non-uniform grid the weights
themselves are computed: the reference and fdlayers each solve (or run
Fornberg's recurrence on) the window's Vandermonde system, whose relative
error is bounded by its condition number κ_i (of the system scaled to unit
mean spacing) times the unit roundoff of the arithmetic: float64 for the
reference and for static coordinates, the input's dtype for per-sample
time stamps, whose offsets `t[j] - t[i]` are also rounded there. So the
test allows

    |y_i - ref_i| ≤ (m_i + 2)·(u + 2⁻⁵³)·S_i + C·m_i·κ_i·(2⁻⁵³ + u_w)·S_i,

with `u_w` the roundoff the weights are computed in (0 on uniform grids,
where they are exact rationals) and C = 4 a modest constant for the norm
relating the weights' error to κ_i. The inputs are drawn in the dtype, so
their own rounding does not enter.

Backend-neutral: every drawn case runs on the current backend's paths
(eagerly, and compiled in the backend's modes, fewer examples there).
"""


import os

import keras
import numpy as np
import pytest
import scipy.signal
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fdlayers
import per_backend
import reference
from per_backend import numpy, tensor

FD = fdlayers.FiniteDifference1D
SG = fdlayers.SavitzkyGolay1D
U64 = 2.0 ** -53
C = 4.0

# Every path of the backend (per_backend.PATHS: on TensorFlow eagerly in
# NumPy, op by op and fused; in a tf.function traced for any length, op by
# op and through kernels compiled for padded lengths; and XLA).
PATHS = per_backend.PATHS
# Compiling or tracing is per shape and configuration (≈ 0.1-0.5 s each):
# fewer draws. The default run draws half as many as FDLAYERS_SLOW=1
# (and at least 2), like the cases it takes of the cross products
# (covering.py).
EXAMPLES = {path: 6 for path in PATHS}
# Eagerly in NumPy or op by op (TensorFlow, PyTorch) an example costs
# milliseconds; JAX jits even its eager calls, once per shape.
EXAMPLES[PATHS[0]] = 60 if per_backend.BACKEND == "jax" else 200
if "eager, op by op" in EXAMPLES:
    EXAMPLES["eager, op by op"] = 40
SCALE = 1.0 if os.environ.get("FDLAYERS_SLOW") == "1" else 0.5


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    """`(name, wrap)`: `wrap(f)` runs `f` on one of the backend's paths."""
    return request.param, per_backend.on_path(request.param, monkeypatch)


def _settings(path_name, scale=1.0):
    return settings(max_examples=max(2, round(EXAMPLES[path_name] * scale * SCALE)),
                    deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def _run(settings_, test, *args):
    """Run the Hypothesis `test` with `settings_` chosen at run time."""
    settings_(test)(*args)


# ---------------------------------------------------------------------------
# Strategies.

@st.composite
def layouts(draw, min_steps):
    """`(shape, axis)`: rank 2-4, the batch first, `axis` any other axis
    (positive or negative), at least `min_steps` long."""
    rank = draw(st.integers(2, 4))
    axis = draw(st.integers(1, rank - 1))
    shape = [draw(st.integers(1, 2))] + [draw(st.integers(1, 3))
                                         for _ in range(rank - 1)]
    shape[axis] = draw(st.integers(min_steps, min_steps + 12))
    if draw(st.booleans()):
        axis -= rank
    return tuple(shape), axis


@st.composite
def stencil_configs(draw, paddings=("same", "valid", "periodic", "causal")):
    order = draw(st.integers(1, 4))
    padding = draw(st.sampled_from(paddings))
    if padding == "causal":
        accuracy = draw(st.integers(1, 6))
    else:
        accuracy = draw(st.sampled_from([2, 4, 6]))
    return order, accuracy, padding


def _data(seed, shape, dtype, magnitude):
    x = np.random.default_rng(seed).standard_normal(shape) * magnitude
    return x.astype(dtype)


def _coordinates(seed, n, spacing, jitter):
    """Strictly increasing coordinates with local spacings in
    `spacing · [1 - jitter, 1 + jitter]`, starting at a random offset."""
    rng = np.random.default_rng(seed)
    steps = spacing * rng.uniform(1 - jitter, 1 + jitter, n)
    return rng.uniform(-3, 3) * spacing + np.cumsum(steps) - steps[0]


# ---------------------------------------------------------------------------
# The check.

def _assert_within(y, ref, scale, count, cond, u, u_weights, context):
    """|y - ref| ≤ (m + 2)(u + 2⁻⁵³)·S + C·m·κ·(2⁻⁵³ + u_w)·S, elementwise
    along the last axis's rows (all arrays broadcast against y)."""
    y = np.asarray(y, dtype=np.float64)
    assert y.shape == ref.shape, (y.shape, ref.shape, context)
    bound = ((count + 2) * (u + U64) * scale
             + C * count * cond * (U64 + u_weights) * scale)
    error = np.abs(y - ref)
    bad = ~(error <= bound)
    assert not bad.any(), (
        f"{context}: {bad.sum()} outputs out of bound; worst error "
        f"{error[bad].max():.3g}, bound there {bound[bad][np.argmax(error[bad])]:.3g}, "
        f"y {y[bad][:4]}, ref {ref[bad][:4]}")


def _along(values, axis, rank):
    """A per-output vector placed along `axis` of a rank-`rank` array."""
    shape = [1] * rank
    shape[axis] = -1
    return np.reshape(values, shape)


def _layer(cls, dtype, **kwargs):
    return cls(dtype=dtype, **kwargs)


def _check_exact_weights(wrap, layer, x, matrix, support, positive, h, case):
    """`layer` on `x` (run by `wrap`) against the exact operator `matrix`
    (unit spacing, divided by `h`) along axis `positive`: the layer's
    weights are exact rationals rounded once, as the reference's, so the
    rounding bound of the sum alone. Returns the reference."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    ref = reference.apply(matrix, x, positive) / h
    scale = reference.apply(np.abs(matrix), np.abs(x), positive) / h
    count = _along(support.sum(axis=1), positive, x.ndim)
    y = numpy(wrap(layer)(tensor(x)))
    assert keras.backend.standardize_dtype(y.dtype) == dtype
    _assert_within(y, ref, scale, count, 1.0, np.finfo(dtype).eps / 2, 0.0,
                   case)
    return ref


# ---------------------------------------------------------------------------
# Uniform grids.

@st.composite
def uniform_cases(draw):
    order, accuracy, padding = draw(stencil_configs())
    shape, axis = draw(layouts(reference.minimum_length(order, accuracy,
                                                        padding)))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    spacing = draw(st.sampled_from([1.0, 0.5, 0.1, 0.37, 3.0, 1e-3]))
    magnitude = draw(st.sampled_from([1.0, 1e-3, 1e4]))
    return order, accuracy, padding, shape, axis, dtype, spacing, magnitude, \
        draw(st.integers(0, 2 ** 32 - 1))


def check_uniform(wrap, case):
    order, accuracy, padding, shape, axis, dtype, spacing, magnitude, seed = case
    x = _data(seed, shape, dtype, magnitude)
    positive = axis % len(shape)
    matrix, support = reference.uniform_operator(order, accuracy, padding,
                                                 shape[positive])
    layer = _layer(FD, dtype, order=order, spacing=spacing, accuracy=accuracy,
                   padding=padding, axis=axis)
    _check_exact_weights(wrap, layer, x, matrix, support, positive,
                         spacing ** order, case)


def test_uniform_grid_matches_the_reference(path):
    name, wrap = path

    @given(uniform_cases())
    @example((1, 2, "same", (2, 3, 1), 1, "float32", 1.0, 1.0, 0))
    @example((4, 6, "periodic", (1, 2, 9), -1, "float64", 0.1, 1e4, 1))
    @example((4, 6, "causal", (1, 10), 1, "float32", 1e-3, 1.0, 2))
    def test(case):
        check_uniform(wrap, case)

    _run(_settings(name), test)


# ---------------------------------------------------------------------------
# Non-uniform grids: static coordinates, and per-sample time stamps.

@st.composite
def coordinate_cases(draw):
    order, accuracy, padding = draw(stencil_configs(("same", "valid",
                                                     "causal")))
    shape, axis = draw(layouts(order + accuracy))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    spacing = draw(st.sampled_from([1.0, 0.1, 0.37, 2.5]))
    jitter = draw(st.sampled_from([0.0, 0.2, 0.5]))
    per_sample = draw(st.booleans())
    return (order, accuracy, padding, shape, axis, dtype, spacing, jitter,
            per_sample, draw(st.integers(0, 2 ** 32 - 1)))


def check_coordinates(wrap, case):
    (order, accuracy, padding, shape, axis, dtype, spacing, jitter, per_sample,
     seed) = case
    rank, positive = len(shape), axis % len(shape)
    n = shape[positive]
    x = _data(seed, shape, dtype, 1.0)
    m = order + accuracy
    u = np.finfo(dtype).eps / 2
    if per_sample and positive == 1:  # one time axis per sample
        t = np.stack([_coordinates(seed + b, n, spacing, jitter)
                      for b in range(shape[0])]).astype(dtype)
    else:
        t = _coordinates(seed, n, spacing, jitter)
        t = t.astype(dtype) if per_sample else t
    rows = []
    for b in range(shape[0]):
        matrix, support, cond = reference.coordinate_operator(
            t[b] if t.ndim == 2 else t, order, accuracy, padding)
        xb = x[b:b + 1]
        ref = reference.apply(matrix, xb, positive)
        scale = reference.apply(np.abs(matrix), np.abs(xb), positive)
        count = _along(support.sum(axis=1), positive, rank)
        rows.append((ref, scale, count, _along(cond, positive, rank)))
    ref = np.concatenate([r[0] for r in rows])
    scale = np.concatenate([r[1] for r in rows])
    count, cond = rows[0][2], np.maximum.reduce([r[3] for r in rows])
    if per_sample:
        layer = _layer(FD, dtype, order=order, accuracy=accuracy,
                       padding=padding, axis=axis)
        # Offsets t[j] - t[i] are rounded in the dtype: relative to the
        # window's spacing, by u·max|t|/spacing.
        u_weights = u * (1 + np.abs(t).max() / (spacing * (1 - jitter)))
        y = numpy(wrap(lambda v, w: layer([v, w]))(tensor(x), tensor(t)))
    else:
        layer = _layer(FD, dtype, order=order, spacing=t, accuracy=accuracy,
                       padding=padding, axis=axis)
        u_weights = 0.0  # float64 weights, as the reference's
        y = numpy(wrap(layer)(tensor(x)))
    assert m == layer.order + layer.accuracy
    _assert_within(y, ref, scale, count, cond, u, u_weights, case)


def test_non_uniform_grid_matches_the_reference(path):
    name, wrap = path

    @given(coordinate_cases())
    @example((1, 2, "same", (2, 3), 1, "float32", 1.0, 0.5, True, 0))
    @example((4, 6, "causal", (1, 12, 3), -2, "float64", 0.1, 0.5, False, 1))
    @example((3, 3, "causal", (2, 9, 2), 1, "float32", 2.5, 0.2, True, 2))
    def test(case):
        check_coordinates(wrap, case)

    _run(_settings(name, 0.6), test)


# ---------------------------------------------------------------------------
# Masks: every unmasked run a sequence of its own.

@st.composite
def masked_cases(draw):
    kind = draw(st.sampled_from(["uniform", "coordinates", "savgol"]))
    if kind == "savgol":
        order, window, polyorder = draw(savgol_configs())
        padding = draw(st.sampled_from(["same", "valid", "periodic"]))
        config, minimum = (order, window, polyorder), window
    else:
        paddings = (("same", "valid", "causal") if kind == "coordinates"
                    else ("same", "valid", "periodic", "causal"))
        order, accuracy, padding = draw(stencil_configs(paddings))
        config = (order, accuracy)
        minimum = (order + accuracy if kind == "coordinates" else
                   reference.minimum_length(order, accuracy, padding))
    steps = draw(st.integers(minimum, minimum + 16))
    rank = draw(st.integers(2, 3))
    # Runs of random lengths, long ones too.
    mask = draw(st.lists(st.lists(st.booleans(), min_size=steps,
                                  max_size=steps), min_size=1, max_size=3))
    mask[0] = draw(st.sampled_from([mask[0], [True] * steps,
                                    [False] * 2 + [True] * (steps - 2)]))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    return kind, config, padding, rank, mask, dtype, \
        draw(st.integers(0, 2 ** 32 - 1))


def _masked_reference(kind, config, padding, mask_row, t):
    """`(matrix, support, kept, cond)` of one masked row, unit spacing for
    uniform grids."""
    n = len(mask_row)
    if kind == "savgol":
        order, window, polyorder = config
        matrix, support, kept = reference.masked_operator(
            lambda length: reference.savgol_operator(
                order, window, polyorder, padding, length),
            mask_row, padding, window, window // 2)
        return matrix, support, kept, np.ones(len(kept))
    order, accuracy = config
    if kind == "uniform":
        matrix, support, kept = reference.masked_operator(
            lambda length: reference.uniform_operator(order, accuracy, padding,
                                                      length),
            mask_row, padding, reference.minimum_length(order, accuracy, padding),
            (order - 1) // 2 + accuracy // 2)
        return matrix, support, kept, np.ones(len(kept))
    m = order + accuracy
    if padding == "valid":  # the whole sequence's windows, where unmasked
        matrix, support, cond = reference.coordinate_operator(
            t, order, accuracy, padding)
        kept = np.array([mask_row[i:i + m].all() for i in range(len(cond))])
        return (np.where(kept[:, None], matrix, 0.0), support & kept[:, None],
                kept, cond)
    matrix = np.zeros((n, n))
    support = np.zeros((n, n), dtype=bool)
    kept = np.zeros(n, dtype=bool)
    cond = np.ones(n)
    for run in reference.runs(mask_row):
        if padding == "same" and len(run) < m:
            continue
        matrix[np.ix_(run, run)], support[np.ix_(run, run)], cond[run] = (
            reference.coordinate_operator(t[run], order, accuracy, padding))
        kept[run] = True
    return matrix, support, kept, cond


def check_masked(wrap, case):
    kind, config, padding, rank, mask, dtype, seed = case
    mask = np.array(mask, dtype=bool)
    batch, n = mask.shape
    trailing = (1,) * (rank - 2)
    x = _data(seed, (batch, n) + (2,) * (rank - 2), dtype, 1.0)
    poisoned = np.where(mask.reshape(mask.shape + trailing), x, np.nan)
    spacing, t = 0.5, None
    u = np.finfo(dtype).eps / 2
    u_weights = 0.0
    if kind == "savgol":
        order, window, polyorder = config
        layer = _layer(SG, dtype, order=order, window=window,
                       polyorder=polyorder, spacing=spacing, padding=padding)
    elif kind == "uniform":
        order, accuracy = config
        layer = _layer(FD, dtype, order=order, accuracy=accuracy,
                       spacing=spacing, padding=padding)
    else:
        order, accuracy = config
        t = _coordinates(seed, n, spacing, 0.4)
        layer = _layer(FD, dtype, order=order, accuracy=accuracy, spacing=t,
                       padding=padding)
        if padding != "valid":
            # Masked runs on coordinates get their weights in the graph, in
            # the dtype, from the run's coordinates (fdlayers.masking).
            u_weights = u * (1 + np.abs(t).max() / (0.6 * spacing))
    h = spacing ** order if kind != "coordinates" else 1.0
    parts = [_masked_reference(kind, config, padding, mask[b], t)
             for b in range(batch)]
    xs = np.where(mask.reshape(mask.shape + trailing), x, 0.0)
    ref = np.stack([reference.apply(p[0], xs[b:b + 1], 1)[0]
                    for b, p in enumerate(parts)]) / h
    scale = np.stack([reference.apply(np.abs(p[0]), np.abs(xs[b:b + 1]), 1)[0]
                      for b, p in enumerate(parts)]) / h
    count = np.stack([p[1].sum(axis=1) for p in parts]).reshape(
        ref.shape[:2] + trailing)
    cond = np.stack([p[3] for p in parts]).reshape(ref.shape[:2] + trailing)
    y = numpy(wrap(lambda v, k: layer(v, mask=k))(tensor(poisoned.astype(dtype)),
                                                  tensor(mask)))
    _assert_within(y, ref, scale, count, cond, u, u_weights, case)
    # The mask passed on: the outputs kept.
    np.testing.assert_array_equal(
        numpy(layer.compute_mask(tensor(x), tensor(mask))),
        np.stack([p[2] for p in parts]), err_msg=str(case))


@st.composite
def savgol_configs(draw):
    window = draw(st.sampled_from([1, 3, 5, 7, 9, 11, 15]))
    polyorder = draw(st.integers(0, min(window - 1, 6)))
    order = draw(st.integers(0, min(polyorder, 4)))
    return order, window, polyorder


def test_masked_runs_match_the_reference(path, masked_rows):
    name, wrap = path

    @given(masked_cases())
    @example(("uniform", (2, 2), "same", 2, [[True] * 3 + [False] + [True] * 5],
              "float32", 0))
    @example(("savgol", (1, 5, 2), "same", 3,
              [[False, True, True, True, True, True, False, True]], "float64", 1))
    @example(("coordinates", (1, 2), "causal", 2,
              [[True, True, False, True, True, True, True]], "float32", 2))
    def test(case):
        check_masked(wrap, case)

    _run(_settings(name, 0.4), test)


# ---------------------------------------------------------------------------
# Savitzky–Golay against scipy.signal.savgol_filter.

@st.composite
def savgol_cases(draw):
    order, window, polyorder = draw(savgol_configs())
    padding = draw(st.sampled_from(["same", "valid", "periodic"]))
    shape, axis = draw(layouts(window))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    spacing = draw(st.sampled_from([1.0, 0.5, 0.1, 2.0]))
    return order, window, polyorder, padding, shape, axis, dtype, spacing, \
        draw(st.integers(0, 2 ** 32 - 1))


def check_savgol(wrap, case):
    order, window, polyorder, padding, shape, axis, dtype, spacing, seed = case
    x = _data(seed, shape, dtype, 1.0)
    positive = axis % len(shape)
    n = shape[positive]
    mode = {"same": "interp", "valid": "interp", "periodic": "wrap"}[padding]
    want = scipy.signal.savgol_filter(x.astype(np.float64), window, polyorder,
                                      deriv=order, delta=spacing,
                                      axis=positive, mode=mode)
    r = window // 2
    if padding == "valid":
        want = np.take(want, np.arange(r, n - r), axis=positive)
    matrix, support = reference.savgol_operator(order, window, polyorder,
                                                padding, n)
    h = spacing ** order
    layer = _layer(SG, dtype, order=order, window=window, polyorder=polyorder,
                   spacing=spacing, padding=padding, axis=axis)
    ref = _check_exact_weights(wrap, layer, x, matrix, support, positive, h,
                               case)
    # The exact reference and scipy agree to scipy's own conditioning: it
    # fits the edge windows with polyfit on offsets 0..window-1, whose
    # rounding scales with every sample of the window, not only those with
    # a nonzero weight (window 3, polyorder 2 smooths to x itself; scipy's
    # edges were 3e-15 off where x was 0.04).
    np.testing.assert_allclose(ref, want, rtol=0,
                               atol=1e-9 * window * np.abs(x).max() / h)


def test_savitzky_golay_matches_scipy(path):
    name, wrap = path

    @given(savgol_cases())
    @example((0, 1, 0, "same", (1, 1), 1, "float32", 1.0, 0))
    @example((0, 3, 2, "same", (2, 3, 2), 1, "float64", 1.0, 0))  # scipy's edges
    @example((1, 5, 2, "same", (2, 5, 2), 1, "float32", 0.5, 1))
    @example((4, 15, 6, "periodic", (1, 2, 15), -1, "float64", 0.1, 2))
    def test(case):
        check_savgol(wrap, case)

    _run(_settings(name, 0.7), test)
