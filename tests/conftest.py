"""Test configuration: quiet TensorFlow, float64 references, fixed seeds.

The backend is TensorFlow unless `KERAS_BACKEND` says otherwise; on another
backend the tests marked `tensorflow_only` are deselected (and counted as
such in pytest's summary).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# The references are float64, and JAX computes in float32 unless 64-bit
# types are enabled before it is imported.
if os.environ["KERAS_BACKEND"] == "jax":
    os.environ.setdefault("JAX_ENABLE_X64", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(20261127)


def pytest_collection_modifyitems(config, items):
    if os.environ["KERAS_BACKEND"] == "tensorflow":
        return
    deselected = [item for item in items
                  if item.get_closest_marker("tensorflow_only")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items
                    if not item.get_closest_marker("tensorflow_only")]
