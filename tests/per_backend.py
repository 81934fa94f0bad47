"""What the backend-neutral tests need to do differently on each Keras backend.

The tests in test_layers.py, test_irregular.py and test_ops.py run on
TensorFlow, JAX and PyTorch (see test_backends.py). Differentiating and
compiling are the only things Keras has no common API for, so these helpers
do them with each backend's own tools:

- TensorFlow: `tf.GradientTape`; `tf.function`, with and without XLA;
- JAX: `jax.vjp` and `jax.grad`; `jax.jit`;
- PyTorch: `torch.autograd.grad`; no compiled mode (fdlayers runs op by op).

Inputs are NumPy arrays and results come back as NumPy arrays.
"""

import keras
import numpy as np

BACKEND = keras.backend.backend()


def _tensorflow():
    import tensorflow as tf

    return tf


# ---------------------------------------------------------------------------
# Compilation.

def _tf_function(fn):
    return _tensorflow().function(fn)


def _xla(fn):
    return _tensorflow().function(fn, jit_compile=True)


def _jax_jit(fn):
    import jax

    return jax.jit(fn)


_MODES = {
    "tensorflow": {"eager": None, "tf.function": _tf_function, "XLA": _xla},
    "jax": {"eager": None, "jax.jit": _jax_jit},
    "torch": {"eager": None},
}

# The ways this backend runs a function: eagerly, and each compiled mode.
MODES = list(_MODES[BACKEND])


def compiled(fn, mode):
    """`fn` as `mode` (one of `MODES`) runs it."""
    wrap = _MODES[BACKEND][mode]
    return fn if wrap is None else wrap(fn)


# TensorFlow runs a stencil on one of several paths, by mode and size
# (`fdlayers.dispatch.placement`); tests force each one on small inputs. Eagerly:
# NumPy on the CPU, op by op (as on other devices), the fused XLA kernels.
# In a tf.function traced for any length (`None` sizes, as a Keras model's
# `predict` or a served SavedModel): op by op, or the kernels compiled for
# padded lengths. Then the whole program under XLA. (A tf.function traced
# for the input's shape runs the same functions as "any length" below
# `_FUSION_MIN_SIZE` elements, and the fused kernels from it on; MODES
# covers it.)
_TF_PATHS = {
    "eager, NumPy": (None, float("inf"), True),
    "eager, op by op": (None, float("inf"), False),
    "eager, fused": (None, 0, True),
    "any length": ("any length", float("inf"), True),
    "any length, padded": ("any length", 0, True),
}
PATHS = (list(_TF_PATHS) + MODES[2:] if BACKEND == "tensorflow" else MODES)


def _any_length(fn):
    """`fn` in a tf.function traced for inputs of any size (rank only)."""
    tf = _tensorflow()
    function = tf.function(fn)

    def call(*args):
        args = [tf.convert_to_tensor(a) for a in args]
        specs = [tf.TensorSpec([None] * a.shape.rank, a.dtype) for a in args]
        return function.get_concrete_function(*specs)(*args)

    return call


def on_path(path, monkeypatch):
    """`wrap` with `wrap(fn)` running `fn` on `path` (one of `PATHS`)."""
    if path in _TF_PATHS:
        from fdlayers import dispatch

        wrap, size, numpy = _TF_PATHS[path]
        monkeypatch.setattr(dispatch, "_FUSION_MIN_SIZE", size)
        monkeypatch.setattr(dispatch, "_EAGER_NUMPY", numpy)
        if wrap is None:
            return lambda fn: fn
        return _any_length if wrap == "any length" else wrap
    return lambda fn: compiled(fn, path)


def whole_program(fn):
    """`fn` under the backend's compiler of whole programs: XLA
    (`tf.function(jit_compile=True)`), `jax.jit`, or `torch.compile` (graph
    capture by TorchDynamo and AOTAutograd, run by the "aot_eager" backend,
    which needs no C++ compiler)."""
    if BACKEND == "tensorflow":
        return _xla(fn)
    if BACKEND == "jax":
        return _jax_jit(fn)
    import torch

    return torch.compile(fn, backend="aot_eager")


def numpy(values):
    """A tensor, or a tuple or list of them, as NumPy arrays."""
    if isinstance(values, (tuple, list)):
        return type(values)(numpy(v) for v in values)
    if BACKEND == "torch":
        values = values.detach()
    return keras.ops.convert_to_numpy(values)


def tensor(array):
    return keras.ops.convert_to_tensor(np.asarray(array))


# ---------------------------------------------------------------------------
# Derivatives with respect to the input.

def value_and_gradients(fn):
    """A function `(x, upstream, second) -> (y, dx, d2)`, all tensors, where

    - `y = fn(x)`;
    - `dx` is the gradient of `<fn(x), upstream>` with respect to `x`, the
      adjoint `Jᵀ·upstream` of fn's Jacobian `J`;
    - `d2` is the gradient of `<dx, second>` with respect to `upstream`:
      `J·second`, a derivative of the backward pass itself, which must be
      differentiable again (second and higher derivatives).

    Wrap it with `compiled` to run it in a compiled mode.
    """
    if BACKEND == "tensorflow":
        tf = _tensorflow()

        def run(x, upstream, second):
            with tf.GradientTape() as outer:
                outer.watch(upstream)
                with tf.GradientTape() as inner:
                    inner.watch(x)
                    y = fn(x)
                dx = inner.gradient(y, x, output_gradients=upstream)
            return y, dx, outer.gradient(dx, upstream, output_gradients=second)
    elif BACKEND == "jax":
        import jax

        def run(x, upstream, second):
            y, pullback = jax.vjp(fn, x)
            dx, pullback_dx = jax.vjp(lambda u: pullback(u)[0], upstream)
            return y, dx, pullback_dx(second)[0]
    else:
        import torch

        def run(x, upstream, second):
            x = x.detach().requires_grad_(True)
            upstream = upstream.detach().requires_grad_(True)
            y = fn(x)
            dx, = torch.autograd.grad(y, x, grad_outputs=upstream,
                                      create_graph=True)
            d2, = torch.autograd.grad(dx, upstream, grad_outputs=second)
            return y, dx, d2
    return run


def gradient_and_hessian_product(loss):
    """A function `(x, v) -> (∇loss(x), ∇²loss(x)·v)` for a scalar `loss`.

    Differentiates `loss` twice with respect to its input, the way a user
    would on each backend (nested tapes, `jax.jvp` of `jax.grad`,
    `create_graph=True`), so a second derivative that is missing or `None`
    fails here.
    """
    if BACKEND == "tensorflow":
        tf = _tensorflow()

        def run(x, v):
            with tf.GradientTape() as outer:
                outer.watch(x)
                with tf.GradientTape() as inner:
                    inner.watch(x)
                    value = loss(x)
                grad = inner.gradient(value, x)
                projected = tf.reduce_sum(grad * v)
            return grad, outer.gradient(projected, x)
    elif BACKEND == "jax":
        import jax

        def run(x, v):
            return jax.jvp(jax.grad(loss), (x,), (v,))
    else:
        import torch

        def run(x, v):
            x = x.detach().requires_grad_(True)
            grad, = torch.autograd.grad(loss(x), x, create_graph=True)
            hessian_v, = torch.autograd.grad(grad, x, grad_outputs=v)
            return grad, hessian_v
    return run


# ---------------------------------------------------------------------------
# Derivatives with respect to a model's weights.

def weight_gradients(model, loss, x):
    """Gradients of `loss(model(x))` with respect to `model.trainable_variables`,
    in their order, as NumPy arrays (None where a backend returns None)."""
    x = tensor(x)
    if BACKEND == "tensorflow":
        tf = _tensorflow()
        with tf.GradientTape() as tape:
            value = loss(model(x))
        grads = tape.gradient(value, model.trainable_weights)
    elif BACKEND == "jax":
        import jax

        non_trainable = [v.value for v in model.non_trainable_variables]

        def of_weights(trainable):
            y, _ = model.stateless_call(trainable, non_trainable, x)
            return loss(y)

        grads = jax.grad(of_weights)([v.value for v in model.trainable_variables])
    else:
        import torch

        grads = torch.autograd.grad(loss(model(x)),
                                    [v.value for v in model.trainable_variables],
                                    allow_unused=True)
    return [None if g is None else numpy(g) for g in grads]


def clear_caches():
    """Empty fdlayers' caches of plans, weights and traced functions, so
    that the next call starts cold (on PyTorch they sit behind
    `torch.compiler.disable`, as `__wrapped__`)."""
    from fdlayers import kernels, masking, ops, savgol, stencils

    for module in (stencils, savgol, kernels, masking, ops):
        for value in vars(module).values():
            for fn in (value, getattr(value, "__wrapped__", None)):
                clear = getattr(fn, "cache_clear", None)
                if callable(clear):
                    clear()
