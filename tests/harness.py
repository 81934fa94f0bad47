"""A small layer test harness, in the spirit of keras-hub's `TestCase`.

It uses the public Keras API only (no `keras.src`), so it keeps working across
Keras releases and can be reused by every fdlayers layer:

    from harness import run_layer_test

    run_layer_test(fdlayers.FiniteDifference1D, {"order": 2}, x,
                   expected_output=reference, tmp_path=tmp_path)
"""

import os
import tempfile

import keras
import numpy as np


def input_gradient(fn, x):
    """d Σ fn(x) / dx for a NumPy `x`, on the current backend, as NumPy."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(fn(x))
        return tape.gradient(total, x).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: fn(v).sum())(x))
    import torch

    x = torch.tensor(x, requires_grad=True)
    fn(x).sum().backward()
    return x.grad.numpy()


def _shape(shape):
    return tuple(None if d is None else int(d) for d in shape)


def _assert_shape_matches(actual, computed, what):
    """`actual` (a real or traced shape) agrees with `compute_output_shape`.

    Where the traced shape knows a dimension, `compute_output_shape` must give
    the same value; where `compute_output_shape` knows it, so must the
    traced shape (or the real output, always fully known).
    """
    actual, computed = _shape(actual), _shape(computed)
    assert len(actual) == len(computed), (
        f"{what}: rank {len(actual)} != compute_output_shape's rank "
        f"{len(computed)} ({actual} vs {computed})"
    )
    for a, c in zip(actual, computed):
        assert a is None or c is None or a == c, (
            f"{what}: output shape {actual} != compute_output_shape {computed}"
        )
        assert c is None or a is not None, (
            f"{what}: compute_output_shape {computed} knows a dimension the "
            f"real output {actual} does not"
        )


def _assert_no_weights(layer):
    assert layer.weights == [], f"{layer.name} has weights: {layer.weights}"
    assert layer.trainable_weights == [], layer.trainable_weights
    assert layer.non_trainable_weights == [], layer.non_trainable_weights


def _functional_model(layer, input_shape):
    """A functional model `Input(input_shape[1:]) -> layer`."""
    inputs = keras.Input(shape=input_shape[1:])
    return keras.Model(inputs, layer(inputs))


def _check_static_and_dynamic_shapes(layer_cls, init_kwargs, x, output,
                                     dynamic_axes):
    static_shape = _shape(x.shape)
    rank = len(static_shape)

    # Static shapes, through a functional model.
    model = _functional_model(layer_cls(**init_kwargs), static_shape)
    layer = model.layers[-1]
    _assert_shape_matches(model.outputs[0].shape,
                          layer.compute_output_shape((None,) + static_shape[1:]),
                          "symbolic static output")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), output)

    # Dynamic lengths: None along `dynamic_axes` (default: every non-batch axis).
    if dynamic_axes is None:
        dynamic_axes = range(1, rank)
    dynamic_shape = list(static_shape)
    dynamic_shape[0] = None
    for axis in dynamic_axes:
        dynamic_shape[axis % rank] = None
    dynamic_shape = tuple(dynamic_shape)

    model = _functional_model(layer_cls(**init_kwargs), dynamic_shape)
    layer = model.layers[-1]
    _assert_shape_matches(model.outputs[0].shape,
                          layer.compute_output_shape(dynamic_shape),
                          "symbolic dynamic output")
    y = keras.ops.convert_to_numpy(model(x))
    _assert_shape_matches(y.shape, layer.compute_output_shape(static_shape),
                          "dynamic model on concrete data")
    np.testing.assert_array_equal(y, output)

    # The graph really built for unknown lengths, not only the symbolic
    # shape inference of the functional API (which trusts
    # compute_output_shape).
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        traced_layer = layer_cls(**init_kwargs)
        fn = tf.function(
            traced_layer,
            input_signature=[tf.TensorSpec(dynamic_shape, x.dtype)],
        )
        traced = fn.get_concrete_function().structured_outputs
        _assert_shape_matches(traced.shape,
                              traced_layer.compute_output_shape(dynamic_shape),
                              "tf.function traced with None lengths")
        np.testing.assert_allclose(fn(x).numpy(), output, rtol=1e-6,
                                   atol=1e-6 * max(1.0, np.abs(output).max()))
    elif keras.backend.backend() == "jax":
        # Traced with abstract values: no concrete data may be needed.
        import jax

        traced_layer = layer_cls(**init_kwargs)
        y = np.asarray(jax.jit(traced_layer)(x))
        _assert_shape_matches(y.shape, traced_layer.compute_output_shape(x.shape),
                              "jax.jit")
        np.testing.assert_allclose(y, output, rtol=1e-6,
                                   atol=1e-6 * max(1.0, np.abs(output).max()))
    return model


def _check_config_round_trips(layer_cls, layer, x, output):
    config = layer.get_config()
    for key, value in config.items():
        assert not isinstance(value, np.generic), (
            f"get_config()[{key!r}] is a NumPy scalar ({value!r}); "
            "configs hold plain Python values"
        )

    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x)), output)

    serialized = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is layer_cls
    assert clone.get_config() == config
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x)), output)


def _check_saving(layer_cls, model, x, output, directory):
    path = os.path.join(directory, "layer_test_model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    original_layer, loaded_layer = model.layers[-1], loaded.layers[-1]
    assert type(loaded_layer) is layer_cls
    assert loaded_layer.get_config() == original_layer.get_config()
    _assert_no_weights(loaded_layer)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), output)


def _check_mixed_precision(layer_cls, init_kwargs, x, output, directory):
    """Under mixed policies an fdlayers layer reads and returns float32.

    A derivative of half-precision-rounded samples is noise (see
    `FiniteDifference1D.input_dtype`), so the result must be the float32
    layer's, bit for bit, with a symbolic output dtype that says so, and the
    policy must survive a `.keras` save/load.
    """
    for policy in ("mixed_float16", "mixed_bfloat16"):
        layer = layer_cls(**init_kwargs, dtype=policy)
        y = layer(x)
        _assert_no_weights(layer)
        dtype = keras.backend.standardize_dtype(y.dtype)
        if x.dtype == np.float32:
            assert dtype == "float32", (policy, dtype)
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(y), output)

        model = _functional_model(layer_cls(**init_kwargs, dtype=policy),
                                  _shape(x.shape))
        symbolic = keras.backend.standardize_dtype(model.outputs[0].dtype)
        assert symbolic == dtype, (
            f"{policy}: symbolic output dtype {symbolic}, call returns {dtype}")
        path = os.path.join(directory, "mixed_precision.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert loaded.layers[-1].dtype_policy.name == policy
        y = loaded(x)
        assert keras.backend.standardize_dtype(y.dtype) == dtype, (policy, y.dtype)
        if x.dtype == np.float32:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(y), output)


def run_layer_test(layer_cls, init_kwargs, input_data, expected_output=None,
                   expected_output_shape=None, expected_output_dtype=None,
                   dynamic_axes=None, rtol=1e-6, atol=1e-6, tmp_path=None,
                   run_mixed_precision_check=True):
    """Check the contract every fdlayers layer must keep; return its output.

    Checks that `layer_cls(**init_kwargs)`

    - builds on `input_data` and has no weights, trainable or not;
    - returns `expected_output` (to `rtol`/`atol`), `expected_output_shape`
      and `expected_output_dtype` (default: the layer's compute dtype);
    - agrees with `compute_output_shape` on the static shape and with
      `None` along `dynamic_axes` (default: every non-batch axis), in a
      functional model and in a `tf.function` traced with those `None`s
      (on TensorFlow; under `jax.jit` on JAX);
    - survives `get_config`/`from_config`,
      `keras.saving.serialize_keras_object`/`deserialize_keras_object` and a
      `.keras` save/load of a model holding it (written under `tmp_path`, or a
      temporary directory), with the same config and bitwise-identical
      outputs;
    - reads and returns float32 under the "mixed_float16" and
      "mixed_bfloat16" policies, equal to the float32 result, symbolically
      and after a save/load (`run_mixed_precision_check`).

    Args:
        layer_cls: the layer class.
        init_kwargs: dict of constructor arguments.
        input_data: a NumPy array or tensor with a batch axis first.

    Returns:
        The layer's output on `input_data`, as a NumPy array.
    """
    x = keras.ops.convert_to_numpy(input_data)
    layer = layer_cls(**init_kwargs)
    _assert_no_weights(layer)
    y = layer(x)
    assert layer.built
    _assert_no_weights(layer)

    dtype = expected_output_dtype or layer.compute_dtype
    assert keras.backend.standardize_dtype(y.dtype) == dtype, (
        f"output dtype {y.dtype}, expected {dtype}"
    )
    output = keras.ops.convert_to_numpy(y)
    _assert_shape_matches(output.shape, layer.compute_output_shape(x.shape),
                          "eager output")
    if expected_output_shape is not None:
        assert output.shape == tuple(expected_output_shape), (
            f"output shape {output.shape}, expected {tuple(expected_output_shape)}"
        )
    if expected_output is not None:
        np.testing.assert_allclose(output, expected_output, rtol=rtol, atol=atol)

    model = _check_static_and_dynamic_shapes(layer_cls, init_kwargs, x, output,
                                             dynamic_axes)
    _check_config_round_trips(layer_cls, layer, x, output)
    with tempfile.TemporaryDirectory() as directory:
        directory = directory if tmp_path is None else str(tmp_path)
        _check_saving(layer_cls, model, x, output, directory)
        if run_mixed_precision_check and "dtype" not in init_kwargs:
            _check_mixed_precision(layer_cls, init_kwargs, x, output, directory)
    return output
