"""Taylor mode through chains of dense layers (fdlayers/taylor.py).

`input_partials` and `input_derivatives` take the pure derivatives of order
≥ 3 of a chain of `Dense` layers from one Taylor-mode pass. These tests hold
them to nested autodiff through a forward pass written out by hand (exact
float64 matrix products on every backend), in every supported activation
and model form, eagerly and compiled; their weight gradients to those of
the nested-autodiff path; and `chain` to refusing every model it cannot
read, which then takes the nested path.
"""

import keras
import numpy as np
import pytest

import fdlayers
import per_backend
from fdlayers import partials, taylor
from test_training import _weight_gradients

BACKEND = keras.backend.backend()
DTYPE = "float64"  # JAX has 64-bit types on in the tests (conftest.py)
# Keras 3.15's keras.ops.tanh (and the sigmoid family's exp) return float32
# for a float64 input on JAX, in the model and the reference alike.
RTOL = 1e-6 if BACKEND == "jax" else 1e-10
ACTIVATIONS = ["tanh", "sigmoid", "exponential", "softplus", "silu", "relu",
               "linear"]


def _points(n=6, features=3, seed=4):
    return per_backend.tensor(
        np.random.default_rng(seed).uniform(-1, 1, (n, features)).astype(DTYPE))


def _dense(units, activation=None):
    return keras.layers.Dense(units, activation, dtype=DTYPE)


def _sequential(activation, features=3):
    keras.utils.set_random_seed(7)
    return keras.Sequential([keras.Input((features,), dtype=DTYPE),
                             _dense(5, activation), _dense(4, activation),
                             _dense(2)])


def _functional(activation, features=3):
    """A functional chain with an `Activation` and a `Dropout` layer and a
    nested `Sequential`."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input((features,), dtype=DTYPE)
    h = _dense(5)(inputs)
    h = keras.layers.Activation(activation, dtype=DTYPE)(h)
    h = keras.layers.Dropout(0.5, dtype=DTYPE)(h)
    inner = keras.Sequential([keras.Input((5,), dtype=DTYPE),
                              _dense(4, activation)])
    return keras.Model(inputs, _dense(2)(inner(h)))


def _by_hand(model):
    """The model's forward pass written out: `h @ kernel + bias` (the
    backend's own matrix product: on PyTorch, Keras 3.15's `ops.matmul`
    rounds float64 products to float32) and each activation."""
    steps = []
    taylor._flatten(model, steps)

    def call(v):
        for kind, item in steps:
            if kind == "dense":
                v = v @ item.kernel.value + item.bias.value
            elif item != "linear":
                v = keras.activations.get(item)(v)
        return v
    return call


def _nested(model, x, indices):
    """The partials by the nested autodiff path, Taylor mode off."""
    values = partials.partials(_by_hand(model), x, indices, BACKEND)
    return [values[index] for index in indices]


def _run(fn, *args):
    if BACKEND == "jax":  # eagerly, JAX compiles each nested primitive
        import jax

        return jax.jit(fn)(*args)
    return fn(*args)


@pytest.mark.parametrize("activation, form", [
    (activation, (_sequential, _functional)[k % 2])
    for k, activation in enumerate(ACTIVATIONS)])
def test_pure_derivatives_equal_nested_autodiff(activation, form):
    """Orders 1 to 5 along one feature and 3 along another, every
    supported activation."""
    model = form(activation)
    x = _points()
    assert taylor.chain(model, x) is not None
    feature, other = (0, 1) if form is _sequential else (2, 0)
    # Both features in one pass, to orders 5 and 3.
    indices = [(feature,) * k for k in range(1, 6)] + [(other,) * 3]
    got = _run(lambda v: fdlayers.input_partials(model, v, indices), x)
    want = _run(lambda v: _nested(model, v, indices), x)
    for index, g, w in zip(indices, got, want):
        g, w = per_backend.numpy(g), per_backend.numpy(w)
        assert g.shape == w.shape == (6, 2) and g.dtype == np.float64
        np.testing.assert_allclose(
            g, w, rtol=RTOL, atol=RTOL * np.abs(w).max() + 1e-300,
            err_msg=f"{activation}, {index}")


@pytest.mark.parametrize("activation, form", [
    (activation, (_functional, _sequential)[k % 2])
    for k, activation in enumerate(ACTIVATIONS)])
def test_first_and_second_orders_in_one_pass(activation, form):
    """`first_and_second`: first and second derivatives along several
    features from one shared pass, every supported activation, on every
    backend (it is dispatched on PyTorch, `partials._SECOND_ORDER`)."""
    model = form(activation)
    x = _points()
    found = taylor.chain(model, x)
    indices = [(0,), (0, 0), (2,), (1,), (1, 1)]
    got = _run(lambda v: taylor.first_and_second(
        *found, v, {0: 2, 2: 1, 1: 2}), x)
    assert sorted(got) == sorted(indices)
    want = _run(lambda v: _nested(model, v, indices), x)
    for index, w in zip(indices, want):
        g, w = per_backend.numpy(got[index]), per_backend.numpy(w)
        assert g.shape == w.shape == (6, 2) and g.dtype == np.float64
        np.testing.assert_allclose(
            g, w, rtol=RTOL, atol=RTOL * np.abs(w).max() + 1e-300,
            err_msg=f"{activation}, {index}")
    if activation in ("relu", "linear"):  # second derivatives: exact zeros
        assert not per_backend.numpy(got[(1, 1)]).any()


# Linear combinations of first and second derivatives, as
# `{multi-index: coefficient}`: a Laplacian, a residual, a mixed partial
# with first-order terms, first-order terms alone.
OPERATORS = [{(0, 0): 1.0, (1, 1): 1.0, (2, 2): 1.0},
             {(1,): 1.0, (0, 0): -0.25},
             {(0, 2): 2.0, (1,): -0.5, (2, 2): 3.0},
             {(0,): 1.5, (2,): -1.0}]


@pytest.mark.parametrize("activation, form", [
    (activation, (_sequential, _functional)[k % 2])
    for k, activation in enumerate(ACTIVATIONS)])
def test_linear_combinations_in_one_pass(activation, form):
    """`operator`: a combination of first and second derivatives carried
    through the chain as one tensor equals the same combination of nested
    autodiff's partials, every supported activation, on every backend;
    and the value it returns is the model's."""
    model = form(activation)
    x = _points()
    found = taylor.chain(model, x)
    # Every term's nested partial, in one run: `Σ c · nested partial`.
    indices = sorted({index for terms in OPERATORS for index in terms})
    nested = dict(zip(indices, map(per_backend.numpy, _run(
        lambda v: _nested(model, v, indices), x))))
    by_hand = per_backend.numpy(_by_hand(model)(x))
    for terms in OPERATORS:
        firsts = {i[0]: c for i, c in terms.items() if len(i) == 1}
        seconds = {i: c for i, c in terms.items() if len(i) == 2}
        value, got = _run(lambda v: taylor.operator(*found, v, firsts,
                                                    seconds), x)
        want = sum(c * nested[index] for index, c in terms.items())
        np.testing.assert_allclose(per_backend.numpy(value), by_hand,
                                   rtol=RTOL)
        if got is None:  # zero throughout: no first-order term, no curvature
            assert activation in ("relu", "linear") and not firsts
            assert not want.any()
            continue
        got = per_backend.numpy(got)
        assert got.shape == (6, 2) and got.dtype == np.float64
        np.testing.assert_allclose(
            got, want, rtol=RTOL, atol=RTOL * np.abs(want).max() + 1e-300,
            err_msg=f"{activation}, {terms}")


@pytest.mark.parametrize("features", [None, [2, 0]])
def test_input_laplacian_takes_the_summed_pass(features, monkeypatch):
    """Where `partials._OPERATOR` names the backend, `input_laplacian` of
    a dense chain is one pass that carries the sum (`taylor.operator`); of
    any other model, the sum of the partials. Both equal nested autodiff."""
    monkeypatch.setattr(partials, "_OPERATOR", {BACKEND})
    calls = []
    summed = taylor.operator
    monkeypatch.setattr(taylor, "operator",
                        lambda *a: calls.append(a[-1]) or summed(*a))
    chained = _sequential("tanh")
    x = _points()
    chosen = [0, 1, 2] if features is None else features
    got = _run(lambda v: fdlayers.input_laplacian(chained, v, features), x)
    assert calls == [{(j, j): 1.0 for j in chosen}]
    want = sum(per_backend.numpy(w) for w in _run(
        lambda v: _nested(chained, v, [(j, j) for j in chosen]), x))
    np.testing.assert_allclose(per_backend.numpy(got), want, rtol=RTOL,
                               atol=RTOL * np.abs(want).max())
    calls.clear()
    other = _skip_connection()  # not a chain: the partials' sum
    got = _run(lambda v: fdlayers.input_laplacian(other, v, features), x)
    assert not calls
    want = sum(per_backend.numpy(w) for w in _run(
        lambda v: [partials.partials(
            lambda w: other(w, training=False), v, [(j, j)], BACKEND)[(j, j)]
            for j in chosen], x))
    np.testing.assert_allclose(per_backend.numpy(got), want, rtol=1e-12,
                               atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("terms, one_pass", [
    ({(1,): 1.0, (0, 0): -1.0}, True),
    ({(1,): 1.0, (0, 0): -1.0, (): 0.5}, True),       # the output itself
    ({(0, 1): 1.0, (2,): 2.0}, True),                 # mixed
    ({(0,): 1.0, (2,): -3.0}, True),                  # first order only
    ({(0, 0, 0): 1.0, (1,): 1.0}, False),             # a third order
    ({(): 2.0}, True),
])
def test_input_operator_and_its_pass(terms, one_pass, monkeypatch):
    """`input_operator` equals the same combination of `input_partials`;
    where `partials._OPERATOR` names the backend and every term is of
    order ≤ 2, a dense chain takes one pass (`taylor.operator`), any other
    model or order the partials' sum."""
    monkeypatch.setattr(partials, "_OPERATOR", {BACKEND})
    calls = []
    summed = taylor.operator
    monkeypatch.setattr(taylor, "operator",
                        lambda *a: calls.append(1) or summed(*a))
    x = _points()
    for model, chained in ((_sequential("sigmoid"), True),
                           (_skip_connection(), False)):
        calls.clear()
        got = per_backend.numpy(_run(
            lambda v: fdlayers.input_operator(model, v, terms), x))
        assert calls == ([1] if chained and one_pass else [])
        call = _by_hand(model) if chained else (
            lambda w: model(w, training=False))
        want = 0.0
        for index, c in terms.items():
            term = (call(x) if not index else
                    fdlayers.input_partials(model, x, [index])[0])
            want = want + c * per_backend.numpy(term)
        assert got.shape == want.shape and got.dtype == np.float64
        # Reverse mode's mixed partial differentiates Keras' Dense, whose
        # float64 products are float32 on PyTorch (README).
        rtol = 1e-6 if BACKEND == "torch" else RTOL
        np.testing.assert_allclose(got, want, rtol=rtol,
                                   atol=rtol * np.abs(want).max() + 1e-300,
                                   err_msg=str(terms))


def test_input_operator_with_coefficients_per_sample():
    """A coefficient may be a tensor of shape () or (batch, 1): each
    sample's terms times its own coefficient, in the one pass and in the
    partials' sum alike."""
    x = _points()
    per_sample = per_backend.tensor(np.linspace(0.5, 2.0, 6)[:, None])
    scalar = per_backend.tensor(np.array(-0.75))
    for model in (_sequential("tanh"), _skip_connection()):
        u_t, u_xx, u_xy = (per_backend.numpy(p) for p in
                           fdlayers.input_partials(model, x, [(1,), (0, 0),
                                                              (0, 1)]))
        got = per_backend.numpy(fdlayers.input_operator(
            model, x, {(1,): per_sample, (0, 0): scalar, (1, 0): scalar,
                       (0, 1): 0.5}))
        want = (np.linspace(0.5, 2.0, 6)[:, None] * u_t - 0.75 * u_xx
                - 0.25 * u_xy)
        np.testing.assert_allclose(got, want, rtol=1e-6,
                                   atol=1e-6 * np.abs(want).max())


def test_a_trainable_coefficient_gets_its_gradient():
    """A Keras variable as a coefficient (an inverse problem's unknown ν)
    gets the gradient of a loss built from the result: for
    `L = mean((u_t − ν·u_xx)²)`, `∂L/∂ν = −2·mean(r·u_xx)`, in the one pass
    (a chain) and in the partials' sum (any other model)."""
    x = _points()
    nu = keras.Variable(0.3, dtype=DTYPE)
    for model in (_sequential("tanh"), _skip_connection()):
        u_t, u_xx = (per_backend.numpy(p) for p in fdlayers.input_partials(
            model, x, [(1,), (0, 0)]))
        residual = u_t - 0.3 * u_xx
        want = -2.0 * np.mean(residual * u_xx)

        def loss(v):
            r = fdlayers.input_operator(model, v, {(1,): 1.0, (0, 0): -nu})
            return keras.ops.mean(r ** 2)

        if BACKEND == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                value = loss(tf.constant(x))
            got = tape.gradient(value, nu.value)
        elif BACKEND == "torch":
            import torch

            got, = torch.autograd.grad(loss(per_backend.tensor(x)),
                                       [nu.value])
        else:
            import jax

            def of_nu(value):
                with keras.StatelessScope(state_mapping=[(nu, value)]):
                    return loss(x)
            got = jax.jit(jax.grad(of_nu))(nu.value)
        # Reverse mode differentiates Keras' Dense, whose float64 products
        # are float32 on PyTorch (README); Keras' tanh is float32 on JAX.
        np.testing.assert_allclose(per_backend.numpy(got), want,
                                   rtol=1e-8 if BACKEND == "tensorflow"
                                   else 1e-6)


@pytest.mark.parametrize("indices, shared, series", [
    ([(1,), (0, 0)], {0: 2, 1: 1}, []),
    ([(0, 0), (1, 1)], {0: 2, 1: 2}, []),
    ([(0, 0, 0), (1, 1), (1,)], {1: 2}, [(0, 3)]),
    ([(0,), (1,)], None, []),                   # no second order: reverse
    ([(0, 0), (0, 1)], None, []),               # a mixed partial: reverse
    ([(0, 0), (0, 0, 0, 0)], None, [(0, 4)]),   # all from the series
])
def test_which_derivatives_take_the_shared_pass(indices, shared, series,
                                                monkeypatch):
    """Where `partials._SECOND_ORDER` names the backend, the pure first and
    second derivatives that Taylor mode's series leave take one shared
    pass, if one is a second and no index is mixed; the results equal
    nested autodiff either way."""
    monkeypatch.setattr(partials, "_SECOND_ORDER", {BACKEND})
    # Taylor mode from order 3 here on every backend (JAX: from order 1).
    monkeypatch.setitem(partials._TAYLOR_MIN_ORDER, BACKEND, 3)
    calls = {"shared": [], "series": []}
    first_and_second, by_series = taylor.first_and_second, taylor.series
    monkeypatch.setattr(taylor, "first_and_second", lambda *a: calls[
        "shared"].append(dict(a[-1])) or first_and_second(*a))
    monkeypatch.setattr(taylor, "series", lambda *a: calls["series"].append(
        a[-2:]) or by_series(*a))
    model = _sequential("tanh", features=2)
    x = _points(features=2)
    got = fdlayers.input_partials(model, x, indices)
    assert calls["shared"] == ([shared] if shared else [])
    assert calls["series"] == series
    want = _run(lambda v: _nested(model, v, indices), x)
    # Reverse mode differentiates Keras' Dense, whose float64 products are
    # float32 on PyTorch (README); Taylor mode multiplies in float64.
    rtol = 1e-6 if BACKEND == "torch" and not shared else RTOL
    for index, g, w in zip(indices, got, want):
        g, w = per_backend.numpy(g), per_backend.numpy(w)
        np.testing.assert_allclose(g, w, rtol=rtol,
                                   atol=rtol * np.abs(w).max() + 1e-300,
                                   err_msg=str(index))


def test_zeros_where_the_truth_is_zero():
    """A linear chain's and a relu chain's third derivatives are zeros of
    the output's shape, never None."""
    for activation in ("linear", "relu"):
        model = _sequential(activation)
        third, = fdlayers.input_partials(model, _points(), [(1, 1, 1)])
        third = per_backend.numpy(third)
        assert third.shape == (6, 2)
        assert not third.any(), activation


@pytest.mark.parametrize("mode", per_backend.MODES)
def test_compiled_and_at_new_batch_sizes(mode):
    """In each compiled mode, and at batch sizes in and out of one padded
    size (TensorFlow compiles one XLA program per size of `_bucket`)."""
    model = _sequential("tanh")
    fn = per_backend.compiled(
        lambda v: fdlayers.input_derivatives(model, v, order=4, feature=1), mode)
    for n in (1, 7, 13):
        x = _points(n=n, seed=n)
        got = [per_backend.numpy(t) for t in fn(x)]
        want = [per_backend.numpy(t) for t in _run(
            lambda v: _nested(model, v, [(1,) * k for k in range(1, 5)]), x)]
        for g, w in zip(got, want):
            assert g.shape == (n, 2)
            np.testing.assert_allclose(g, w, rtol=RTOL,
                                       atol=RTOL * np.abs(w).max())


def test_weight_gradients_equal_nested_autodiff():
    """A loss of third and fourth derivatives (Taylor mode, and a mixed one
    by nested autodiff) has the weight gradients of the same loss by nested
    autodiff of the forward pass written out, to 1e-8 relative in float64
    (sigmoid: Keras' tanh is float32 on JAX)."""
    model = _sequential("sigmoid", features=2)
    x = np.random.default_rng(2).uniform(-1, 1, (8, 2)).astype(DTYPE)
    indices = [(0, 0, 0), (1, 1, 1, 1), (0, 1, 1)]

    def ours(model, v):  # the output itself too, for the output bias
        return [_by_hand(model)(v)] + fdlayers.input_partials(model, v,
                                                              indices)

    def nested(model, v):
        call = _by_hand(model)
        return [call(v)] + _nested(model, v, indices)

    _assert_same_weight_gradients(model, x, ours, nested)


def _assert_same_weight_gradients(model, x, ours, nested, before=None):
    """The loss of `ours(model, x)`'s terms and its 6 weight gradients
    equal `nested`'s to 1e-8 relative; `before()`, if given, runs between
    the two (after `ours` has been traced or run)."""
    got_loss, got = _weight_gradients(model, x, ours)
    if before is not None:
        before()
    want_loss, want = _weight_gradients(model, x, nested)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-8)
    assert len(got) == len(want) == 6
    for g, w in zip(got, want):
        assert np.abs(w).max() > 0
        # Relative to each array's largest element: on PyTorch the mixed
        # partial goes through Keras' Dense, float32 products (README).
        np.testing.assert_allclose(g, w, rtol=1e-8,
                                   atol=1e-8 * np.abs(w).max())


def test_weight_gradients_of_the_shared_pass(monkeypatch):
    """u_t − u_xx from the shared first-and-second-order pass, a Laplacian
    and u_t − u_xx + 0.5·u_xt from the summed one: the weight gradients of
    nested autodiff to 1e-8 relative in float64, on every backend
    (sigmoid: Keras' tanh is float32 on JAX)."""
    monkeypatch.setattr(partials, "_SECOND_ORDER", {BACKEND})
    monkeypatch.setattr(partials, "_OPERATOR", {BACKEND})
    monkeypatch.setitem(partials._TAYLOR_MIN_ORDER, BACKEND, 3)
    calls = []
    first_and_second, summed = taylor.first_and_second, taylor.operator
    monkeypatch.setattr(taylor, "first_and_second",
                        lambda *a: calls.append(1) or first_and_second(*a))
    monkeypatch.setattr(taylor, "operator",
                        lambda *a: calls.append(2) or summed(*a))
    model = _sequential("sigmoid", features=2)
    x = np.random.default_rng(5).uniform(-1, 1, (8, 2)).astype(DTYPE)

    def ours(model, v):
        u_t, u_xx = fdlayers.input_partials(model, v, [(1,), (0, 0)])
        return [_by_hand(model)(v), u_t - u_xx,
                fdlayers.input_laplacian(model, v),
                fdlayers.input_operator(
                    model, v, {(1,): 1.0, (0, 0): -1.0, (0, 1): 0.5})]

    def nested(model, v):
        u_t, u_xx, u_yy, u_xt = _nested(model, v,
                                        [(1,), (0, 0), (1, 1), (0, 1)])
        return [_by_hand(model)(v), u_t - u_xx, u_xx + u_yy,
                u_t - u_xx + 0.5 * u_xt]

    def both_passes_taken():  # (traced once on JAX)
        assert set(calls) == {1, 2}

    _assert_same_weight_gradients(model, x, ours, nested, both_passes_taken)


class Beam(keras.Sequential):
    """u'''' = 1 on batches of points of [0, 1] that start at 0, and
    u(0) = 0: a fourth-order residual, Taylor mode inside the train step."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        fourth, = fdlayers.input_partials(self, x, [(0, 0, 0, 0)])
        return (keras.ops.mean((fourth - 1.0) ** 2)
                + keras.ops.mean(y_pred[:1] ** 2))


_COMPILE = {"tensorflow": [False, True], "jax": [True], "torch": [False]}


def _losses_around_fit(model, x, jit_compile):
    """The loss on the points `x` before and after 40 steps of `fit` on
    batches of them (Adam, learning rate 0.01)."""
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  jit_compile=jit_compile)
    before = model.evaluate(x, verbose=0)
    model.fit(np.tile(x, (40, 1)), epochs=1, batch_size=len(x), verbose=0,
              shuffle=False)
    return before, model.evaluate(x, verbose=0)


@pytest.mark.parametrize("jit_compile", _COMPILE[BACKEND])
def test_fit_trains_on_a_fourth_order_residual(jit_compile, monkeypatch):
    calls = []
    series = taylor.series
    monkeypatch.setattr(taylor, "series",
                        lambda *args: calls.append(1) or series(*args))
    keras.utils.set_random_seed(3)
    model = Beam([keras.Input((1,)), keras.layers.Dense(16, "tanh"),
                  keras.layers.Dense(1)])
    assert taylor.chain(model, _points(features=1)) is None  # float64 points
    x = np.linspace(0, 1, 32, dtype="float32").reshape(-1, 1)
    assert taylor.chain(model, per_backend.tensor(x)) is not None
    before, after = _losses_around_fit(model, x, jit_compile)
    # Measured: 1.14 before, 0.028 after on TensorFlow; 1.41, 0.038 on JAX;
    # 1.32, 0.043 on PyTorch.
    assert np.isfinite(after) and after < 0.1 * before, (before, after)
    assert calls  # traced (or run) through Taylor mode


class Heat(keras.Sequential):
    """u_t = u_xx on points (x, t) of [0, 1]², with u(x, 0) = sin πx: the
    residual from `input_operator` inside the train step."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        residual = fdlayers.input_operator(self, x, {(1,): 1.0, (0, 0): -1.0})
        start = keras.ops.concatenate([x[:, :1], 0.0 * x[:, 1:]], axis=1)
        return (keras.ops.mean(residual ** 2) + keras.ops.mean(
            (self(start) - keras.ops.sin(np.pi * x[:, :1])) ** 2))


@pytest.mark.parametrize("jit_compile", _COMPILE[BACKEND])
def test_fit_trains_on_a_linear_operator(jit_compile, monkeypatch):
    """`model.fit` trains a dense chain on a residual from
    `input_operator`, through the one pass (`taylor.operator`), with
    `jit_compile` on and off where the backend allows it."""
    calls = []
    operator = taylor.operator
    monkeypatch.setattr(taylor, "operator",
                        lambda *args: calls.append(1) or operator(*args))
    keras.utils.set_random_seed(4)
    model = Heat([keras.Input((2,)), keras.layers.Dense(16, "tanh"),
                  keras.layers.Dense(16, "tanh"), keras.layers.Dense(1)])
    x = np.random.default_rng(4).uniform(0, 1, (64, 2)).astype("float32")
    before, after = _losses_around_fit(model, x, jit_compile)
    # Measured: 1.16 before, 0.099 after on TensorFlow; 1.35, 0.098 on JAX;
    # 0.54, 0.097 on PyTorch (its own initial weights).
    assert np.isfinite(after) and after < 0.25 * before, (before, after)
    assert calls  # traced (or run) through the one pass


def _skip_connection():
    inputs = keras.Input((3,), dtype=DTYPE)
    return keras.Model(inputs, _dense(3, "tanh")(inputs) + inputs)


def _shared_layer():
    inputs = keras.Input((3,), dtype=DTYPE)
    layer = _dense(3, "tanh")
    return keras.Model(inputs, layer(layer(inputs)))


def _with_lora():
    model = _sequential("tanh")
    model.layers[0].enable_lora(2)
    return model


class _MyDense(keras.layers.Dense):
    pass


class _Doubled(keras.Sequential):
    """A chain whose own `call` doubles its output: not what its layers say."""

    def call(self, inputs, training=None, mask=None):
        return 2 * super().call(inputs, training=training, mask=mask)


def _doubled():
    return _Doubled([keras.Input((3,), dtype=DTYPE), _dense(4, "tanh")])


@pytest.mark.parametrize("build", [
    lambda: keras.Sequential([keras.Input((3,), dtype=DTYPE),
                              _dense(4, lambda v: keras.ops.tanh(v))]),
    lambda: keras.Sequential([keras.Input((3,), dtype=DTYPE),
                              _dense(4, "gelu")]),
    lambda: keras.Sequential([keras.Input((3,), dtype=DTYPE), _dense(4),
                              keras.layers.Lambda(keras.ops.sin)]),
    lambda: keras.Sequential([keras.Input((3,), dtype=DTYPE),
                              _MyDense(4, dtype=DTYPE)]),
    lambda: keras.Sequential([keras.Input((3,), dtype=DTYPE),
                              keras.layers.Activation("tanh"), _dense(4)]),
    lambda: keras.Sequential([_dense(4)]),  # never built
    lambda: keras.Sequential([keras.Input((3,)),
                              keras.layers.Dense(4, dtype="mixed_float16")]),
    _skip_connection, _shared_layer, _with_lora, _doubled,
], ids=["function activation", "gelu", "Lambda", "Dense subclass",
        "activation first", "unbuilt", "mixed precision", "skip connection",
        "shared layer", "LoRA", "Sequential with its own call"])
def test_chain_refuses_what_it_cannot_read(build):
    """Anything but a plain chain of dense layers, with their own dtype and
    known activations, takes nested autodiff: `chain` is None, and the
    derivatives still agree with it."""
    model = build()
    x = _points()
    assert taylor.chain(model, x) is None
    if model.built and model.dtype_policy.compute_dtype == DTYPE:
        got, = _run(lambda v: fdlayers.input_partials(model, v, [(0, 0, 0)]), x)
        want, = _run(lambda v: partials.partials(
            lambda w: model(w, training=False), v, [(0, 0, 0)],
            BACKEND)[(0, 0, 0)], x)
        np.testing.assert_allclose(per_backend.numpy(got),
                                   per_backend.numpy(want), rtol=1e-12)


def test_chain_needs_a_matrix_of_points():
    model = _sequential("tanh")
    assert taylor.chain(model, per_backend.tensor(
        np.zeros((2, 1, 3), DTYPE))) is None
    assert taylor.chain(model, per_backend.tensor(
        np.zeros((2, 3), "float32"))) is None
