"""Fuzzed arguments: junk is refused with a clear error, never anything worse.

Every argument of `FiniteDifference1D`, `SavitzkyGolay1D` and
`fdlayers.derivative` is drawn from valid values mixed with junk (None,
strings, NaN and infinities, huge and negative integers, floats such as 2.0,
booleans, lists, dicts, bare objects, NumPy scalars, 0-d arrays, complex
numbers, Fractions and Decimals). The contract, per combination:

- it works, and then the arguments come out normalised (plain `int`,
  `float`, lower-case `str`) and the layer differentiates an input of its
  minimum length; or
- it raises `ValueError` or `TypeError` whose message names one of the
  arguments it was given, in backticks as every fdlayers message does;
- never another exception type (OverflowError, a backend's own error), and
  never a hang: a huge order, accuracy, window or polyorder is refused
  before any work (each example runs under an alarm).

What is accepted: integers (Python `int` or a NumPy integer scalar) for
`order`, `accuracy`, `window`, `polyorder` and `axis`, and no floats, even
integral ones, nor booleans or 0-d arrays; for `spacing`, any real number
(NumPy scalars and `Fraction` included) that is positive and finite, or a
1-D array-like of numbers (the coordinates of a non-uniform grid); for
`padding`, a string; for Keras' `dtype`, a float dtype or policy (mixed
policies included), not an integer, boolean or complex one. Tensors must hold real numbers (float, integer or
bool): strings and complex numbers are a `TypeError`.

Backend-neutral: the layers and the op on NumPy inputs.
"""

import decimal
import math
import re
import signal
from fractions import Fraction

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import fdlayers
from fdlayers import ops as fd_ops

FD = fdlayers.FiniteDifference1D
SG = fdlayers.SavitzkyGolay1D

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# Each example must finish well within this many seconds: what would hang
# (a stencil of 10**18 points) is refused at once instead.
ALARM_S = 30


class _Alarm:
    """Raise TimeoutError in the main thread if the block runs too long."""

    def __enter__(self):
        def hang(signum, frame):
            raise TimeoutError(f"not done within {ALARM_S} s")
        self.previous = signal.signal(signal.SIGALRM, hang)
        signal.alarm(ALARM_S)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.previous)
        return False


# ---------------------------------------------------------------------------
# Junk.

HUGE = [10 ** 18, 10 ** 18 + 1, -10 ** 18, 2 ** 63, 10 ** 400, -10 ** 400]

JUNK = st.one_of(
    st.none(),
    st.text(max_size=6),
    st.binary(max_size=3),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 2.0, 1e-320,
                     1e308, -1.5]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-10, max_value=300),
    st.sampled_from(HUGE),
    st.booleans(),
    st.lists(st.one_of(st.integers(-3, 3), st.floats(-2, 2), st.none(),
                       st.text(max_size=2)), max_size=4),
    st.sampled_from([
        object(), {}, {"order": 1}, (), (1, 2), [[1.0, 2.0, 3.0]], 1 + 2j,
        np.int64(2), np.int8(-1), np.uint64(2 ** 63), np.int64(10 ** 18),
        np.float32(2.0), np.float64(np.nan), np.float64(np.inf),
        np.bool_(True), np.complex128(1 + 1j), np.str_("same"),
        np.array(2), np.array(2.0), np.array(np.nan), np.array([]),
        np.array([2]), np.array(["a", "b", "c"]), np.zeros((2, 3)),
        Fraction(1, 3), Fraction(10 ** 400), decimal.Decimal("0.5"),
        [1, 10 ** 400, 10 ** 401, 10 ** 402], [False, True, True],
        ["0", "1", "2", "3"], [0.0, 1.0, 1.0, 2.0], [3.0, 2.0, 1.0, 0.0],
        range(5), "SAME", "Causal", "periodic", "valid", "full",
    ]),
)


def _maybe(valid, junk=JUNK):
    """Mostly a valid value (2 in 3), often junk: combinations matter."""
    valid = st.sampled_from(valid)
    return st.integers(0, 2).flatmap(lambda k: junk if k == 0 else valid)


# Keras' own `dtype` argument: a float dtype or policy, else refused (an
# integer policy rounded the input to integers before differentiating).
DTYPES = _maybe([None, "float32", "float64", "float16", "mixed_float16",
                 "mixed_bfloat16"],
                junk=st.one_of(JUNK, st.sampled_from(
                    ["int32", "uint8", "bool", "complex64", "string"])))

_FD_OPTIONS = {
    "order": _maybe([1, 2, 3, 4]),
    "spacing": _maybe([1.0, 0.5, 3, np.float32(0.25),
                       [0.0, 0.5, 1.5, 2.0, 3.0, 3.5, 5.0, 6.0, 7.0, 8.0]]),
    "accuracy": _maybe([1, 2, 3, 4]),
    "padding": _maybe(["same", "valid", "periodic", "causal"]),
    "axis": _maybe([1, 2, -1, -2]),
}
# `fdlayers.derivative` takes the layer's arguments but `dtype`.
OP_ARGUMENTS = st.fixed_dictionaries({}, optional=_FD_OPTIONS)
FD_ARGUMENTS = st.fixed_dictionaries({}, optional={**_FD_OPTIONS,
                                                   "dtype": DTYPES})

SG_ARGUMENTS = st.fixed_dictionaries({}, optional={
    "order": _maybe([0, 1, 2]),
    "window": _maybe([1, 3, 5, 7, 9]),
    "polyorder": _maybe([0, 1, 2, 3, 4]),
    "spacing": _maybe([1.0, 0.5, 3]),
    "padding": _maybe(["same", "valid", "periodic"]),
    "axis": _maybe([1, 2, -1, -2]),
    "dtype": DTYPES,
})


def _check_error(error, names):
    """A ValueError or TypeError whose message names one of `names`."""
    event(f"refused: {type(error).__name__}")
    assert type(error) in (ValueError, TypeError), (
        f"{type(error).__name__} instead of ValueError/TypeError: {error}")
    message = str(error)
    # An argument that fits no input is an error about the input.
    assert (any(f"`{name}`" in message for name in names)
            or message.startswith("The input")), (
        f"the message names none of {names}: {message}")
    assert len(message) < 2000, f"an unreadable message: {message[:300]}..."


def _minimum_input(layer, kind):
    """An input of the layer's minimum length along its axis."""
    if kind == "fd":
        if isinstance(layer.spacing, np.ndarray):
            steps = len(layer.spacing)
        else:
            plan = fdlayers.stencils.plan(layer.order, layer.accuracy,
                                          layer.padding)
            steps = plan.min_length
    else:
        steps = layer.window
    shape = [2, 3, 2]
    if -3 < layer.axis < 3:
        shape[layer.axis] = steps
    return np.linspace(-1.0, 1.0, int(np.prod(shape)),
                       dtype="float32").reshape(shape)


def _largest_scale(layer, kind):
    """The largest Σ|w|/spacing**order of the layer's stencil rows."""
    if kind == "fd" and isinstance(layer.spacing, np.ndarray):
        return 2.0 ** 20  # the one valid grid drawn: spacings 0.5 to 1.5
    if kind == "fd":
        plan = fdlayers.stencils.plan(layer.order, layer.accuracy,
                                      layer.padding)
    else:
        plan = fdlayers.savgol.plan(layer.order, layer.window,
                                    layer.polyorder, layer.padding)
    rows = [np.abs(plan.weights).sum()] + [np.abs(row).sum() for row in
                                          (*plan.head, *plan.tail)]
    with np.errstate(over="ignore"):
        return max(rows) * np.float64(layer.spacing) ** -layer.order


def _check_normalised_and_usable(layer, kind):
    ints = (("order", "accuracy", "axis") if kind == "fd"
            else ("order", "window", "polyorder", "axis"))
    for name in ints:
        assert type(getattr(layer, name)) is int, (name, getattr(layer, name))
    assert type(layer.padding) is str and layer.padding == layer.padding.lower()
    if not isinstance(layer.spacing, np.ndarray):
        assert type(layer.spacing) is float and math.isfinite(layer.spacing)
        assert layer.spacing > 0
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    x = _minimum_input(layer, kind)
    if layer.axis == -3:  # axes are checked against the input's rank
        with pytest.raises(ValueError, match="`axis` must not be the batch"):
            layer(x)
        return
    if not -3 < layer.axis < 3:
        with pytest.raises(ValueError, match="`axis` must be in"):
            layer(x)
        return
    y = keras.ops.convert_to_numpy(layer(x))
    assert y.shape[0] == x.shape[0]
    # Finite where the rounding scale Σ|w·x|/spacing**order (|x| ≤ 1) fits
    # the dtype; beyond, ±inf is the honest result (spacing 1e-320, or
    # float16 with the large one-sided weights of accuracy 34).
    if _largest_scale(layer, kind) < np.finfo(layer.input_dtype).max / 4:
        assert np.isfinite(y).all(), (layer.get_config(), y)
    event("accepted, and differentiates")


@SETTINGS
@given(FD_ARGUMENTS)
@example({"spacing": 10 ** 400})  # float() raised OverflowError
@example({"spacing": Fraction(10 ** 400)})
@example({"spacing": [1, 10 ** 400, 10 ** 401, 10 ** 402]})
@example({"spacing": ["0", "1", "2", "3"]})  # strings parsed as numbers
@example({"spacing": np.array(["0", "1", "2", "3"])})
@example({"order": 10 ** 18, "accuracy": 10 ** 18})
@example({"order": np.int64(2), "accuracy": np.uint64(4), "axis": np.int8(-1)})
@example({"accuracy": 34, "order": 3, "spacing": 3, "dtype": "float16"})
@example({"axis": -3})
def test_finite_difference_arguments(kwargs):
    with _Alarm():
        try:
            layer = FD(**kwargs)
        except Exception as error:  # noqa: BLE001 - the type is the test
            _check_error(error, list(kwargs))
            return
        _check_normalised_and_usable(layer, "fd")


@SETTINGS
@given(SG_ARGUMENTS)
@example({"spacing": 10 ** 400})
@example({"window": 10 ** 18 + 1, "polyorder": 10 ** 18})
@example({"window": 255, "polyorder": 32, "order": 32})
@example({"window": np.int64(7), "polyorder": np.uint8(3), "order": np.int16(2)})
def test_savitzky_golay_arguments(kwargs):
    with _Alarm():
        try:
            layer = SG(**kwargs)
        except Exception as error:  # noqa: BLE001
            _check_error(error, list(kwargs))
            return
        _check_normalised_and_usable(layer, "sg")


# ---------------------------------------------------------------------------
# The op: the same arguments, and junk tensors.

X = np.linspace(0.0, 1.0, 2 * 12 * 2, dtype="float32").reshape(2, 12, 2)

JUNK_TENSORS = st.sampled_from([
    None, "x", b"x", object(), {"a": 1}, 1 + 2j,
    np.array([["a", "b", "c", "d"]]),
    np.array([[1, 2, 3, 4]], dtype=object),
    np.zeros((2, 12), complex), np.zeros((2, 12, 2), np.complex64),
    [[1, "a", 3, 4]],
    np.full((2, 12), "a"),
])


@SETTINGS
@given(OP_ARGUMENTS, _maybe([None, np.ones((2, 12), bool),
                             np.arange(24).reshape(2, 12) % 5 != 2],
                            junk=st.one_of(JUNK_TENSORS, JUNK)))
@example({"spacing": 1e-320}, None)  # spacing**-order overflowed float64
@example({"spacing": 1e-200, "order": 2}, None)
@example({}, np.full((2, 12), "a"))  # a backend's own error for a string mask
@example({"spacing": np.zeros((2, 3))}, None)  # named no argument
def test_derivative_arguments(kwargs, mask):
    names = list(kwargs) + (["mask"] if mask is not None else [])
    with _Alarm():
        try:
            y = fdlayers.derivative(X, mask=mask, **kwargs)
        except Exception as error:  # noqa: BLE001
            _check_error(error, names)
            return
        assert tuple(y.shape)[0] == 2
        event("accepted")


JUNK_INPUT_USES = {
    "derivative": lambda v: fdlayers.derivative(v),
    "derivative on coordinates": lambda v: fdlayers.derivative(
        v, spacing=np.arange(12.0)),
    "savitzky_golay": lambda v: fd_ops.savitzky_golay(v),
    "layer": lambda v: FD()(v),
    "layer on [x, t]": lambda v: FD()([X, v]),
    "per-sample coordinates": lambda v: fdlayers.derivative(
        X, spacing=v if np.ndim(v) != 1 else [v]),
}


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.one_of(JUNK_TENSORS, JUNK), st.sampled_from(sorted(JUNK_INPUT_USES)))
@example("x", "derivative")  # TensorFlow's UnimplementedError on the cast
@example(np.full((2, 12), "a"), "per-sample coordinates")
@example(np.zeros((2, 12), complex), "layer")  # the imaginary part was dropped
def test_junk_tensors_are_refused(x, use):
    with _Alarm():
        try:
            JUNK_INPUT_USES[use](x)
        except Exception as error:  # noqa: BLE001
            assert type(error) in (ValueError, TypeError), (
                f"{type(error).__name__}: {error}")


@pytest.mark.parametrize("cls", [FD, SG])
@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool", "complex64"])
def test_a_dtype_that_is_not_a_float_is_refused(cls, dtype):
    # An integer policy cast the input to integers first: FD(dtype="int32")
    # gave [0, 0, 0.5, ...] for the slope 0.4.
    with pytest.raises(ValueError, match=f"`dtype` must be a float.*{dtype}"):
        cls(dtype=dtype)


@pytest.mark.parametrize("x, name", [
    ("x", "`x`"),
    (np.array([["a", "b", "c"]]), "`x`"),
    (np.zeros((2, 12), complex), "`x`"),
])
def test_junk_inputs_name_the_input(x, name):
    with pytest.raises(TypeError, match=re.escape(name)):
        fdlayers.derivative(x)


@pytest.mark.tensorflow_only
def test_ragged_inputs_are_refused_and_sparse_ones_made_dense():
    import tensorflow as tf

    ragged = tf.ragged.constant([[[1.0], [2.0], [4.0]], [[1.0], [3.0]]],
                                ragged_rank=1)
    # It failed on its unknown length ("Index 1 is not uniform").
    with pytest.raises(TypeError, match="`inputs` must be a dense tensor, "
                                        "not a RaggedTensor"):
        FD()(ragged)
    with pytest.raises(TypeError, match="`x` must be a dense tensor"):
        fdlayers.derivative(ragged)
    dense = np.arange(24.0, dtype="float32").reshape(2, 6, 2) ** 2
    dense[:, ::2] = 0.0
    sparse = tf.sparse.from_dense(dense)
    for layer in (FD(order=2), SG(order=1, window=5, polyorder=2)):
        # It failed deep in the layer ("'SparseTensor' object is not
        # subscriptable").
        np.testing.assert_array_equal(layer(sparse), layer(dense))
