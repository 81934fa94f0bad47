"""`model.export` (a TensorFlow SavedModel, Keras' default format) on every
backend, for models holding the layers, with sequences of any length.

Keras traces the model once for a length known only at run time: on
TensorFlow as `None`, on JAX (through jax2tf) as a symbolic dimension of
JAX's shape polymorphism. The SavedModel's `serve` is then called at other
lengths and must equal `model.predict` to float32 rounding. A sequence too
short for the stencil, time stamps of another length than the series, or,
with static coordinates, a length other than theirs, is an
`InvalidArgumentError` on TensorFlow and NaN of the documented shape on
JAX, whose exported program has no run-time checks.

On PyTorch, Keras 3.15 cannot export this format even for a model without
fdlayers (its `torch.export` call fails on the structure of the
`dynamic_shapes` it builds, and the conversion after it needs torch-xla):
a model holding the layers must fail as a plain model of the same inputs
does, with the same exception raised before any fdlayers code runs, and
must work wherever that one works.
"""

import os
import traceback

import keras
import numpy as np
import pytest

import fdlayers
from per_backend import BACKEND

# Keras' own call of jax2tf, on JAX.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The `native_serialization` parameter is deprecated"
    ":DeprecationWarning")

FD = fdlayers.FiniteDifference1D
SG = fdlayers.SavitzkyGolay1D
COORDINATES = np.cumsum(np.random.default_rng(3).uniform(0.5, 1.5, size=16))


def _series(batch, steps, seed=0):
    return np.random.default_rng(seed).normal(
        size=(batch, steps, 2)).astype("float32")


def _stamps(batch, steps, seed=0):
    """Per-sample time stamps, strictly increasing, from near 0."""
    rng = np.random.default_rng(seed + 1)
    return np.cumsum(rng.uniform(0.5, 1.5, size=(batch, steps)),
                     axis=1).astype("float32")


def _padded(batch, steps, seed=0):
    """Series post-padded with zeros (masked by `Masking`): the second
    holds two steps fewer."""
    x = _series(batch, steps, seed=seed)
    x[1:, steps - 2:] = 0.0
    return x


def _sequence(*layers):
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((None, 2)), *layers])


def _uniform():
    return _sequence(keras.layers.Dense(3), FD(order=2, spacing=0.5))


def _static():
    return _sequence(keras.layers.Dense(1), FD(order=1, spacing=COORDINATES))


def _savgol():
    return _sequence(keras.layers.Dense(3), SG(order=1, window=11, polyorder=3,
                                              spacing=0.1))


def _stamped():
    keras.utils.set_random_seed(1)
    x_in, t_in = keras.Input((None, 2)), keras.Input((None,))
    hidden = keras.layers.Dense(3)(x_in)
    return keras.Model([x_in, t_in], FD(order=2)([hidden, t_in]))


def _masked():
    return _sequence(keras.layers.Masking(0.0), FD(order=1, padding="valid"))


def _masked_stamped():
    keras.utils.set_random_seed(1)
    x_in, t_in = keras.Input((None, 2)), keras.Input((None,))
    masked = keras.layers.Masking(0.0)(x_in)
    return keras.Model([x_in, t_in], FD(order=1)([masked, t_in]))


def _plain_single():
    """The plain model a single-input kind is compared with on PyTorch."""
    return _sequence(keras.layers.Conv1D(3, 3, padding="same"),
                     keras.layers.Dense(1))


def _plain_stamped():
    """Two inputs shaped as `[x, t]`, without fdlayers."""
    keras.utils.set_random_seed(1)
    x_in, t_in = keras.Input((None, 2)), keras.Input((None,))
    t = keras.layers.Reshape((-1, 1))(t_in)
    both = keras.layers.Concatenate()([x_in, t])
    return keras.Model([x_in, t_in], keras.layers.Dense(1)(both))


# kind: (model, inputs(batch, steps), lengths served, a length too short
# (or, with coordinates, not theirs) and its output's length, plain model)
KINDS = {
    "uniform": (_uniform, _series, (4, 9, 37), (3, 3), _plain_single),
    # One step per coordinate: one length, other batches.
    "static coordinates": (_static, _series, (16,), (15, 15),
                           _plain_single),
    "per-sample time stamps": (_stamped,
                               lambda b, n: [_series(b, n), _stamps(b, n)],
                               (4, 9, 30), (3, 3), _plain_stamped),
    "savitzky-golay": (_savgol, _series, (11, 23, 50), (10, 10),
                       _plain_single),
    "masked, valid": (_masked, _padded, (5, 21), (2, 0), _plain_single),
    "masked time stamps": (_masked_stamped,
                           lambda b, n: [_padded(b, n), _stamps(b, n)],
                           (6, 21), (2, 2), _plain_stamped),
}


def _export(model, path):
    """`model.export(path)`, and the exception it raised, if any."""
    try:
        model.export(str(path), verbose=False)
    except Exception as error:  # noqa: BLE001 - compared below
        return error
    return None


def _in_fdlayers(error):
    package = os.path.dirname(os.path.abspath(fdlayers.__file__)) + os.sep
    return [frame for frame in traceback.extract_tb(error.__traceback__)
            if os.path.abspath(frame.filename).startswith(package)]


def _serve(served, inputs):
    import tensorflow as tf

    if isinstance(inputs, list):
        return served.serve([tf.constant(v) for v in inputs]).numpy()
    return served.serve(tf.constant(inputs)).numpy()


@pytest.mark.parametrize("kind", list(KINDS))
def test_exported_model_serves_other_lengths(kind, tmp_path):
    # Serving needs TensorFlow only; imported here, not when the other
    # backends' runs collect this module with the rest.
    tf = pytest.importorskip("tensorflow")
    build, inputs, lengths, (bad, bad_output), plain = KINDS[kind]
    model = build()
    if BACKEND == "torch":
        plain_error = _export(plain(), tmp_path / "plain")
        if plain_error is not None:
            # Keras itself cannot export this: fdlayers fails the same way,
            # before any of its code runs.
            error = _export(model, tmp_path / "served")
            assert type(error) is type(plain_error), (error, plain_error)
            assert not _in_fdlayers(error), traceback.format_exception(error)
            return
    error = _export(model, tmp_path / "served")
    assert error is None, traceback.format_exception(error)
    served = tf.saved_model.load(str(tmp_path / "served"))

    for steps in lengths:
        for batch in (2, 5) if len(lengths) == 1 else (3,):
            x = inputs(batch, steps)
            predicted = model.predict(x, batch_size=batch, verbose=0)
            result = _serve(served, x)
            assert result.shape == predicted.shape
            np.testing.assert_allclose(
                result, predicted, rtol=1e-5,
                atol=1e-5 * float(np.abs(predicted).max()))

    bad_inputs = [inputs(2, bad)]
    if isinstance(bad_inputs[0], list):  # time stamps one step too many
        steps = lengths[0]
        bad_inputs.append([inputs(2, steps)[0], _stamps(2, steps + 1)])
    for x in bad_inputs:
        if BACKEND == "tensorflow":
            with pytest.raises(tf.errors.InvalidArgumentError):
                _serve(served, x)
        else:  # no run-time checks in the exported program
            result = _serve(served, x)
            steps = bad_output if x is bad_inputs[0] else lengths[0]
            assert result.shape[:2] == (2, steps)
            assert np.isnan(result).all()

