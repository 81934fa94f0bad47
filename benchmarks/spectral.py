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

14b times the formulations a TensorFlow graph could run on a static shape,
side by side: op by op, one XLA program, and the pieces the layer runs
(TensorFlow's FFT ops with XLA before, between and after them), each with
real FFTs or with complex FFTs of half the length (the samples packed in
pairs), forward and with the gradient. 14c times eager calls on one
short series, where the layer's fixed costs show, against NumPy.

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
import timing  # noqa: E402

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


def _packing(packed, fn):
    """`fn` traced (on its first call) with the half-length FFTs of even
    lengths forced on or off."""
    from fdlayers import spectral

    def call():
        saved = spectral._PACKED_MIN_LENGTH
        spectral._PACKED_MIN_LENGTH = 0 if packed else float("inf")
        try:
            return fn()
        finally:
            spectral._PACKED_MIN_LENGTH = saved
    return call


def _formulations(shapes, rounds, interleaved):
    from fdlayers import spectral

    print("\n14b. The formulations of a TensorFlow graph on a static shape, "
          "order 1, float32: ms of the derivative, and of it with its "
          "gradient (tape)")
    names = ["op by op", "XLA, rfft", "XLA, packed", "pieces, rfft",
             "pieces, packed"]
    print(f"{'input':<18} {'numpy':>7} " + " ".join(
        f"{name:>14}" for name in names) + "  (the layer's)")
    for shape in shapes:
        x = tf.random.normal(shape, seed=14)
        data = x.numpy()
        multiplier = _multiplier(shape[1], 1, SPACING, data.dtype)

        def op_by_op(v):
            return spectral._differentiate(v, 1, SPACING, None, 1)

        def whole(v):
            return spectral._differentiate(v, 1, SPACING, None, 1,
                                           packed=True)

        def pieces(v):
            return spectral._in_pieces(v, 1, SPACING, None, 1)

        def with_gradient(fn):
            def run():
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = fn(x)
                return y, tape.gradient(y, x, output_gradients=x)
            return run

        forward = {"numpy": lambda: numpy_derivative(data, 1, SPACING,
                                                     multiplier)}
        backward = {}
        for name, fn, packed, jit in [
                ("op by op", op_by_op, False, False),
                ("XLA, rfft", whole, False, True),
                ("XLA, packed", whole, True, True),
                ("pieces, rfft", pieces, False, False),
                ("pieces, packed", pieces, True, False)]:
            forward[name] = _packing(packed, tf.function(
                lambda fn=fn: fn(x), jit_compile=jit))
            backward[name] = _packing(packed, tf.function(
                with_gradient(fn), jit_compile=jit))
        want = numpy_derivative(data.astype(np.float64), 1, SPACING)
        for name, fn in forward.items():
            error = np.abs(np.asarray(fn()) - want).max() / np.abs(want).max()
            assert error < 1e-4, (name, error)
        ms = {name: t * 1e3 for name, t in
              interleaved({**forward, **{(n, "grad"): f for n, f in
                                         backward.items()}}, rounds).items()}
        layer = ("pieces, packed" if shape[1] % 2 == 0
                 and shape[1] >= spectral._PACKED_MIN_LENGTH
                 else "pieces, rfft")
        print(f"{str(shape):<18} {ms['numpy']:7.1f} " + " ".join(
            f"{ms[name]:6.1f} /{ms[(name, 'grad')]:6.1f}" for name in names)
            + f"  {layer}")


def _single_series(rounds):
    print("\n14c. Eager calls on one series (1, n, 1) float32, order 1, "
          "against FFT differentiation in NumPy (median µs; ratio = "
          "fdlayers / NumPy)")
    print(f"{'n':>6} {'numpy':>8} {'op':>8} {'ratio':>6} {'layer':>8} "
          f"{'ratio':>6}")
    layer = fdlayers.SpectralDerivative1D(1, SPACING)
    for n in (256, 1024, 4096, 16384, 65536):
        data = np.sin(2 * np.pi * np.arange(n) / n).astype("float32")[
            None, :, None]
        x = tf.constant(data)
        multiplier = _multiplier(n, 1, SPACING, data.dtype)
        candidates = {
            "numpy": lambda: numpy_derivative(data, 1, SPACING, multiplier),
            "op": lambda: fdlayers.spectral_derivative(x, 1, SPACING),
            "layer": lambda: layer(x),
        }
        us = {key: seconds * 1e6 for key, seconds in timing.interleaved(
            candidates, rounds, wait=lambda y: y).items()}
        print(f"{n:>6} {us['numpy']:8.1f} {us['op']:8.1f} "
              f"{us['op'] / us['numpy']:6.2f} {us['layer']:8.1f} "
              f"{us['layer'] / us['numpy']:6.2f}")


def main(quick=False, interleaved=None):
    if interleaved is None:
        interleaved = timing.interleaved
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
    _formulations([(4, 8192, 4), (1, 2 ** 16, 1)] if quick else
                  [(64, 65536, 4), (1, 2 ** 22, 1), (16, 2 ** 18, 1),
                   (4, 2 ** 20, 1), (256, 4096, 4)], rounds, interleaved)
    _single_series(200 if quick else 1000)
    return results


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
