"""Tests of fdlayers.stencils: weights, standard stencils, edge plans, argument checks.

References are independent of the code under test: findiff's coefficient tables,
the defining moment conditions checked in exact rational arithmetic, and a
float64 Vandermonde solve (numpy.linalg.solve).
"""

import math
import re
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import findiff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fdlayers
from fdlayers import stencils

EPS = np.finfo(np.float64).eps
ORDERS = (1, 2, 3, 4)
FINDIFF_KEYS = {"central": "center", "forward": "forward", "backward": "backward"}


def radius(order, accuracy):
    """Half-width of the central stencil, as documented: (order-1)//2 + accuracy//2."""
    return (order - 1) // 2 + accuracy // 2


def moments(weights, offsets, count):
    """Exact moments Σ_k w_k·offsets_k**j for j < count (Fractions in, Fractions out)."""
    offsets = [Fraction(o) for o in offsets]
    return [sum(w * o**j for w, o in zip(weights, offsets)) for j in range(count)]


def expected_moments(order, count):
    """What an exact order-th derivative stencil gives: order!·[j == order]."""
    return [math.factorial(order) if j == order else 0 for j in range(count)]


def vandermonde(offsets):
    """V[j, k] = offsets[k]**j, the moment matrix of a stencil."""
    return np.vander(np.asarray(offsets, dtype=np.float64), increasing=True).T


# --------------------------------------------------------------------------
# Standard stencils against findiff


@pytest.mark.parametrize("kind", ["central", "forward", "backward"])
@pytest.mark.parametrize("accuracy", [2, 4, 6, 8])
@pytest.mark.parametrize("order", ORDERS)
def test_stencil_matches_findiff(order, accuracy, kind):
    """Same offsets as findiff; weights equal to findiff's rounding.

    findiff solves the Vandermonde system in float64, so its weights carry an error
    up to about eps·cond(V)·max|w| (measured: ≤ 0.05 of that bound); ours are exact
    rationals rounded once.
    """
    table = findiff.coefficients(deriv=order, acc=accuracy)[FINDIFF_KEYS[kind]]
    offsets, weights = fdlayers.stencil(order, accuracy, kind)
    np.testing.assert_array_equal(offsets, np.asarray(table["offsets"]))
    assert offsets.dtype.kind == "i"
    assert weights.dtype == np.float64
    reference = np.asarray(table["coefficients"], dtype=np.float64)
    tol = EPS * np.linalg.cond(vandermonde(offsets)) * np.abs(reference).max()
    np.testing.assert_allclose(weights, reference, rtol=0, atol=tol)


@pytest.mark.parametrize("kind", ["central", "forward", "backward"])
@pytest.mark.parametrize("accuracy", [2, 4, 6, 8])
@pytest.mark.parametrize("order", ORDERS)
def test_stencil_is_exact_and_correctly_rounded(order, accuracy, kind):
    """Exact moments in rational arithmetic, and float weights = float(exact rational)."""
    offsets, weights = fdlayers.stencil(order, accuracy, kind)
    exact = fdlayers.coefficients(order, offsets.tolist(), exact=True)
    assert moments(exact, offsets.tolist(), len(offsets)) == expected_moments(
        order, len(offsets))
    np.testing.assert_array_equal(weights, [float(w) for w in exact])


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("accuracy", [1, 2, 3, 5])
def test_one_sided_stencils_any_accuracy(order, accuracy):
    """Forward/backward take any accuracy ≥ 1: order+accuracy samples, mirror images."""
    fwd_offsets, fwd = fdlayers.stencil(order, accuracy, "forward")
    bwd_offsets, bwd = fdlayers.stencil(order, accuracy, "backward")
    np.testing.assert_array_equal(fwd_offsets, np.arange(order + accuracy))
    np.testing.assert_array_equal(bwd_offsets, -fwd_offsets[::-1])
    np.testing.assert_array_equal(bwd, (-1) ** order * fwd[::-1])


@pytest.mark.parametrize("accuracy", [2, 4, 6])
@pytest.mark.parametrize("order", ORDERS)
def test_central_stencil_shape(order, accuracy):
    offsets, weights = fdlayers.stencil(order, accuracy)  # default kind is central
    r = radius(order, accuracy)
    np.testing.assert_array_equal(offsets, np.arange(-r, r + 1))
    # Symmetric for even orders, antisymmetric for odd orders.
    np.testing.assert_array_equal(weights, (-1) ** order * weights[::-1])


# --------------------------------------------------------------------------
# coefficients() on arbitrary offsets

integer_offsets = st.integers(0, 4).flatmap(
    lambda order: st.tuples(
        st.just(order),
        st.lists(st.integers(-25, 25), min_size=order + 1, max_size=order + 8,
                 unique=True),
    )
)
rational_offsets = st.integers(0, 4).flatmap(
    lambda order: st.tuples(
        st.just(order),
        st.lists(
            st.fractions(min_value=-6, max_value=6, max_denominator=12),
            min_size=order + 1, max_size=order + 7, unique=True,
        ),
    )
)


@settings(max_examples=120, deadline=None)
@given(st.one_of(integer_offsets, rational_offsets))
def test_exact_coefficients_integer_and_rational_offsets(case):
    order, offsets = case
    exact = fdlayers.coefficients(order, offsets, exact=True)
    assert all(isinstance(w, Fraction) for w in exact)
    assert moments(exact, offsets, len(offsets)) == expected_moments(order, len(offsets))
    # The float weights are the exact ones correctly rounded (Fraction -> float is).
    floats = fdlayers.coefficients(order, offsets)
    assert floats.dtype == np.float64
    np.testing.assert_array_equal(floats, [float(w) for w in exact])


@pytest.mark.parametrize("offsets", [
    [0.0, 1.0, 2.0],
    np.arange(-3, 4),                      # int64 ndarray
    np.arange(-3.0, 4.0),                  # integer-valued float64 ndarray
    [Fraction(-1), 0, 1.0, Fraction(2)],   # mixed types, all integer values
])
def test_integer_valued_offsets_take_the_exact_path(offsets):
    """Integer values in any numeric type give the correctly rounded exact weights."""
    as_ints = [int(o) for o in offsets]
    exact = fdlayers.coefficients(1, as_ints, exact=True)
    np.testing.assert_array_equal(fdlayers.coefficients(1, offsets),
                                  [float(w) for w in exact])


def test_order_zero_is_interpolation():
    """order=0 gives Lagrange interpolation weights at 0: they sum to 1."""
    weights = fdlayers.coefficients(0, [Fraction(-1, 2), Fraction(1, 2), Fraction(3, 2)],
                                    exact=True)
    assert weights == [Fraction(3, 8), Fraction(3, 4), Fraction(-1, 8)]


@pytest.mark.parametrize("seed", range(12))
def test_float_offsets_fornberg_matches_vandermonde_solve(seed):
    """Non-integer float offsets (non-uniform grid) go through Fornberg in float64.

    Reference 1: np.linalg.solve of V w = order!·e_order, whose forward error is
    about eps·cond(V)·max|w|; we allow 16 times that.
    Reference 2: the exact weights of the same binary offsets (exact=True); Fornberg
    is stable, its error stays below 64·eps·Σ|w| (measured: < 10·eps·Σ|w|).
    """
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 10))
    order = int(rng.integers(0, min(size, 5)))
    while True:  # distinct, non-integer offsets at least 0.2 apart, within [-4, 4]
        offsets = np.sort(rng.uniform(-4.0, 4.0, size))
        if np.diff(offsets).min() > 0.2:
            break
    assert not any(float(o).is_integer() for o in offsets)
    weights = fdlayers.coefficients(order, offsets)
    assert weights.dtype == np.float64 and weights.shape == (size,)

    matrix = vandermonde(offsets)
    rhs = np.zeros(size)
    rhs[order] = math.factorial(order)
    solved = np.linalg.solve(matrix, rhs)
    tol = 16 * EPS * np.linalg.cond(matrix) * np.abs(solved).max()
    np.testing.assert_allclose(weights, solved, rtol=0, atol=tol)

    exact = np.array([float(w) for w in fdlayers.coefficients(order, offsets, exact=True)])
    np.testing.assert_allclose(weights, exact, rtol=0, atol=64 * EPS * np.abs(exact).sum())


def test_float_offsets_exact_uses_binary_values():
    """exact=True with floats uses their exact binary values: 0.1 is not 1/10."""
    weights = fdlayers.coefficients(1, [0.0, 0.1], exact=True)
    step = Fraction(0.1)
    assert step != Fraction(1, 10)
    assert weights == [-1 / step, 1 / step]


# --------------------------------------------------------------------------
# Edge plans


CENTRAL_CASES = [(o, a) for o in ORDERS for a in (2, 4, 6)]
CAUSAL_CASES = [(o, a) for o in ORDERS for a in (1, 2, 3, 4, 6)]


@pytest.mark.parametrize("order,accuracy", CENTRAL_CASES)
def test_plan_same_edges(order, accuracy):
    """'same': edge point i < r uses the window x[0:order+accuracy] flush with the edge."""
    plan = stencils.plan(order, accuracy, "same")
    r, window = radius(order, accuracy), order + accuracy
    offsets, weights = fdlayers.stencil(order, accuracy, "central")
    np.testing.assert_array_equal(plan.offsets, offsets)
    np.testing.assert_array_equal(plan.weights, weights)
    assert plan.head.shape == plan.tail.shape == (r, window)
    for i in range(r):
        np.testing.assert_array_equal(
            plan.head[i], fdlayers.coefficients(order, range(-i, window - i)))
        # Independently: row i differentiates the monomials (j - i)**d, d < window.
        samples = (np.arange(window) - i)[None, :] ** np.arange(window)[:, None]
        scale = np.abs(plan.head[i] * samples).sum(axis=1)
        error = np.abs(samples @ plan.head[i] - expected_moments(order, window))
        assert np.all(error <= 64 * EPS * scale), (i, error / (EPS * scale))
        # The tail mirrors the head, with the sign of an odd derivative flipped.
        np.testing.assert_array_equal(plan.tail[r - 1 - i],
                                      (-1) ** order * plan.head[i][::-1])
    assert plan.head_accuracy == plan.tail_accuracy == (accuracy,) * r
    assert plan.min_length == window
    assert not plan.periodic
    assert plan.width == 2 * r + 1
    assert plan.output_length(50) == 50
    assert plan.output_length(None) is None


def apply_plan(plan, x):
    """Apply `plan` to a 1-D array as the `Plan` docstring says (NumPy reference)."""
    n, offsets = len(x), plan.offsets
    span = int(offsets[-1] - offsets[0])
    interior = sum(w * x[o - offsets[0]:o - offsets[0] + n - span]
                   for o, w in zip(offsets, plan.weights))
    rows, head_cols, tail_cols = plan.head.shape[0], plan.head.shape[1], plan.tail.shape[1]
    if plan.periodic:
        head_window = np.concatenate([x[n - rows:], x[:head_cols - rows]])
        tail_window = np.concatenate([x[n - tail_cols + rows:], x[:rows]])
    else:
        head_window, tail_window = x[:head_cols], x[n - tail_cols:]
    parts = [plan.head @ head_window if plan.head.shape[0] else [], interior,
             plan.tail @ tail_window if plan.tail.shape[0] else []]
    return np.concatenate(parts)


@pytest.mark.parametrize("padding", ["valid", "periodic"])
@pytest.mark.parametrize("order,accuracy", CENTRAL_CASES)
def test_plan_valid_and_periodic(order, accuracy, padding, rng):
    """'valid' keeps the points with a full central stencil; 'periodic' wraps around
    (x[n] ≡ x[0]): checked by applying the plan to random data, for the shortest
    allowed length and a longer one, against a direct cyclic/valid evaluation."""
    plan = stencils.plan(order, accuracy, padding)
    r = radius(order, accuracy)
    offsets, weights = fdlayers.stencil(order, accuracy, "central")
    np.testing.assert_array_equal(plan.offsets, offsets)
    np.testing.assert_array_equal(plan.weights, weights)
    assert plan.min_length == plan.width == 2 * r + 1
    assert plan.periodic == (padding == "periodic")
    expected_length = 50 - 2 * r if padding == "valid" else 50
    assert plan.output_length(50) == expected_length
    assert plan.output_length(None) is None
    for n in (2 * r + 1, 2 * r + 2, 4 * r + 7):
        x = rng.standard_normal(n)
        if padding == "periodic":
            reference = sum(w * np.roll(x, -o) for o, w in zip(offsets, weights))
        else:
            reference = np.array([weights @ x[i - r:i + r + 1] for i in range(r, n - r)])
        result = apply_plan(plan, x)
        assert result.shape == (plan.output_length(n),)
        tol = 16 * EPS * (np.abs(weights).sum() * np.abs(x).max())
        np.testing.assert_allclose(result, reference, rtol=0, atol=tol)


@pytest.mark.parametrize("order,accuracy", CAUSAL_CASES)
def test_plan_causal(order, accuracy):
    """'causal': step t < order+accuracy-1 uses the backward stencil over its t+1
    samples (accuracy t+1-order); steps t < order are zero rows."""
    plan = stencils.plan(order, accuracy, "causal")
    window = order + accuracy
    offsets, weights = fdlayers.stencil(order, accuracy, "backward")
    np.testing.assert_array_equal(plan.offsets, np.arange(1 - window, 1))
    np.testing.assert_array_equal(plan.offsets, offsets)
    np.testing.assert_array_equal(plan.weights, weights)
    assert plan.head.shape == (window - 1, window - 1)
    assert plan.tail.shape[0] == 0
    for t in range(window - 1):
        row = plan.head[t]
        if t < order:
            np.testing.assert_array_equal(row, 0.0)
            assert plan.head_accuracy[t] == 0
        else:
            np.testing.assert_array_equal(row[:t + 1],
                                          fdlayers.coefficients(order, range(-t, 1)))
            np.testing.assert_array_equal(row[t + 1:], 0.0)
            assert plan.head_accuracy[t] == t + 1 - order
    assert plan.tail_accuracy == ()
    assert plan.min_length == window
    assert not plan.periodic
    assert plan.output_length(50) == 50
    assert plan.output_length(None) is None


# --------------------------------------------------------------------------
# Bad input: exception type, and a message naming the argument and the value


@pytest.mark.parametrize("value,error,shown", [
    (0, ValueError, "order=0"),
    (-2, ValueError, "order=-2"),
    (2.5, TypeError, "order=2.5"),
    ("2", TypeError, "order='2'"),
    (True, TypeError, "order=True"),
    (None, TypeError, "order=None"),
    (np.float64(2.0), TypeError, "order=2.0|order=np.float64"),
])
def test_stencil_rejects_bad_order(value, error, shown):
    with pytest.raises(error, match=shown):
        fdlayers.stencil(value, 2)


@pytest.mark.parametrize("valid,invalid,shown", [
    ((1, 2, "same"), (True, 2, "same"), "order=True"),
    ((2, 2, "same"), (2.0, 2, "same"), "order=2.0"),
    ((2, 2, "valid"), (np.float64(2.0), 2, "valid"), "order=(np.float64\\()?2.0"),
    ((1, 1, "causal"), (1, True, "causal"), "accuracy=True"),
    ((1, 4, "same"), (1, 4.0, "same"), "accuracy=4.0"),
])
def test_plan_validates_even_after_an_equal_valid_call(valid, invalid, shown):
    """plan() must refuse bool/float order and accuracy whatever was computed before:
    True == 1 and 2.0 == 2 hash alike, so a cache consulted before the checks
    would hand back the plan of the valid call."""
    stencils.plan(*valid)
    with pytest.raises(TypeError, match=shown):
        stencils.plan(*invalid)


@pytest.mark.parametrize("kind,value,error,shown", [
    ("central", 0, ValueError, "accuracy=0"),
    ("forward", 0, ValueError, "accuracy=0"),
    ("central", -4, ValueError, "accuracy=-4"),
    ("central", 3, ValueError, "accuracy=3"),
    ("central", 1, ValueError, "accuracy=1"),
    ("central", 2.0, TypeError, "accuracy=2.0"),
    ("backward", "4", TypeError, "accuracy='4'"),
    ("forward", False, TypeError, "accuracy=False"),
    ("central", None, TypeError, "accuracy=None"),
])
def test_stencil_rejects_bad_accuracy(kind, value, error, shown):
    with pytest.raises(error, match=shown):
        fdlayers.stencil(1, value, kind)


@pytest.mark.parametrize("padding", ["same", "valid", "periodic"])
def test_plan_rejects_odd_accuracy_for_central_paddings(padding):
    with pytest.raises(ValueError, match="accuracy=3"):
        stencils.plan(2, 3, padding)
    assert stencils.plan(2, 3, "causal").min_length == 5  # odd is fine when causal


@pytest.mark.parametrize("kind", ["sideways", "Central", "", None, 1])
def test_stencil_rejects_unknown_kind(kind):
    with pytest.raises(ValueError, match=re.escape(f"kind={kind!r}")):
        fdlayers.stencil(1, 2, kind)


@pytest.mark.parametrize("padding", ["full", "SAME?", None])
def test_plan_rejects_unknown_padding(padding):
    with pytest.raises(ValueError, match=re.escape(f"padding={padding!r}")):
        stencils.plan(1, 2, padding)


@pytest.mark.parametrize("order,offsets,error,pattern", [
    (1, [0, 1, 1], ValueError, r"offsets.*distinct.*\[0, 1, 1\]"),
    (1, [0, 1, 1.0], ValueError, r"offsets.*distinct.*\[0, 1, 1\.0\]"),
    (1, [0, Fraction(1, 2), 0.5], ValueError, r"offsets.*distinct"),
    (1, [0, 1, float("nan")], ValueError, r"offsets.*finite.*nan"),
    (1, [0, 1, float("inf")], ValueError, r"offsets.*finite.*inf"),
    (1, [0, -np.inf], ValueError, r"offsets.*finite.*inf"),
    (2, [0, 1], ValueError, r"offsets.*order=2.*Received: 2 offsets"),
    (1, [0], ValueError, r"offsets.*order=1.*Received: 1 offsets"),
    (0, [], ValueError, r"offsets.*Received: 0 offsets"),
    (1, [[0, 1], [2, 3]], ValueError, r"offsets.*2 dimensions"),
    (1, np.zeros((2, 3)), ValueError, r"offsets.*2 dimensions"),
    (1, [0, "1", 2], TypeError, r"offsets.*'1'"),
    (1, [0, True, 2], TypeError, r"offsets.*True"),
    (1, [0, 1j, 2], TypeError, r"offsets.*1j"),
    (-1, [0, 1, 2], ValueError, r"order=-1"),
    (1.5, [0, 1, 2], TypeError, r"order=1\.5"),
    (True, [0, 1, 2], TypeError, r"order=True"),
    (None, [0, 1, 2], TypeError, r"order=None"),
])
def test_coefficients_rejects_bad_input(order, offsets, error, pattern):
    with pytest.raises(error, match=pattern):
        fdlayers.coefficients(order, offsets)


@pytest.mark.parametrize("call,pattern", [
    (lambda: fdlayers.stencil(10**6, 2), "order=1000000"),
    (lambda: fdlayers.stencil(1, 10**9, "forward"), "accuracy=1000000000"),
    (lambda: fdlayers.stencil(10**9, 10**9), "order=1000000000"),
    (lambda: stencils.plan(10**6, 2, "same"), "order=1000000"),
    (lambda: stencils.plan(1, 10**9, "causal"), "accuracy=1000000000"),
    (lambda: stencils.plan(40, 40, "causal"), "order=40, accuracy=40"),
    (lambda: fdlayers.coefficients(10**6, [0, 1, 2]), "order=1000000"),
    (lambda: fdlayers.coefficients(1, range(stencils.MAX_WIDTH + 1)),
     f"offsets.*{stencils.MAX_WIDTH + 1}"),
])
def test_absurd_sizes_are_refused_quickly(call, pattern):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=pattern):
        call()
    assert time.perf_counter() - start < 1.0


def test_huge_offsets_are_refused_without_materialising_them():
    """coefficients(1, range(10**9)) must be refused from its length, not by first
    building a list (or an array) of a billion offsets.

    Run in a subprocess capped at 2 GiB of address space and 60 s, loading
    stencils.py on its own (it needs only NumPy), so that a failure cannot take
    the test machine's memory down.
    """
    source = Path(stencils.__file__)
    script = textwrap.dedent(f"""
        import importlib.util, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
        spec = importlib.util.spec_from_file_location("stencils_alone", {str(source)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        try:
            module.coefficients(1, range(10**9))
        except ValueError as error:
            print("ValueError:", error)
        except BaseException as error:
            print("OTHER", type(error).__name__, error)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.startswith("ValueError:"), result.stdout + result.stderr
    assert "offsets" in result.stdout and "1000000000" in result.stdout, result.stdout
