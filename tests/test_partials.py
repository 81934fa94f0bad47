"""`input_partials` and `input_laplacian` against closed-form derivatives.

Analytic functions written in `keras.ops` and wrapped as layers stand in for
models, so that every partial derivative has a formula to compare with:
`sin(x)·exp(t)`, a polynomial whose high derivatives vanish, a linear map
(zeros, not None) and a constant.
"""

import os

import keras
import numpy as np
import pytest

import fdlayers
import per_backend
from fdlayers import input_laplacian, input_partials

BACKEND = keras.backend.backend()
DTYPE = "float64"  # JAX has 64-bit types on in the tests (conftest.py)
# Keras 3.15's keras.ops.sin, cos and tanh return float32 for a float64
# input on JAX (measured: 2e-8 from NumPy), so there the analytic
# references hold to float32 rounding only.
RTOL = 1e-6 if BACKEND == "jax" else 1e-12


def _run(fn, *args):
    """`fn(*args)`, under one jax.jit on JAX: eagerly, JAX compiles every
    new primitive of the nested derivatives on its own, seconds in all."""
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)(*args)
    return fn(*args)


def _model(fn):
    return keras.layers.Lambda(fn, dtype=DTYPE)


def _points(n=7, features=2, seed=3):
    return np.random.default_rng(seed).uniform(-1, 1, (n, features)).astype(DTYPE)


def _wave(v):
    """u(x, t) = sin(x)·exp(t), and a polynomial second output
    p(x, t) = x³t² + 2x: two columns."""
    x, t = v[:, 0:1], v[:, 1:2]
    return keras.ops.concatenate(
        [keras.ops.sin(x) * keras.ops.exp(t), x ** 3 * t ** 2 + 2 * x], axis=1)


# multi-index -> closed form of each output column, from x and t.
_WAVE_PARTIALS = {
    (0,): lambda x, t: (np.cos(x) * np.exp(t), 3 * x**2 * t**2 + 2),
    (1,): lambda x, t: (np.sin(x) * np.exp(t), 2 * x**3 * t),
    (0, 0): lambda x, t: (-np.sin(x) * np.exp(t), 6 * x * t**2),
    (0, 1): lambda x, t: (np.cos(x) * np.exp(t), 6 * x**2 * t),
    (1, 0): lambda x, t: (np.cos(x) * np.exp(t), 6 * x**2 * t),
    (1, 1, 1): lambda x, t: (np.sin(x) * np.exp(t), 0 * x),
    (0, 0, 1, 1): lambda x, t: (-np.sin(x) * np.exp(t), 12 * x + 0 * t),
    (0, 0, 0, 0): lambda x, t: (np.sin(x) * np.exp(t), 0 * x),
}


def test_mixed_and_high_partials_of_analytic_functions():
    points = _points()
    indices = list(_WAVE_PARTIALS)
    model = _model(_wave)
    results = _run(lambda p: input_partials(model, p, indices), points)
    assert len(results) == len(indices)
    x, t = points[:, 0:1], points[:, 1:2]
    for index, result in zip(indices, results):
        assert tuple(result.shape) == (7, 2), index
        want = np.concatenate(_WAVE_PARTIALS[index](x, t), axis=1)
        np.testing.assert_allclose(per_backend.numpy(result), want,
                                   rtol=RTOL, atol=RTOL, err_msg=str(index))


def test_the_laplacian_sums_the_pure_second_partials():
    points = _points(features=3)

    def field(v):  # u = x²y + sin(z)·y³ + eˣ: Δu = 2y + eˣ + 6y·sin z − y³ sin z
        x, y, z = v[:, 0:1], v[:, 1:2], v[:, 2:3]
        return x**2 * y + keras.ops.sin(z) * y**3 + keras.ops.exp(x)

    x, y, z = points[:, 0:1], points[:, 1:2], points[:, 2:3]
    model = _model(field)
    everything = _run(lambda p: input_laplacian(model, p), points)
    np.testing.assert_allclose(
        per_backend.numpy(everything),
        2 * y + np.exp(x) + 6 * y * np.sin(z) - y**3 * np.sin(z), rtol=RTOL)
    space = _run(lambda p: input_laplacian(model, p, features=[0, -1]),
                 points)
    np.testing.assert_allclose(per_backend.numpy(space),
                               2 * y + np.exp(x) - y**3 * np.sin(z), rtol=RTOL)


def test_a_linear_operator_of_analytic_functions():
    """`input_operator` sums its terms times their coefficients, the output
    itself included (`()`), per sample and per output column: here
    `u_t − 0.5·u_xx + 2·u_xt − 3·u` of both of `_wave`'s columns."""
    points = _points()
    x, t = points[:, 0:1], points[:, 1:2]
    got = _run(lambda p: fdlayers.input_operator(
        _model(_wave), p, {(1,): 1.0, (0, 0): -0.5, (1, 0): 2.0, (): -3.0}),
        points)
    columns = [sum(c * np.asarray(part[k]) for c, part in (
        (1.0, _WAVE_PARTIALS[(1,)](x, t)), (-0.5, _WAVE_PARTIALS[(0, 0)](x, t)),
        (2.0, _WAVE_PARTIALS[(0, 1)](x, t)),
        (-3.0, (np.sin(x) * np.exp(t), x**3 * t**2 + 2 * x))))
        for k in range(2)]
    np.testing.assert_allclose(per_backend.numpy(got),
                               np.concatenate(columns, axis=1),
                               rtol=RTOL, atol=RTOL)


def test_zeros_never_none():
    """A linear map's second partials and a constant's first are zeros."""
    points = _points(features=3)
    linear = _model(
        lambda v: keras.ops.matmul(v, keras.ops.convert_to_tensor(
            np.array([[1.0], [2.0], [3.0]], DTYPE))))
    first, mixed, high, laplacian = _run(lambda p: input_partials(
        linear, p, [(2,), (0, 1), (1,) * 4]) + [input_laplacian(linear, p)],
        points)
    np.testing.assert_array_equal(per_backend.numpy(first), 3.0)
    operator = _run(lambda p: fdlayers.input_operator(
        linear, p, {(0, 1): 1.0, (2, 2): -1.0}), points)
    for zero in (mixed, high, laplacian, operator):
        assert zero is not None and tuple(zero.shape) == (7, 1)
        np.testing.assert_array_equal(per_backend.numpy(zero), 0.0)
    constant = _model(
        lambda v: keras.ops.ones_like(v[:, :1]) * 2.0)
    gradient, = input_partials(constant, points, [(1,)])
    np.testing.assert_array_equal(per_backend.numpy(gradient), 0.0)


def test_a_network_agrees_with_input_derivatives_and_keeps_the_order():
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((2,), dtype=DTYPE),
                              keras.layers.Dense(6, "tanh", dtype=DTYPE),
                              keras.layers.Dense(3, dtype=DTYPE)])
    points = _points()
    model(points)
    ours, pure = _run(lambda p: (
        input_partials(model, p, [(1, 1), (1,), (1, 1, 1), (1, 0)]),
        fdlayers.input_derivatives(model, p, order=3, feature=1)), points)
    for got, want in zip((ours[1], ours[0], ours[2]), pure):
        np.testing.assert_allclose(per_backend.numpy(got),
                                   per_backend.numpy(want), rtol=1e-10,
                                   atol=1e-12)
    swapped, = _run(lambda p: input_partials(model, p, [(0, 1)]), points)
    np.testing.assert_allclose(per_backend.numpy(swapped),
                               per_backend.numpy(ours[3]), rtol=1e-10,
                               atol=1e-12)


def _mixed_and_float32(policy):
    """The same dense model under `policy` and in float32: weights set alike."""
    keras.utils.set_random_seed(6)
    models = [keras.Sequential([keras.Input((2,)),
                                keras.layers.Dense(5, "tanh", dtype=dtype),
                                keras.layers.Dense(2, dtype=dtype)])
              for dtype in (policy, "float32")]
    models[0].set_weights(models[1].get_weights())
    return models


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_results_are_in_the_models_dtype(policy):
    """Under a mixed policy the model returns float16 (bfloat16): every
    function's results are in that dtype on every backend (reverse mode
    gives x's float32, JAX's forward mode the model's), and equal the float32
    model's derivatives to the half precision's rounding."""
    mixed, full = _mixed_and_float32(policy)
    x = _points(features=2).astype("float32")
    nu = keras.Variable(0.5, dtype="float32")
    tensor_c = per_backend.tensor(np.full((7, 1), 0.25, "float32"))

    def every(model):
        return [*fdlayers.input_derivatives(model, x, 2),  # elementwise
                *fdlayers.input_derivatives(model, x, 2, feature=1),
                *input_partials(model, x, [(0,), (0, 1), (1, 1, 1)]),
                input_laplacian(model, x),
                fdlayers.input_operator(model, x, {(1,): 1.0, (0, 0): -0.1}),
                fdlayers.input_operator(
                    model, x, {(): 1.0, (1,): nu, (0, 0): tensor_c})]

    half = policy.split("_")[1]
    assert keras.backend.standardize_dtype(mixed(x).dtype) == half
    for got, want in zip(every(mixed), every(full)):
        assert keras.backend.standardize_dtype(got.dtype) == half
        got = per_backend.numpy(keras.ops.cast(got, "float32"))
        want = per_backend.numpy(want)
        # Relative to each result's scale: the half precision's rounding
        # through two layers and up to three derivatives.
        np.testing.assert_allclose(got, want, rtol=0,
                                   atol=(0.05 if half == "bfloat16" else 0.01)
                                   * (np.abs(want).max() + 1e-3))


@pytest.mark.parametrize("call,fragment", [
    (lambda m, x: input_partials(m, x, []),
     r"`indices` must be a non-empty list.*Received: indices=\[\]"),
    (lambda m, x: input_partials(m, x, (0, 1)),
     r"wrap a single multi-index in a list.*Received: indices\[0\]=0"),
    (lambda m, x: input_partials(m, x, [(0,), ()]),
     r"each a non-empty tuple.*Received: indices\[1\]=\(\)"),
    (lambda m, x: input_partials(m, x, [(0, 2)]),
     r"`indices` must hold integers in \[-2, 2\).*Received: indices\[0\]=2"),
    (lambda m, x: input_partials(m, x, [(0, 1.0)]),
     r"Received: indices\[0\]=1\.0"),
    (lambda m, x: input_partials(m, x, "01"),
     r"`indices` must be a non-empty list.*Received: indices='01'"),
    (lambda m, x: input_laplacian(m, x, features=[0, 0]),
     r"`features` must not name a feature twice.*Received: features=\[0, 0\]"),
    (lambda m, x: input_laplacian(m, x, features=[3]),
     r"`features` must hold integers in \[-2, 2\).*Received: features\[0\]=3"),
    (lambda m, x: input_laplacian(m, x, features=1),
     r"`features` must be None or a non-empty list.*Received: features=1"),
    (lambda m, x: input_laplacian(m, x[:, 0]),
     r"`x` must have a batch axis.*Received: x of shape \(7,\)"),
    (lambda m, x: fdlayers.input_operator(m, x, {}),
     r"`terms` must be a non-empty dict.*Received: terms=\{\}"),
    (lambda m, x: fdlayers.input_operator(m, x, [(0,), (1,)]),
     r"`terms` must be a non-empty dict.*Received: terms=\[\(0,\), \(1,\)\]"),
    (lambda m, x: fdlayers.input_operator(m, x, {0: 1.0}),
     r"`terms` must map multi-indices.*Received: the key 0"),
    (lambda m, x: fdlayers.input_operator(m, x, {(0, 2): 1.0}),
     r"`terms` must hold integers in \[-2, 2\).*Received: terms\[\(0, 2\)\]=2"),
    (lambda m, x: fdlayers.input_operator(m, x, {(0,): "1"}),
     r"`terms\[\(0,\)\]`, a coefficient, must be a real number.*Received: '1'"),
    (lambda m, x: fdlayers.input_operator(m, x, {(0,): True}),
     r"`terms\[\(0,\)\]`, a coefficient, must be a real number.*Received: True"),
    (lambda m, x: fdlayers.input_operator(m, x, {(1, 1): float("nan")}),
     r"`terms\[\(1, 1\)\]`, a coefficient, must be finite.*Received: nan"),
    (lambda m, x: fdlayers.input_operator(m, x, {(1,): np.ones((7, 2))}),
     r"`terms\[\(1,\)\]`.*shape \(\) .*or \(batch, 1\).*batch = 7.*"
     r"Received: a coefficient of shape \(7, 2\)"),
    (lambda m, x: fdlayers.input_operator(m, x, {(1,): np.ones(7)}),
     r"Received: a coefficient of shape \(7,\)"),
    (lambda m, x: fdlayers.input_operator(m, x, {(1,): np.ones((6, 1))}),
     r"batch = 7.*Received: a coefficient of shape \(6, 1\)"),
    (lambda m, x: fdlayers.input_operator(m, x, {(1,): np.array(1j)}),
     r"`terms\[\(1,\)\]`, a coefficient, must be real.*dtype complex128"),
])
def test_bad_arguments_are_refused(call, fragment):
    with pytest.raises(ValueError, match=fragment):
        call(_model(_wave), _points())


def test_fdlayers_exports_them():
    assert fdlayers.input_partials is input_partials
    assert fdlayers.input_laplacian is input_laplacian
    assert "input_operator" in fdlayers.__all__


@pytest.mark.skipif(BACKEND != "torch", reason="DeepXDE's PyTorch backend")
def test_deepxde_agrees(monkeypatch):
    """DeepXDE's `jacobian` and `hessian` give the same numbers (on its
    PyTorch backend; its TensorFlow backend needs tensorflow_probability)."""
    monkeypatch.setenv("DDE_BACKEND", os.environ.get("DDE_BACKEND", "pytorch"))
    dde = pytest.importorskip("deepxde")
    if dde.backend.backend_name != "pytorch":
        pytest.skip(f"DeepXDE runs on {dde.backend.backend_name}")
    import torch

    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((2,), dtype=DTYPE),
                              keras.layers.Dense(6, "tanh", dtype=DTYPE),
                              keras.layers.Dense(1, dtype=DTYPE)])
    x = torch.tensor(_points(), requires_grad=True)
    y = model(x)
    theirs = [dde.grad.jacobian(y, x, i=0, j=1),
              dde.grad.hessian(y, x, i=0, j=1),
              dde.grad.hessian(y, x, i=0, j=0)]
    dde.grad.clear()
    ours = input_partials(model, x, [(1,), (0, 1), (0, 0)])
    # Two calls of a float64 Keras model on PyTorch differ by float32
    # rounding (see test_autodiff.py), hence not 1e-12.
    for got, want in zip(ours, theirs):
        np.testing.assert_allclose(per_backend.numpy(got),
                                   per_backend.numpy(want), rtol=1e-6,
                                   atol=1e-9)


@pytest.mark.skipif(BACKEND != "jax", reason="Taylor mode is JAX's")
def test_taylor_mode_falls_back_where_jet_has_no_rule(monkeypatch):
    """softplus (a custom_jvp that jet cannot trace) gets its third
    derivative from nested jvp, the same as with Taylor mode off. (Written
    as a function of its own, it keeps the model out of fdlayers.taylor,
    which has a rule for Keras' softplus activation.)"""
    from fdlayers import partials

    keras.utils.set_random_seed(5)
    model = keras.Sequential([
        keras.Input((2,), dtype=DTYPE),
        keras.layers.Dense(4, lambda v: keras.ops.softplus(v), dtype=DTYPE),
        keras.layers.Dense(1, dtype=DTYPE)])
    points = _points()
    model(points)
    third = _run(lambda p: input_partials(model, p, [(0, 0, 0)])[0], points)
    monkeypatch.setattr(partials, "_JET_MIN_ORDER", 99)
    nested = _run(lambda p: input_partials(model, p, [(0, 0, 0)])[0], points)
    assert np.abs(per_backend.numpy(nested)).max() > 0
    np.testing.assert_allclose(per_backend.numpy(third),
                               per_backend.numpy(nested), rtol=1e-10)
