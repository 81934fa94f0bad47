"""Why TensorFlow says the second derivative is None, and the answer.

A network y = f(x) from R to R, three hidden Dense layers. With linear
activations, f is affine: dy/dx is a constant that nested GradientTapes
compute from the weights alone, so the outer tape finds no path from x to it
and returns None for d²y/dx². The truth is 0. With tanh, both derivatives
exist and are not zero.

`fdlayers.input_derivatives` returns zeros where the truth is zero, and the
two derivatives of the tanh network are cross-checked here against
FiniteDifference1D applied to the network's outputs on a fine tf.range grid.

    python examples/second_derivative_none.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fdlayers  # noqa: E402


def network(activation):
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [keras.Input((1,), dtype="float64")]
        + [keras.layers.Dense(16, activation=activation, dtype="float64")
           for _ in range(3)]
        + [keras.layers.Dense(1, dtype="float64")])


h = 1 / 256
x = tf.reshape(tf.cast(tf.range(-512, 513), tf.float64) * h, (-1, 1))  # [-2, 2]

for activation in (None, "tanh"):
    model = network(activation)
    name = activation or "linear"

    # What users write, and what TensorFlow answers.
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = model(x)
        first = inner.gradient(y, x)
    second = outer.gradient(first, x)
    print(f"{name} network, nested GradientTapes: dy/dx has shape "
          f"{tuple(first.shape)}, d2y/dx2 is "
          f"{None if second is None else tuple(second.shape)}")

    # fdlayers: every order is a tensor shaped like the output.
    d1, d2 = fdlayers.input_derivatives(model, x, order=2)
    print(f"{name} network, input_derivatives: dy/dx in "
          f"[{d1.numpy().min():.4f}, {d1.numpy().max():.4f}], d2y/dx2 in "
          f"[{d2.numpy().min():.4f}, {d2.numpy().max():.4f}], shapes "
          f"{tuple(d1.shape)}, {tuple(d2.shape)}")

    # Finite differences along the grid, from the outputs alone.
    samples = tf.reshape(model(x), (1, -1, 1))
    for order, exact in ((1, d1), (2, d2)):
        numeric = fdlayers.FiniteDifference1D(order, spacing=h, accuracy=4,
                                              dtype="float64")(samples)
        error = np.abs(numeric.numpy()[0] - exact.numpy()).max()
        print(f"    order {order}: max |FiniteDifference1D - autodiff| = "
              f"{error:.1e}")
    print()
