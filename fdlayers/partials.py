"""How each backend computes partial derivatives of a per-sample function.

`partials(call, x, indices)` returns, for every multi-index `α = (j₁, ..., jₖ)`
in `indices` (sorted, distinct, non-empty tuples of flat feature indices),

    ∂ᵏ y[i, ...] / ∂x[i, j₁] ... ∂x[i, jₖ],   y = call(x),

per sample `i`, shaped like `y`. The function must treat samples
independently, so that the gradient of `Σᵢ y[i, e]` with respect to `x` is,
row by row, each sample's own gradient. Partial derivatives of a smooth
function commute, so a multi-index is a sorted tuple, and its sorted
prefixes are the lower derivatives it is built from: `(0, 1, 1)` is ∂/∂x₁ of
`(0, 1)`, which is ∂/∂x₁ of `(0,)`. Every prefix is computed once, whatever
the number of multi-indices it serves.

Nothing is detached or cut: every result is a differentiable function of
the weights `call` reads, so a loss built from the results has the exact
gradient with respect to them on every backend.

- A chain of dense layers (`taylor.chain`), every backend: its pure
  derivatives along one feature, from order 3 on (from order 1 on JAX), by
  Taylor mode (fdlayers/taylor.py): all orders of that feature in one
  forward pass, at a cost that grows with the square of the order. On
  PyTorch, pure first and second derivatives, where one is a second and
  none is mixed, come from one forward pass that every feature shares
  (`taylor.first_and_second`), and on every backend a linear
  combination of first and second derivatives (a Laplacian, `u_t − u_xx`)
  from one pass that carries the sum (`taylor.operator`).
- Otherwise, TensorFlow and PyTorch: reverse mode, one gradient per output
  element of each prefix (one in all for a scalar output), which gives that
  prefix's derivatives along every feature at once: a Laplacian in `d`
  features costs `1 + d` backward passes, as hand-written nested tapes do.
- Otherwise, JAX: forward mode, nested `jax.jvp` along each needed
  direction, and, for the pure derivatives of order ≥ 3 along one feature,
  Taylor mode by `jax.experimental.jet`, which traces any function.
"""

import contextlib
import math

import keras

from fdlayers import taylor
from fdlayers.dispatch import static_python

# Pure derivatives along one feature from this order on go through Taylor
# mode on JAX. Measured on a 5 x 50 tanh MLP, 10 000 points: eagerly, jet
# took 1/5 of nested jvp's time at order 6 and 4/5 at order 4; under
# jax.jit the two were within 15 % (XLA removes nested jvp's repeated
# work), and at order 2 nested jvp was as fast.
_JET_MIN_ORDER = 3
# Pure derivatives of chains of dense layers from this order on go through
# fdlayers.taylor. Measured on the MLP above (benchmarks/derivatives.py,
# section 12 of benchmarks/README.md): for ∂⁴u/∂x⁴ it took 1/4.6, 1/5.2
# and 1/3.6 of nested autodiff's time on TensorFlow, JAX and PyTorch. From
# order 1 on, u_t − u_xx with weight gradients took 28 against 20 ms on
# TensorFlow and 75 against 58 ms on PyTorch (reverse mode reuses one
# backward pass for both), but 31 against 46 ms on JAX (nested jvp).
_TAYLOR_MIN_ORDER = {"tensorflow": 3, "jax": 1, "torch": 3}
# Where the rest are pure derivatives of orders 1 and 2, at least one of
# them a second, a chain of dense layers takes them from one forward pass
# shared by every feature (`taylor.first_and_second`) on these backends.
# Measured on PyTorch, on the MLP above (section 12 of
# benchmarks/README.md): the pure second derivatives along 2 features (a
# Laplacian's terms) took 27 against 36 ms for reverse mode, u_t − u_xx
# with weight gradients 60 against 61 ms. On TensorFlow, in a
# tf.function, 7.7 against 8.6 ms and 21.6 against 20.4 ms: not worth a
# second path there.
_SECOND_ORDER = {"torch"}
# A linear combination of first and second derivatives of such a chain (a
# Laplacian, a residual such as u_t − u_xx) is one pass that carries the
# combination (`taylor.operator`) on these backends. Measured on the MLP
# above (section 12 of benchmarks/README.md), u_t − u_xx with weight
# gradients: 60 against 72-74 ms for its terms by `input_partials` on
# PyTorch, 30 against 36 ms in a tf.function on TensorFlow, 34-35 against
# 48-49 ms under jax.jit; a Laplacian 6.6-6.8 against 8.3 ms under jax.jit.
_OPERATOR = {"torch", "tensorflow", "jax"}


@static_python
def prefixes(indices):
    """`{prefix: sorted features}`: each proper prefix of a multi-index in
    `indices` (the empty one included) and the features it is
    differentiated along."""
    children = {}
    for index in indices:
        for k in range(len(index)):
            children.setdefault(index[:k], set()).add(index[k])
    return {node: sorted(features) for node, features in children.items()}


def partials(call, x, indices, backend, model=None):
    """`{multi-index: tensor shaped like call(x)}` on `backend`; `model`, where
    given, is what `call` calls, for Taylor mode to look into."""
    features = math.prod(x.shape[1:])
    indices = list(indices)
    values = {}
    if model is not None:
        values = _taylor(model, x, indices, _TAYLOR_MIN_ORDER[backend],
                         backend in _SECOND_ORDER)
        indices = [index for index in indices if index not in values]
        if not indices:
            return values
    values.update({"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}[
        backend](call, x, indices, features))
    return values


def operator(call, x, terms, backend, model=None):
    """`Σ c_α ∂^α y` over `terms`, `{multi-index: coefficient}` (the empty
    multi-index for `y` itself), shaped like `y = call(x)`: on the backends
    of `_OPERATOR`, where every term is of order ≤ 2, for a chain of dense
    layers, from one pass that carries the sum (`taylor.operator`);
    otherwise the sum of `partials`' terms, each times its coefficient (a
    coefficient of 1 leaves its term as it is)."""
    found = None
    if (model is not None and backend in _OPERATOR
            and max(len(index) for index in terms) <= 2):
        found = taylor.chain(model, x)
    if found is not None:
        value, total = taylor.operator(
            *found, x,
            {index[0]: c for index, c in terms.items() if len(index) == 1},
            {index: c for index, c in terms.items() if len(index) == 2})
        if () in terms:
            total = _plus(total, value, terms[()])
        return keras.ops.zeros_like(value) if total is None else total
    indices = [index for index in terms if index]
    values = partials(call, x, indices, backend, model) if indices else {}
    total = None
    for index, c in terms.items():
        total = _plus(total, values[index] if index else call(x), c)
    return total


def _plus(total, term, c):
    """`total + c·term`, `total` None for 0; a coefficient of 1 leaves the
    term as it is."""
    if not isinstance(c, float):
        term = term * like(c, term)
    elif c != 1.0:
        term = term * c
    return term if total is None else total + term


@static_python
def _pure_orders(indices, min_order):
    """`{feature: highest order}` of the pure multi-indices of order ≥
    `min_order` in `indices`."""
    pure = {}
    for index in indices:
        if len(index) >= min_order and len(set(index)) == 1:
            pure[index[0]] = max(pure.get(index[0], 0), len(index))
    return pure


@static_python
def _taylor(model, x, indices, min_order, second_order=False):
    """The pure derivatives of `indices` of order ≥ `min_order` that Taylor
    mode gives (every order of their feature up to the highest asked for),
    or `{}` where the model is not a chain of dense layers. With
    `second_order`, where every other index is pure and of order 1 or 2,
    and one is of order 2, those too, from one shared pass."""
    pure = _pure_orders(indices, min_order)
    rest = [index for index in indices
            if index[0] not in pure or len(index) > pure[index[0]]
            or len(set(index)) > 1]
    shared = _pure_orders(rest, 1) if second_order else {}
    if (any(len(set(index)) > 1 for index in rest)
            or max(shared.values(), default=0) != 2):
        shared = {}
    found = taylor.chain(model, x) if pure or shared else None
    if found is None:
        return {}
    values = {}
    for feature, order in pure.items():
        terms = taylor.series(*found, x, feature, order)
        for k, term in enumerate(terms, start=1):
            values[(feature,) * k] = term
    if shared:
        values.update(taylor.first_and_second(*found, x, shared))
    return values


def _tensorflow(call, x, indices, features):
    order = max(len(index) for index in indices)
    children = prefixes(indices)
    with nested_tapes(order, x) as leaving:
        values = {(): call(x)}
        for level, tape in enumerate(leaving()):
            for node in [n for n in children if len(n) == level]:
                grads = _tape_gradients(tape, values[node], x, features)
                for feature in children[node]:
                    values[node + (feature,)] = grads(feature)
    return values


@contextlib.contextmanager
def nested_tapes(order, x):
    """`order` persistent TensorFlow tapes watching `x`, nested; yields
    `leaving`, whose iteration leaves them innermost first and gives each
    tape just after leaving it.

    Tape k records everything from which the derivatives of order k + 1 are
    taken; the innermost records the model itself. Leaving tape k before
    taking its gradients keeps them out of its own record, while the outer
    tapes (and any tape of the caller's, over the weights) record them for
    the next order. Whatever happens, every tape is left on exit.
    """
    import tensorflow as tf

    tapes = [tf.GradientTape(persistent=True) for _ in range(order)]
    entered = []

    def leaving():
        for tape in tapes:
            entered.remove(tape)
            tape.__exit__(None, None, None)
            yield tape

    try:
        for tape in reversed(tapes):
            tape.__enter__()
            entered.append(tape)
            tape.watch(x)
        yield leaving
    finally:
        for tape in reversed(entered):
            tape.__exit__(None, None, None)


@static_python
def _tape_gradients(tape, y, x, features):
    """`feature -> ∂y/∂x[:, feature]`, shaped like `y`, from one gradient
    per output element of `y` (recorded by `tape`)."""
    import tensorflow as tf

    outputs = math.prod(y.shape[1:])
    zero = tf.UnconnectedGradients.ZERO
    if outputs == 1:
        flat = tf.reshape(like(tape.gradient(
            y, x, unconnected_gradients=zero), y), [-1, features])
        return lambda feature: tf.reshape(flat[:, feature], tf.shape(y))
    rows = []
    for element in range(outputs):
        # The gradient of Σᵢ y[i, element]. One-hot output gradients avoid
        # slicing y outside the tape that recorded it.
        pick = tf.reshape(tf.one_hot(element, outputs, dtype=y.dtype),
                          [1] + list(y.shape[1:]))
        grad = tape.gradient(y, x, output_gradients=tf.broadcast_to(
            pick, tf.shape(y)), unconnected_gradients=zero)
        rows.append(tf.reshape(like(grad, y), [-1, features]))
    return lambda feature: tf.reshape(
        tf.stack([row[:, feature] for row in rows], axis=1), tf.shape(y))


def like(value, y):
    """`value` in `y`'s dtype. Reverse mode (TensorFlow, PyTorch) gives a
    derivative of `y` with respect to `x` in `x`'s dtype, and an operator's
    coefficients are in `x`'s too; under a mixed precision policy a model
    returns another (float16, bfloat16), which the results are documented
    in, and which JAX's forward mode gives."""
    if value.dtype == y.dtype:
        return value
    if keras.backend.backend() == "torch":
        return value.to(y.dtype)
    return keras.ops.cast(value, y.dtype)


def _torch(call, x, indices, features):
    import torch

    # Weight gradients of the results are wanted whenever autograd is on; the
    # derivatives themselves need it on even where the caller turned it off
    # (Keras' predict and evaluate run under torch.no_grad).
    keep_graph = torch.is_grad_enabled()
    order = max(len(index) for index in indices)
    children = prefixes(indices)
    with torch.enable_grad():
        # Differentiate with respect to x itself where it already carries a
        # graph, so that nothing upstream of it is cut either.
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        values = {(): call(x)}
        for level in range(order):
            create_graph = keep_graph or level + 1 < order
            for node in [n for n in children if len(n) == level]:
                grads = _autograd_gradients(values[node], x, features,
                                            create_graph)
                for feature in children[node]:
                    values[node + (feature,)] = grads(feature)
    return values


def _autograd_gradients(y, x, features, create_graph):
    """`feature -> ∂y/∂x[:, feature]`, shaped like `y`, by one
    `torch.autograd.grad` per output element of `y`."""
    import torch

    outputs = math.prod(y.shape[1:])
    if not y.requires_grad:  # y does not depend on x: its derivatives are 0
        return lambda feature: torch.zeros_like(y)
    if outputs == 1:  # the sum's gradient: measured 1.25x faster than with
        # grad_outputs, which autograd carries as a broadcast tensor.
        grad, = torch.autograd.grad(y.sum(), x, create_graph=create_graph,
                                    allow_unused=True)
        if grad is None:
            return lambda feature: torch.zeros_like(y)
        flat = like(grad, y).reshape(x.shape[0], features)
        return lambda feature: flat[:, feature].reshape(y.shape)
    rows = []
    for element in range(outputs):
        pick = torch.zeros(outputs, dtype=y.dtype, device=y.device)
        pick[element] = 1
        grad, = torch.autograd.grad(
            y, x, grad_outputs=pick.reshape((1,) + tuple(y.shape[1:])).expand(
                y.shape), create_graph=create_graph, allow_unused=True)
        if grad is None:  # unconnected: the derivative is zero
            grad = torch.zeros_like(x)
        rows.append(like(grad, y).reshape(x.shape[0], features))
    return lambda feature: torch.stack(
        [row[:, feature] for row in rows], dim=1).reshape(y.shape)


def _jax(call, x, indices, features):
    import jax
    import jax.numpy as jnp

    def direction(feature):
        unit = jnp.zeros(features, x.dtype).at[feature].set(1)
        return jnp.broadcast_to(unit.reshape(x.shape[1:]), x.shape)

    values = {}
    for feature, order in _pure_orders(indices, _JET_MIN_ORDER).items():
        series = _jet_series(call, x, direction(feature), order)
        if series is not None:
            for k, term in enumerate(series, start=1):
                values[(feature,) * k] = term

    functions = {(): call}

    def function(node):
        # ∂/∂x_j of the function for the prefix: a jvp along direction j.
        if node not in functions:
            parent, tangent = function(node[:-1]), direction(node[-1])
            functions[node] = \
                lambda v: jax.jvp(parent, (v,), (tangent,))[1]
        return functions[node]

    for index in indices:
        if index not in values:
            values[index] = function(index)(x)
    return values


def _jet_series(call, x, tangent, order):
    """`[∂y/∂t, ..., ∂ᵒʳᵈᵉʳy/∂tᵒʳᵈᵉʳ]` of `y = call(x + t·tangent)` at
    t = 0 by Taylor mode, or None where the function uses an operation that
    `jax.experimental.jet` has no rule for (nested jvp then does it)."""
    try:
        from jax.experimental import jet
    except ImportError:  # pragma: no cover - jet ships with jax
        return None
    import jax.numpy as jnp

    # jet's input series is in the derivative convention: x(t) = x + t·tangent
    # has derivatives (tangent, 0, 0, ...), and the output series holds
    # the derivatives of y(x(t)) themselves.
    zero = jnp.zeros_like(tangent)
    try:
        _, series = jet.jet(call, (x,), ((tangent,) + (zero,) * (order - 1),))
    except (NotImplementedError, KeyError, TypeError):
        return None
    return [jnp.asarray(term) for term in series]
