"""What the benchmark sections share for timing TensorFlow results."""

import statistics
import time

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


def interleaved(candidates, rounds, wait=finish):
    """Median seconds of each candidate, called in turn `rounds` times
    after a warm-up call each (trace, compile, allocate); `wait(result)`
    after each call, inside its time (`lambda y: y` for eager calls, which
    return when their result is ready)."""
    for fn in candidates.values():
        wait(fn())
    times = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            wait(fn())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
