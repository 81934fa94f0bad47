"""Robustness: non-finite samples, extreme values and spacings, degenerate
shapes, wide stencils, threads and determinism.

- NaN and Inf stay local: a non-finite sample reaches exactly the outputs
  whose stencil gives it a nonzero weight (on a uniform grid, where weights
  are exact rationals and a zero is exactly zero), or whose window holds it
  (coordinates), computed here from the README's rules (tests/reference.py),
  on every path of the backend, masks and Savitzky–Golay included.
- Extremes: large values, spacings whose `spacing**-order` leaves float32's
  or even float64's range, empty batches, the minimum lengths, integer
  inputs.
- The widest stencils and windows the layers accept build a graph whose
  size grows with the window, not with its square, and run promptly.
- One layer shared by 16 threads gives each the single-threaded result, its
  first calls included (caches, tracing); repeated calls are bitwise equal.

Backend-neutral, but for the graph-size test (TensorFlow's graphs).
"""

import concurrent.futures
import threading

import keras
import numpy as np
import pytest

import fdlayers
import per_backend
import reference
from fdlayers import dispatch
from per_backend import numpy, tensor

FD = fdlayers.FiniteDifference1D
SG = fdlayers.SavitzkyGolay1D

# The backend's paths (per_backend.PATHS), but TensorFlow's eager op by
# op, which runs the stencil's operations as "any length" does in a graph.
PATHS = [p for p in per_backend.PATHS if p != "eager, op by op"]
# For the slower tests: op by op, and compiled as a whole program.
QUICK_PATHS = [PATHS[0], PATHS[-1]] if len(PATHS) > 1 else PATHS
# What must not hang gets this many seconds (the `fails_fast` fixture).
ALARM_S = 120


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    """`wrap(f)` runs `f` on one of the backend's paths."""
    return per_backend.on_path(request.param, monkeypatch)


@pytest.fixture(params=QUICK_PATHS)
def quick_path(request, monkeypatch):
    """`wrap(f)` runs `f` op by op, or compiled whole (XLA, jax.jit)."""
    return per_backend.on_path(request.param, monkeypatch)


# ---------------------------------------------------------------------------
# NaN and Inf locality.

N = 16
COORDINATES = np.cumsum(np.random.default_rng(7).uniform(0.5, 1.5, N))
POISON = [np.nan, np.inf, -np.inf]

# (name, layer kwargs or factory, reference operator (matrix, support) on n)
LOCALITY_CASES = []
for _order, _accuracy, _padding in [(1, 2, "same"), (2, 2, "same"),
                                    (3, 4, "same"), (1, 4, "valid"),
                                    (2, 2, "periodic"), (1, 2, "periodic"),
                                    (1, 1, "causal"), (2, 3, "causal")]:
    LOCALITY_CASES.append((
        f"uniform-{_order}-{_accuracy}-{_padding}",
        dict(cls=FD, order=_order, accuracy=_accuracy, padding=_padding,
             spacing=0.5),
        lambda n, o=_order, a=_accuracy, p=_padding:
            reference.uniform_operator(o, a, p, n)))
for _order, _window, _polyorder, _padding in [
        (1, 5, 2, "same"),   # zero centre weight
        (2, 11, 3, "same"),  # exact zeros in the edge rows
        (0, 7, 3, "valid"), (1, 7, 4, "periodic")]:
    LOCALITY_CASES.append((
        f"savgol-{_order}-{_window}-{_polyorder}-{_padding}",
        dict(cls=SG, order=_order, window=_window, polyorder=_polyorder,
             padding=_padding),
        lambda n, o=_order, w=_window, p=_polyorder, pad=_padding:
            reference.savgol_operator(o, w, p, pad, n)))
for _order, _accuracy, _padding in [(1, 2, "same"), (2, 2, "valid"),
                                    (2, 1, "causal")]:
    for _per_sample in (False, True):
        LOCALITY_CASES.append((
            f"coordinates-{'per-sample' if _per_sample else 'static'}-"
            f"{_order}-{_accuracy}-{_padding}",
            dict(cls=FD, order=_order, accuracy=_accuracy, padding=_padding,
                 spacing=None if _per_sample else COORDINATES),
            lambda n, o=_order, a=_accuracy, p=_padding:
                reference.coordinate_operator(COORDINATES[:n], o, a, p)[:2]))


def _poisoned_batch(n, positions, seed=0):
    """One batch row per (position, value): a single non-finite sample."""
    rows = [(j, v) for j in positions for v in POISON]
    x = np.random.default_rng(seed).standard_normal((len(rows), n, 2))
    for b, (j, v) in enumerate(rows):
        x[b, j, 1] = v  # channel 1 only: channel 0 stays finite throughout
    return x.astype("float32"), rows


def _call(kwargs, wrap, x, mask=None):
    kwargs = dict(kwargs)
    cls = kwargs.pop("cls")
    per_sample = cls is FD and kwargs.get("spacing", 1) is None
    if per_sample:
        kwargs.pop("spacing")
    layer = cls(**kwargs)
    args = [tensor(x)]
    if per_sample:
        args.append(tensor(np.broadcast_to(COORDINATES[:x.shape[1]],
                                           x.shape[:2]).astype("float32")))
    if mask is not None:
        args.append(tensor(mask))

    def fn(*a):
        inputs = [a[0], a[1]] if per_sample else a[0]
        return layer(inputs, mask=a[-1]) if mask is not None else layer(inputs)
    return numpy(wrap(fn)(*args))


@pytest.mark.parametrize("name, kwargs, operator", LOCALITY_CASES,
                         ids=[c[0] for c in LOCALITY_CASES])
def test_a_non_finite_sample_reaches_only_its_stencils_outputs(
        name, kwargs, operator, path):
    positions = [0, 1, 2, 5, N // 2, N - 3, N - 2, N - 1]
    x, rows = _poisoned_batch(N, positions)
    y = _call(kwargs, path, x)
    clean = _call(kwargs, path, np.nan_to_num(x, nan=0.5, posinf=0.5,
                                              neginf=0.5))
    _, support = operator(N)
    for b, (j, v) in enumerate(rows):
        expected = support[:, j]
        reached = ~np.isfinite(y[b, :, 1])
        np.testing.assert_array_equal(
            reached, expected,
            err_msg=f"{name}: x[{j}] = {v} reached outputs "
                    f"{np.flatnonzero(reached)}, expected "
                    f"{np.flatnonzero(expected)}")
        # Everything else is untouched: the finite channel, and the
        # outputs the sample does not reach.
        assert np.isfinite(y[b, :, 0]).all(), name
        np.testing.assert_array_equal(y[b, ~expected, 1],
                                      clean[b, ~expected, 1], err_msg=name)


MASK = np.ones(N, dtype=bool)
MASK[[6, 7, 12]] = False  # runs 0-5, 8-11, 13-15

MASKED_CASES = [c for c in LOCALITY_CASES
                if "per-sample" not in c[0] and not (
                    "coordinates" in c[0] and "valid" in c[0])]


def _masked_support(name, kwargs, operator):
    padding = kwargs["padding"]
    if "coordinates" in name:
        support = np.zeros((N, N), dtype=bool)
        m = kwargs["order"] + kwargs["accuracy"]
        for run in reference.runs(MASK):
            if padding == "same" and len(run) < m:
                continue
            support[np.ix_(run, run)] = reference.coordinate_operator(
                COORDINATES[run], kwargs["order"], kwargs["accuracy"],
                padding)[1]
        return support
    if kwargs["cls"] is SG:
        minimum, radius = kwargs["window"], kwargs["window"] // 2
    else:
        minimum = reference.minimum_length(kwargs["order"], kwargs["accuracy"],
                                           padding)
        radius = (kwargs["order"] - 1) // 2 + kwargs["accuracy"] // 2
    return reference.masked_operator(lambda n: operator(n), MASK, padding,
                                     minimum, radius)[1]


@pytest.mark.parametrize("name, kwargs, operator, masked_rows", [
    pytest.param(*case, rows, id=f"{rows}-{case[0]}") for case in MASKED_CASES
    # (Both ways of a masked uniform grid, tests/conftest.py; coordinates
    # are masked run by run, the same either way.)
    for rows in (["by row"] if "coordinates" in case[0]
                 else ["by row", "by offset"])], indirect=["masked_rows"])
def test_a_non_finite_sample_stays_in_its_masked_run(name, kwargs, operator,
                                                     path, masked_rows):
    positions = [0, 2, 5, 6, 8, 11, 13, 15]  # 6 is masked: it reaches nothing
    x, rows = _poisoned_batch(N, positions, seed=1)
    mask = np.broadcast_to(MASK, x.shape[:2])
    y = _call(kwargs, path, x, mask)
    support = _masked_support(name, kwargs, operator)
    for b, (j, v) in enumerate(rows):
        reached = ~np.isfinite(y[b, :, 1])
        np.testing.assert_array_equal(
            reached, support[:, j],
            err_msg=f"{name}: x[{j}] = {v} reached outputs "
                    f"{np.flatnonzero(reached)}, expected "
                    f"{np.flatnonzero(support[:, j])}")


# ---------------------------------------------------------------------------
# Extremes.

def _wave(n, amplitude, dtype):
    return (amplitude * np.sin(0.3 * np.arange(n) + 0.2))[None, :, None].astype(
        dtype)


def _check_operator(y, x, matrix, support, spacing, order, cond=1.0):
    """`y` is within the README's rounding bound (m + 2)·u·S of the float64
    result of `matrix` (unit spacing) on `x`, spacing**-order applied in
    float64 in two steps, so that neither leaves float64's range; with
    `cond`, plus the error of weights computed in float64 (see
    test_properties.py)."""
    x64 = np.asarray(x, dtype=np.float64)
    scale = float(spacing) ** (-order / 2)
    ref = reference.apply(matrix, x64 * scale, 1) * scale
    rounding = reference.apply(np.abs(matrix), np.abs(x64) * scale, 1) * scale
    m = support.sum(axis=1)[None, :, None]
    u = np.finfo(x.dtype).eps / 2
    y = np.asarray(y, dtype=np.float64)
    assert np.isfinite(y).all(), y
    bound = (m + 2) * (u + 2.0 ** -53) * rounding + 4 * m * cond * 2.0 ** -53 * rounding
    assert np.all(np.abs(y - ref) <= bound), (np.abs(y - ref).max(), ref)


def _check_against_reference(y, x, order, accuracy, padding, spacing):
    matrix, support = reference.uniform_operator(order, accuracy, padding,
                                                 x.shape[1])
    _check_operator(y, x, matrix, support, spacing, order)


EXTREME_SPACINGS = [
    # (spacing, order, accuracy, dtype, amplitude): the derivative and the
    # rounding scale fit the dtype, though spacing**-order may not.
    (1e-30, 2, 2, "float32", 1e-30),   # h**-2 = 1e60 > float32's max
    (1e-30, 1, 4, "float32", 1e-20),
    (1e30, 2, 4, "float32", 1e30),     # h**-2 = 1e-60 rounds to 0 in float32
    (1e19, 3, 2, "float32", 1e30),     # 1e-57
    (1e-100, 4, 2, "float64", 1e-300),  # 1e400: beyond float64
    (5e-324, 1, 2, "float64", 1e-300),  # the smallest subnormal spacing
    (1e100, 4, 6, "float64", 1e300),   # 1e-400: below float64
    (1e-5, 4, 2, "float32", 1e16),     # S = 16·1e16·1e20 ≈ 1.6e37: near the top
]


@pytest.mark.parametrize("spacing, order, accuracy, dtype, amplitude",
                         EXTREME_SPACINGS)
@pytest.mark.parametrize("padding", ["same", "valid", "periodic", "causal"])
def test_extreme_spacings_give_the_derivative(spacing, order, accuracy, dtype,
                                              amplitude, padding, path):
    if padding == "causal":
        accuracy += 1
    x = _wave(20, amplitude, dtype)
    layer = FD(order=order, spacing=spacing, accuracy=accuracy,
               padding=padding, dtype=dtype)
    y = numpy(path(layer)(tensor(x)))
    _check_against_reference(y, x, order, accuracy, padding, spacing)


@pytest.mark.parametrize("spacing, order, dtype, amplitude", [
    (1e-30, 2, "float32", 1e-30), (1e30, 2, "float32", 1e30),
    (1e-100, 4, "float64", 1e-300)])
def test_extreme_spacings_in_savitzky_golay_and_on_coordinates(
        spacing, order, dtype, amplitude, path):
    n = 20
    x = _wave(n, amplitude, dtype)
    layer = SG(order=order, window=9, polyorder=order + 2, spacing=spacing,
               dtype=dtype)
    y = numpy(path(layer)(tensor(x)))
    matrix, support = reference.savgol_operator(order, 9, order + 2, "same", n)
    _check_operator(y, x, matrix, support, spacing, order)

    grid = np.arange(n) + 0.3 * np.sin(np.arange(n))  # in units of spacing
    layer = FD(order=order, spacing=grid * spacing, dtype=dtype)
    y = numpy(path(layer)(tensor(x)))
    matrix, support, cond = reference.coordinate_operator(grid, order, 2,
                                                          "same")
    _check_operator(y, x, matrix, support, spacing, order,
                    cond[None, :, None])


def _per_sample_case(accuracy, spacing, wrap):
    n = accuracy + 5
    t = np.cumsum(spacing * (1 + 0.3 * np.sin(np.arange(n))))
    t = (t - t[0])[None]
    x = np.sin(0.3 * np.arange(n))[None, :, None]
    layer = FD(order=1, accuracy=accuracy)
    fn = wrap(lambda a, b: layer([a, b]))
    y = numpy(fn(tensor(x.astype("float32")), tensor(t.astype("float32"))))
    assert np.isfinite(y).all(), y
    # The same grid in float64: weights to ~1e-16·κ, κ the conditioning.
    layer64 = FD(order=1, accuracy=accuracy, dtype="float64")
    want = numpy(layer64([tensor(x), tensor(t.astype("float32").astype(
        np.float64))]))
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-3 * np.abs(want).max())
    if accuracy < 20:  # well conditioned: the independent reference too
        matrix, _, _ = reference.coordinate_operator(
            t[0].astype("float32") / spacing, 1, accuracy, "same")
        np.testing.assert_allclose(y[0, :, 0], matrix @ x[0, :, 0] / spacing,
                                   rtol=0, atol=1e-4 / spacing)


@pytest.mark.parametrize("spacing", [1e-12, 1e12])
def test_per_sample_weights_at_far_off_spacings(spacing, quick_path):
    """Per-sample weights are computed in the input's dtype, by Fornberg's
    recurrence, which multiplies up to m - 1 offsets: on the raw offsets,
    up to (m - 1)!·h**(m - 1), beyond float32's range for far-off
    spacings, as for the widest windows (below)."""
    _per_sample_case(4, spacing, quick_path)


@pytest.mark.parametrize("accuracy, spacing", [(62, 1.0), (62, 0.01),
                                               (20, 10.0)])
def test_per_sample_weights_of_the_widest_windows(accuracy, spacing):
    """m = 63 with spacing 1 gave NaN: 62! ≈ 3e85. Eagerly: wider than
    24 samples, weights computed in the graph are not compiled by XLA (it
    would take minutes), so that is the path there is."""
    _per_sample_case(accuracy, spacing, lambda f: f)


def test_large_values_up_to_the_limit(path):
    """The largest values whose rounding scale S = Σ|w·x|/h**order fits
    float32: within a factor 8 of its maximum (3.4e38), the result is
    finite and as accurate as the README's bound says. With spacing 0.01
    and order 2 that is values up to ≈ 1e33; with order 4 up to ≈ 1e29."""
    for spacing, order, accuracy in [(0.01, 2, 2), (0.01, 4, 4), (1.0, 1, 2),
                                     (1e-5, 4, 2)]:
        n = 30
        matrix, support = reference.uniform_operator(order, accuracy, "same", n)
        largest = np.abs(matrix).sum(axis=1).max() / spacing ** order
        amplitude = np.finfo(np.float32).max / 8 / largest
        x = _wave(n, amplitude, "float32")
        y = numpy(path(FD(order=order, spacing=spacing, accuracy=accuracy))(
            tensor(x)))
        _check_operator(y, x, matrix, support, spacing, order)


def test_beyond_the_range_the_result_overflows_honestly(path):
    """Where the rounding scale Σ|w·x|/h**order exceeds the dtype's range,
    the result is ±inf or NaN, never a finite wrong number."""
    x = _wave(20, 1e30, "float32")
    y = numpy(path(FD(order=4, spacing=1e-5))(tensor(x)))  # S ≈ 1.6e51
    assert not np.isfinite(y).any(), y


LAYERS = [
    ("same", dict(cls=FD, order=2, accuracy=2)),
    ("valid", dict(cls=FD, order=1, accuracy=4, padding="valid")),
    ("periodic", dict(cls=FD, order=3, accuracy=2, padding="periodic")),
    ("causal", dict(cls=FD, order=2, accuracy=3, padding="causal")),
    ("coordinates", dict(cls=FD, order=1, accuracy=2, spacing=COORDINATES)),
    ("coordinates-causal", dict(cls=FD, order=1, accuracy=2,
                                spacing=COORDINATES, padding="causal")),
    ("per-sample", dict(cls=FD, order=2, accuracy=2, spacing=None)),
    ("savgol", dict(cls=SG, order=1, window=7, polyorder=3)),
    ("savgol-periodic", dict(cls=SG, order=2, window=5, polyorder=2,
                             padding="periodic")),
]


def _minimum(kwargs):
    if kwargs["cls"] is SG:
        return kwargs["window"]
    if kwargs.get("spacing") is not None and np.ndim(kwargs["spacing"]):
        return len(kwargs["spacing"])
    if kwargs.get("spacing", 1) is None:
        return kwargs["order"] + kwargs["accuracy"]
    return reference.minimum_length(kwargs["order"], kwargs["accuracy"],
                                    kwargs.get("padding", "same"))


@pytest.mark.parametrize("name, kwargs", LAYERS, ids=[n for n, _ in LAYERS])
@pytest.mark.parametrize("masked", [False, True], ids=["", "masked"])
def test_an_empty_batch_and_the_minimum_length(name, kwargs, masked,
                                               quick_path):
    n = _minimum(kwargs)
    for batch in (0, 2):
        x = np.linspace(-1, 1, batch * n * 3, dtype="float32").reshape(
            batch, n, 3)
        mask = np.ones((batch, n), dtype=bool) if masked else None
        y = _call(kwargs, quick_path, x, mask)
        assert y.shape[0] == batch and y.shape[2] == 3, y.shape
        assert np.isfinite(y).all()
        if batch and masked:  # a mask of ones changes nothing
            np.testing.assert_allclose(y, _call(kwargs, quick_path, x),
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "int64",
                                   "bool"])
def test_integer_and_boolean_inputs_are_cast(dtype, quick_path):
    i = np.arange(12)
    x = np.stack([i % 2, 3 * i + 1], axis=-1)[None].astype(dtype)
    for layer in (FD(order=1), SG(order=1, window=5, polyorder=2)):
        y = quick_path(layer)(tensor(x))
        assert keras.backend.standardize_dtype(y.dtype) == "float32"
        want = numpy(layer(tensor(x.astype("float32"))))
        np.testing.assert_allclose(numpy(y), want, rtol=1e-6, atol=1e-6)


def test_huge_integers_are_cast_within_rounding():
    x = np.full((1, 8, 1), 10 ** 18, dtype=np.int64)
    x[0, 4, 0] += 2 ** 40
    y = numpy(FD(order=1)(x))
    _check_against_reference(y, x.astype(np.float32), 1, 2, "same", 1.0)


# ---------------------------------------------------------------------------
# The widest stencils and windows.

WIDEST = [
    dict(cls=SG, order=1, window=255, polyorder=32),
    dict(cls=SG, order=2, window=255, polyorder=3, padding="periodic"),
    dict(cls=FD, order=2, accuracy=62),
    dict(cls=FD, order=3, accuracy=61, padding="causal"),
    dict(cls=SG, order=1, window=101, polyorder=4, masked=True),
]


def _widest_id(kwargs):
    return "-".join(f"{v}" for k, v in kwargs.items() if k != "cls")


@pytest.mark.every_case  # each widest window on each path
@pytest.mark.parametrize("kwargs", WIDEST, ids=_widest_id)
def test_the_widest_windows_run_promptly(kwargs, quick_path, fails_fast):
    """Edge rows as many as the window is wide must not cost one operation
    per weight: a 255-sample window has 127 × 255 edge weights (before,
    minutes to compile with XLA, and 10 s per eager call)."""
    n = 300
    x = np.sin(0.01 * np.arange(2 * n)).reshape(2, n, 1).astype("float32")
    kw = dict(kwargs)
    masked = kw.pop("masked", False)
    layer = kw.pop("cls")(**kw)
    if masked:
        mask = np.ones((2, n), dtype=bool)
        mask[1, 250:] = False
        y = numpy(quick_path(lambda a, k: layer(a, mask=k))(tensor(x),
                                                           tensor(mask)))
    else:
        y = numpy(quick_path(layer)(tensor(x)))
    assert y.shape == x.shape and np.isfinite(y).all()


# Per-sample time stamps at the widest windows: Fornberg's recurrence runs
# as a loop there (kernels.UNROLLED_MAX_WIDTH), and the causal head rows,
# one window size each, go through one loop together. Unrolled, the first
# call of the causal ones took minutes and gigabytes.
# Compiled whole, only the first: each compile costs seconds of test time.
WIDEST_STAMPS = [(QUICK_PATHS[-1], dict(order=1, accuracy=62,
                                        padding="causal"))] + [
    (QUICK_PATHS[0], kwargs) for kwargs in (
        dict(order=1, accuracy=62, padding="causal"),
        dict(order=32, accuracy=32, padding="causal"),
        dict(order=2, accuracy=60, padding="same"))]


@pytest.mark.every_case
@pytest.mark.parametrize("where, kwargs", WIDEST_STAMPS,
                         ids=[f"{p}-{_widest_id(k)}" for p, k in WIDEST_STAMPS])
def test_the_widest_time_stamp_windows_run_promptly(where, kwargs,
                                                    monkeypatch, fails_fast):
    quick_path = per_backend.on_path(where, monkeypatch)
    n = 200
    t = np.cumsum(np.random.default_rng(3).uniform(0.5, 1.5, n))
    x = np.sin(0.05 * t)
    layer = FD(**kwargs)
    y = numpy(quick_path(lambda a, b: layer([a, b]))(
        tensor(x.reshape(1, n, 1).astype("float32")),
        tensor(t.reshape(1, n).astype("float32"))))
    # Weights this wide are all cancellation (one-sided rows of 63 jittered
    # nodes reach 1e17): what is checked here is that the call is prompt;
    # the looped recurrence's values, at a width where they mean something,
    # are checked below.
    assert y.shape == (1, n, 1)


@pytest.mark.parametrize("kwargs", [
    dict(order=1, accuracy=15, padding="causal"),
    dict(order=2, accuracy=14, padding="same"),
    dict(order=3, accuracy=13, padding="causal")], ids=_widest_id)
def test_the_looped_recurrence_matches_the_scalar_one(kwargs, monkeypatch):
    """Windows of 16 nodes take the loop (kernels.UNROLLED_MAX_WIDTH); in
    float64 their weights are the scalar recurrence's, which the static
    coordinates use, to within rounding."""
    quick_path = per_backend.on_path(QUICK_PATHS[0], monkeypatch)
    n = 60
    t = np.cumsum(np.random.default_rng(5).uniform(0.8, 1.2, n))
    x = np.sin(0.05 * t).reshape(1, n, 1)
    y = numpy(quick_path(lambda a, b: FD(dtype="float64", **kwargs)([a, b]))(
        tensor(x), tensor(t.reshape(1, n))))
    if y.dtype != np.float64:
        pytest.skip("no float64 on this backend's configuration")
    want = numpy(FD(spacing=t, dtype="float64", **kwargs)(x))
    np.testing.assert_allclose(y, want, rtol=1e-7,
                               atol=1e-8)


@pytest.mark.skipif(per_backend.BACKEND == "torch",
                    reason="torch.compile's aot_autograd has no double "
                           "backward; no compiler runs the loop there")
@pytest.mark.parametrize("padding", ["same", "causal"])
def test_the_looped_recurrence_differentiates_in_a_whole_program(padding):
    """The loop over a wide window's nodes has a static number of passes:
    XLA cannot differentiate a program holding a loop without one (as
    Keras compiles models on GPUs), even where no gradient flows through
    the loop (the time stamps)."""
    n = 60
    t = np.cumsum(np.random.default_rng(6).uniform(0.8, 1.2, n))
    x = np.sin(0.05 * t).reshape(1, n, 1)
    u = np.cos(0.3 * t).reshape(1, n, 1)
    layer = FD(1, accuracy=14, padding=padding, dtype="float64")
    run = per_backend.value_and_gradients(
        lambda a: layer([a, tensor(t.reshape(1, n))]))
    eager = numpy(run(tensor(x), tensor(u), tensor(u)))
    whole = numpy(per_backend.whole_program(run)(tensor(x), tensor(u),
                                                 tensor(u)))
    for a, b in zip(whole, eager):
        np.testing.assert_allclose(a, b, rtol=1e-8,
                                   atol=1e-8 * np.abs(b).max())


def test_a_masked_wide_causal_run_is_a_sequence_of_its_own(monkeypatch):
    """Masked, each step's causal window has its own size, all in one loop
    (masking._causal_windows_at_once): each run equals that run alone."""
    quick_path = per_backend.on_path(QUICK_PATHS[0], monkeypatch)
    n = 70
    t = np.cumsum(np.random.default_rng(6).uniform(0.8, 1.2, n))
    x = np.sin(0.05 * t).reshape(1, n, 1)
    mask = np.ones((1, n), dtype=bool)
    mask[0, 30:33] = False
    layer = FD(order=1, accuracy=15, padding="causal", dtype="float64")
    y = numpy(quick_path(lambda a, b, k: layer([a, b], mask=[k, None]))(
        tensor(x), tensor(t.reshape(1, n)), tensor(mask)))
    if y.dtype != np.float64:
        pytest.skip("no float64 on this backend's configuration")
    for run in (slice(0, 30), slice(33, n)):
        alone = numpy(layer([tensor(x[:, run]), tensor(t[None, run])]))
        np.testing.assert_allclose(y[:, run], alone, rtol=1e-7, atol=1e-8)
    np.testing.assert_array_equal(y[0, 30:33], 0.0)


def test_a_wide_causal_row_does_not_read_beyond_its_window(monkeypatch):
    """Head rows share one loop and one group of terms: x[k] must still
    reach only the rows whose window holds it, not even as 0 · inf."""
    quick_path = per_backend.on_path(QUICK_PATHS[0], monkeypatch)
    n = 120
    t = np.cumsum(np.random.default_rng(4).uniform(0.5, 1.5, n))
    x = np.sin(0.05 * t).reshape(1, n, 1)
    x[0, 40, 0] = np.inf
    layer = FD(order=1, accuracy=40, padding="causal")
    y = numpy(quick_path(lambda a, b: layer([a, b]))(
        tensor(x.astype("float32")), tensor(t.reshape(1, n).astype("float32"))))
    assert np.isfinite(y[0, :40]).all()
    assert not np.isfinite(y[0, 40:81]).any()


GROWING = [  # (name, layer of width w, two widths)
    ("savgol-same", lambda w: SG(order=1, window=w, polyorder=4), (63, 255)),
    ("savgol-periodic", lambda w: SG(order=1, window=w, polyorder=4,
                                     padding="periodic"), (63, 255)),
    ("same", lambda w: FD(order=2, accuracy=w - 2), (16, 64)),
    ("causal", lambda w: FD(order=3, accuracy=w - 3, padding="causal"),
     (16, 64)),
]


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("name, make, widths", GROWING,
                         ids=[g[0] for g in GROWING])
def test_graph_size_grows_with_the_window_not_its_square(name, make, widths,
                                                         monkeypatch):
    """The stencil's operations, counted in a TensorFlow graph (the kernel
    inlined, as op by op, rather than called as a compiled function): four
    times the width, about four times the operations (one per edge weight
    would be sixteen times)."""
    import tensorflow as tf

    monkeypatch.setattr(dispatch, "_FUSION_MIN_SIZE", float("inf"))
    counts = []
    for width in widths:
        fn = tf.function(make(width)).get_concrete_function(
            tf.TensorSpec([2, 300, 1], tf.float32))
        counts.append(len(fn.graph.get_operations()))
    assert counts[1] < 6 * counts[0], counts


# ---------------------------------------------------------------------------
# Threads and determinism.

def _concurrently(fn, inputs, threads=16):
    barrier = threading.Barrier(threads)

    def work(i):
        barrier.wait()
        return numpy(fn(*[tensor(a) for a in inputs[i % len(inputs)]]))
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(work, range(threads)))


THREADED = [
    ("uniform", lambda s: FD(order=2, spacing=s, accuracy=4)),
    ("causal", lambda s: FD(order=1, spacing=s, accuracy=3, padding="causal")),
    ("savgol", lambda s: SG(order=1, window=7, polyorder=3, spacing=s)),
    ("coordinates", lambda s: FD(order=1, spacing=COORDINATES * s)),
    ("per-sample", lambda s: FD(order=2, spacing=s)),
    ("masked", lambda s: FD(order=1, spacing=s, accuracy=2)),
]


@pytest.mark.parametrize("name, make", THREADED, ids=[n for n, _ in THREADED])
def test_a_layer_shared_by_16_threads(name, make, quick_path, rng):
    """First calls concurrently (every cache cold, each thread building
    plans and tracing), on inputs of several lengths: each thread's result
    equals, bit for bit, the one a single thread computed from cold caches
    beforehand (so a race that corrupted a cached plan would show)."""
    lengths = [N] if name == "coordinates" else [12, 13, 14, N]
    inputs = []
    for n in lengths:
        x = rng.standard_normal((2, n, 3)).astype("float32")
        if name == "per-sample":
            inputs.append((x, np.broadcast_to(COORDINATES[:n], (2, n)).astype(
                "float32")))
        elif name == "masked":
            mask = np.ones((2, n), dtype=bool)
            mask[1, 5] = False
            inputs.append((x, mask))
        else:
            inputs.append((x,))
    per_backend.clear_caches()
    fn = _threaded_call(name, make(0.37), quick_path)
    expected = [numpy(fn(*[tensor(a) for a in args])) for args in inputs]
    per_backend.clear_caches()  # every plan, weight and trace made anew
    fn = _threaded_call(name, make(0.37), quick_path)
    results = _concurrently(fn, inputs)
    assert len(results) == 16
    for i, y in enumerate(results):
        np.testing.assert_array_equal(y, expected[i % len(inputs)],
                                      err_msg=f"thread {i}")


def _threaded_call(name, layer, path):
    if name == "per-sample":
        return path(lambda a, b: layer([a, b]))
    if name == "masked":
        return path(lambda a, k: layer(a, mask=k))
    return path(layer)


@pytest.mark.parametrize("name, make", THREADED, ids=[n for n, _ in THREADED])
def test_repeated_calls_are_bitwise_identical(name, make, quick_path, rng):
    x = rng.standard_normal((2, N, 3)).astype("float32")
    args = [tensor(x)]
    if name == "per-sample":
        args.append(tensor(np.broadcast_to(COORDINATES, (2, N)).astype(
            "float32")))
    elif name == "masked":
        args.append(tensor(np.arange(2 * N).reshape(2, N) % 7 != 3))
    fn = _threaded_call(name, make(0.25), quick_path)
    first = numpy(fn(*args))
    for _ in range(3):
        np.testing.assert_array_equal(numpy(fn(*args)), first)
    # A new layer of the same configuration: the same numbers.
    fn = _threaded_call(name, make(0.25), quick_path)
    np.testing.assert_array_equal(numpy(fn(*args)), first)
