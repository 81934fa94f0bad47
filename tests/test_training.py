"""Training with derivatives of a network: exact weight gradients, and fit.

A residual loss built from `input_partials`, `input_laplacian` and
`input_derivatives` must have the same gradient with respect to the weights
as the same loss built by hand with each backend's own nested autodiff
(TensorFlow tapes, `jax.grad` of `jax.grad`, `torch.autograd.grad` with
`create_graph=True`), and a model whose `compute_loss` adds such a residual
must train with `model.fit`, compiled or not.
"""

import os

import keras
import numpy as np
import pytest

import fdlayers
import per_backend

BACKEND = keras.backend.backend()
DTYPE = "float64"  # JAX has 64-bit types on in the tests (conftest.py)
# FDLAYERS_SLOW=1 adds the checks that cost seconds each (an eager JAX fit).
SLOW = os.environ.get("FDLAYERS_SLOW") == "1"


def _tanh(v):
    # tanh through exp: Keras 3.15's keras.ops.tanh returns float32 for a
    # float64 input on JAX, which would cap the comparison at float32.
    return 1 - 2 / (keras.ops.exp(2 * v) + 1)


def _network(inputs=2, width=8, depth=2, dtype=DTYPE, seed=11, cls=None):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((inputs,), dtype=dtype)]
    layers += [keras.layers.Dense(width, _tanh, dtype=dtype)
               for _ in range(depth)]
    layers.append(keras.layers.Dense(1, dtype=dtype))
    return (cls or keras.Sequential)(layers)


def _ours(model, x):
    """u, u_x, u_xt, u_ttt, u_xx + u_tt and u_ttt again (its pure-derivative
    path, Taylor mode on JAX), from fdlayers."""
    first, mixed, third = fdlayers.input_partials(model, x, [(0,), (1, 0),
                                                             (1, 1, 1)])
    laplacian = fdlayers.input_laplacian(model, x)
    pure = fdlayers.input_derivatives(model, x, order=3, feature=1)[2]
    return [model(x), first, mixed, third, laplacian, pure]


def _loss(terms):
    return sum(keras.ops.mean(term ** 2) for term in terms)


def _by_hand_tensorflow(model, x):
    import tensorflow as tf

    with tf.GradientTape(persistent=True) as third_tape:
        third_tape.watch(x)
        with tf.GradientTape(persistent=True) as second_tape:
            second_tape.watch(x)
            with tf.GradientTape() as first_tape:
                first_tape.watch(x)
                u = model(x)
            u_x, u_t = tf.split(first_tape.gradient(u, x), 2, axis=1)
        u_xx, u_xt = tf.split(second_tape.gradient(u_x, x), 2, axis=1)
        u_tt = second_tape.gradient(u_t, x)[:, 1:]
    u_ttt = third_tape.gradient(u_tt, x)[:, 1:]
    return [u, u_x, u_xt, u_ttt, u_xx + u_tt, u_ttt]


def _by_hand_torch(model, x):
    import torch

    x = x.detach().requires_grad_(True)
    u = model(x)

    def grad(y):
        return torch.autograd.grad(y.sum(), x, create_graph=True)[0]

    u_x, u_t = grad(u).split(1, dim=1)
    u_xx, u_xt = grad(u_x).split(1, dim=1)
    u_tt = grad(u_t)[:, 1:]
    u_ttt = grad(u_tt)[:, 1:]
    return [u, u_x, u_xt, u_ttt, u_xx + u_tt, u_ttt]


def _by_hand_jax(trainable, non_trainable, model, x):
    import jax

    def u(point):  # one sample's output, a scalar
        y, _ = model.stateless_call(trainable, non_trainable, point[None])
        return y[0, 0]

    def partial(f, j):
        return lambda point: jax.grad(f)(point)[j]

    u_x, u_t = partial(u, 0), partial(u, 1)
    u_xx, u_xt, u_tt = partial(u_x, 0), partial(u_x, 1), partial(u_t, 1)
    u_ttt = partial(u_tt, 1)
    terms = [jax.vmap(f)(x)[:, None]
             for f in (u, u_x, u_xt, u_ttt, u_xx, u_tt)]
    return terms[:4] + [terms[4] + terms[5], terms[3]]


def _weight_gradients(model, x, terms_of):
    """The loss of `terms_of(model, x)` and its gradient with respect to
    the trainable weights, as NumPy arrays."""
    x = per_backend.tensor(x)
    variables = model.trainable_variables
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = _loss(terms_of(model, x))
        grads = tape.gradient(loss, variables)
    elif BACKEND == "torch":
        import torch

        loss = _loss(terms_of(model, x))
        grads = torch.autograd.grad(loss, [v.value for v in variables])
    else:
        import jax

        # The pattern for a hand-written JAX loop: the weights as traced
        # values in a StatelessScope, and fdlayers called on the model.
        def of_weights(trainable):
            with keras.StatelessScope(
                    state_mapping=list(zip(variables, trainable))):
                return _loss(terms_of(model, x))

        loss, grads = jax.jit(jax.value_and_grad(of_weights))(
            [v.value for v in variables])
    return per_backend.numpy(loss), [per_backend.numpy(g) for g in grads]


def _by_hand(model, x):
    if BACKEND == "tensorflow":
        return _by_hand_tensorflow(model, x)
    if BACKEND == "torch":
        return _by_hand_torch(model, x)
    import jax

    variables = model.trainable_variables
    non_trainable = [v.value for v in model.non_trainable_variables]

    def of_weights(trainable):
        return _loss(_by_hand_jax(trainable, non_trainable, model, x))

    # Not through _weight_gradients' StatelessScope: by hand, the weights
    # reach the model through stateless_call alone.
    return jax.jit(jax.value_and_grad(of_weights))(
        [v.value for v in variables])


def test_weight_gradients_match_nested_autodiff_by_hand():
    """Orders 1 to 3, mixed and pure, and a Laplacian: the same loss and
    the same weight gradients as nested autodiff written by hand, to 1e-6
    relative in float64."""
    # One hidden layer on JAX, where tracing and compiling the nested
    # derivatives of two costs seconds.
    model = _network(depth=1 if BACKEND == "jax" else 2)
    x = np.random.default_rng(2).uniform(-1, 1, (8, 2)).astype(DTYPE)
    loss, grads = _weight_gradients(model, x, _ours)
    if BACKEND == "jax":
        want_loss, want = per_backend.numpy(_by_hand(model, per_backend.tensor(x)))
    else:
        want_loss, want = _weight_gradients(model, x, _by_hand)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    assert len(grads) == len(want) == len(model.trainable_variables)
    for got, expected in zip(grads, want):
        assert np.abs(expected).max() > 0
        np.testing.assert_allclose(got, expected, rtol=1e-6,
                                   atol=1e-6 * np.abs(expected).max())


class Oscillator(keras.Sequential):
    """y'' = -y on [0, π] with y(0) = 0, y'(0) = 1 (solution sin t): the
    residual at the batch's points and the initial conditions, from
    `input_derivatives`, as the model's loss."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        first, second = fdlayers.input_derivatives(self, x, order=2)
        origin = keras.ops.zeros((1, 1), dtype=x.dtype)
        start, = fdlayers.input_derivatives(self, origin, order=1)
        value = self(origin, training=False)
        return (keras.ops.mean((second + y_pred) ** 2)
                + keras.ops.mean(value ** 2) + keras.ops.mean((start - 1) ** 2))


# jit_compile where the backend compiles a train step: XLA on TensorFlow
# (and tf.function without it), jax.jit on JAX (and eager without it, slow:
# op by op). PyTorch trains eagerly.
_COMPILE = {
    "tensorflow": [False, True],
    "jax": [True, pytest.param(False, marks=pytest.mark.skipif(
        not SLOW, reason="an eager JAX fit takes seconds: FDLAYERS_SLOW=1"))],
    "torch": [False],
}


@pytest.mark.parametrize("jit_compile", _COMPILE[BACKEND])
def test_fit_solves_the_oscillator(jit_compile):
    model = _network(inputs=1, width=16, depth=1, dtype="float32", seed=3,
                     cls=Oscillator)
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  jit_compile=jit_compile)
    t = np.linspace(0, np.pi, 32, dtype="float32").reshape(-1, 1)

    def step(repeats):  # the loss before the last of `repeats` steps
        return model.fit(np.tile(t, (repeats, 1)), epochs=1, batch_size=32,
                         verbose=0, shuffle=False).history["loss"][-1]

    # The loss of a fit of one step is the loss before it: measured by the
    # compiled train step itself, which is what the test is about.
    before = step(1)
    step(60)
    after = step(1)
    assert np.isfinite(after) and after < 0.1 * before, (before, after)
