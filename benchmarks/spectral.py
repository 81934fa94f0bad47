"""Section 14 of bench.py: SpectralDerivative1D against FFT differentiation
in NumPy (and SciPy) on the same data.

The peer is what one writes in NumPy: `numpy.fft.rfft` along the steps
axis, a multiplication by `(i·k)**order` (the Nyquist mode of an even
length zeroed for odd orders, as fdlayers does), `numpy.fft.irfft`; the
same with `scipy.fft` on every core (`workers=-1`). The layer runs eagerly,
in a `tf.function` and in one compiled with XLA. Every candidate is timed
in interleaved rounds of one run (medians), on float32 inputs
`(64, 65536, 4)` and `(1, 2**22, 1)`; "first ms" is its first call, with
tracing and compiling, and the conversion of its result to NumPy.

    python benchmarks/bench.py --only 14
    python benchmarks/spectral.py [--quick]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fdlayers  # noqa: E402

SPACING = 0.01


def _multiplier(n, order, spacing, dtype):
    k = 2 * np.pi * np.fft.rfftfreq(n, spacing)
    multiplier = (1j * k) ** order
    if order % 2 and n % 2 == 0:
        multiplier[-1] = 0
    return multiplier.astype(np.result_type(dtype, np.complex64))


def numpy_derivative(x, order, spacing, multiplier=None, fft=np.fft,
                     **options):
    """FFT differentiation along axis 1 of a NumPy array, as in NumPy
    (`fft=scipy.fft` for SciPy's)."""
    n = x.shape[1]
    if multiplier is None:
        multiplier = _multiplier(n, order, spacing, x.dtype)
    spectrum = fft.rfft(x, axis=1, **options)
    spectrum *= multiplier.reshape((1, -1) + (1,) * (x.ndim - 2))
    return fft.irfft(spectrum, n, axis=1, **options)


def _table(x, rounds, interleaved):
    import scipy.fft

    data = x.numpy()
    print(f"{'order':>5} {'candidate':<12} {'ms':>8} {'numpy / it':>11} "
          f"{'first ms':>10}")
    results = {}
    for order in (1, 2):
        layer = fdlayers.SpectralDerivative1D(order, SPACING)
        multiplier = _multiplier(data.shape[1], order, SPACING, data.dtype)
        want = numpy_derivative(data.astype(np.float64), order, SPACING)
        candidates = {
            "numpy": lambda: numpy_derivative(data, order, SPACING,
                                              multiplier),
            "scipy.fft": lambda: numpy_derivative(
                data, order, SPACING, multiplier, scipy.fft, workers=-1),
            "eager": lambda: layer(x),
            "tf.function": tf.function(lambda: layer(x)),
            "XLA": tf.function(lambda: layer(x), jit_compile=True),
        }
        first = {}
        for name, fn in candidates.items():
            start = time.perf_counter()  # with tracing and compiling
            y = np.asarray(fn())
            first[name] = time.perf_counter() - start
            error = np.abs(y - want).max() / np.abs(want).max()
            assert error < 1e-4, (name, error)
        medians = interleaved(candidates, rounds)
        for name, seconds in medians.items():
            ratio = medians["numpy"] / seconds
            results[(order, name)] = ratio
            print(f"{order:>5} {name:<12} {seconds * 1e3:8.2f} {ratio:11.2f} "
                  f"{first[name] * 1e3:10.0f}")
    return results


def main(quick=False, interleaved=None):
    if interleaved is None:
        from bench import interleaved
    rounds = 3 if quick else 9
    print("\n14. SpectralDerivative1D against FFT differentiation in NumPy "
          "(numpy.fft) and SciPy (scipy.fft, workers=-1), float32, along "
          "axis 1")
    shapes = ([(16, 16384, 4), (1, 2 ** 18, 1)] if quick
              else [(64, 65536, 4), (1, 2 ** 22, 1)])
    results = {}
    for shape in shapes:
        print(f"input {shape}")
        x = tf.random.normal(shape, seed=14)
        results[shape] = _table(x, rounds, interleaved)
    return results


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
