"""Differentiate a sampled series with a Keras layer.

The series 3, 6, 9, ..., 3072 (`tf.range(3, 3075, 3)`, 1024 samples) goes in as
one batch of shape `(1, 1024, 1)`: (batch, steps, channels). Its derivative
with respect to the step index is 3 everywhere, and
`fdlayers.FiniteDifference1D(order=1)` returns exactly that: 1024 values of
3.0, edges included (second-order one-sided differences there, like
`numpy.gradient`).

This replaces a hand-made layer built from `ZeroPadding1D`, `subtract` and
`divide`, which no longer runs on Keras 3 and was wrong where it ran: its
output had 1025 steps instead of 1024, read -1.5 instead of +3.0, and ended
in a spike of 1536 where the zero padding met the last sample.

Run it with `python examples/series_derivative.py` from any directory.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fdlayers  # noqa: E402


def main():
    series = tf.reshape(tf.range(3, 3075, 3), (1, 1024, 1))

    # No keras.Input needed: the model is built on the first call, and the
    # integer series is cast to float32 by the layer.
    model = keras.Sequential([fdlayers.FiniteDifference1D(order=1)])
    derivative = keras.ops.convert_to_numpy(model(series))

    print("input shape: ", tuple(series.shape))
    print("output shape:", derivative.shape)
    print("first values:", derivative[0, :4, 0])
    print("last values: ", derivative[0, -4:, 0])
    exact = np.count_nonzero(derivative == 3.0)
    print(f"exactly 3.0 at {exact} of {derivative.shape[1]} points")


if __name__ == "__main__":
    main()
