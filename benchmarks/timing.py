"""What the benchmark sections share for timing TensorFlow results."""

import tensorflow as tf


def finish(y):
    """Wait for a result by reading one element of it.

    Not `.numpy()` on the whole tensor: that copies it, which would add a
    full pass to every TensorFlow timing and flatter the ratios.
    """
    if isinstance(y, (tuple, list)):
        return [finish(v) for v in y]
    if isinstance(y, tf.Tensor):
        return y[(0,) * len(y.shape)].numpy()
    return y
