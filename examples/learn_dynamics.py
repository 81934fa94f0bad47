"""Recover the law of a damped oscillator from sampled trajectories.

The trajectories obey x'' = -ω² x - 2ζω x' (ω = 2.0, ζ = 0.15), each from
its own initial position and velocity, sampled every h = 0.02 over 10 time
units. Nothing but the samples is given. A Keras model turns each trajectory
into the features x, x' and the target x'' with FiniteDifference1D layers
(accuracy 4, edges included), and one linear unit without bias learns
x'' ≈ a·x + b·x' by minimising the squared residual with `fit`. The learned
(a, b) are the oscillator's coefficients (-ω², -2ζω); they are printed
against the truth, then the same fit on noisy samples shows what noise does
to plain finite differences.

    python examples/learn_dynamics.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import fdlayers  # noqa: E402

FAST = os.environ.get("FDLAYERS_FAST") == "1"
OMEGA, ZETA = 2.0, 0.15
H, STEPS, TRAJECTORIES = 0.02, 501, 32


def trajectories(rng):
    """Exact solutions x(t) of the underdamped oscillator, (batch, steps, 1)."""
    t = np.arange(STEPS) * H
    damped = OMEGA * np.sqrt(1 - ZETA ** 2)
    x0 = rng.uniform(-1, 1, (TRAJECTORIES, 1))
    v0 = rng.uniform(-2, 2, (TRAJECTORIES, 1))
    # x = e^{-ζωt} (A cos ω_d t + B sin ω_d t), with x(0) = x0, x'(0) = v0.
    a, b = x0, (v0 + ZETA * OMEGA * x0) / damped
    x = np.exp(-ZETA * OMEGA * t) * (a * np.cos(damped * t) + b * np.sin(damped * t))
    return x[..., None].astype("float32")


def residual_model():
    """x -> x'' - (a·x + b·x'): zero when (a, b) are the true coefficients."""
    x = keras.Input((None, 1))
    velocity = fdlayers.FiniteDifference1D(order=1, spacing=H, accuracy=4)(x)
    acceleration = fdlayers.FiniteDifference1D(order=2, spacing=H, accuracy=4)(x)
    features = keras.layers.Concatenate()([x, velocity])
    law = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros",
                             name="law")(features)
    return keras.Model(x, keras.layers.Subtract()([acceleration, law]))


def learn(x):
    model = residual_model()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    epochs = 150 if FAST else 400
    model.fit(x, np.zeros_like(x), batch_size=8, epochs=epochs, verbose=0)
    a, b = model.get_layer("law").kernel.numpy()[:, 0]
    return a, b


keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = trajectories(rng)
truth = (-OMEGA ** 2, -2 * ZETA * OMEGA)
print(f"{TRAJECTORIES} trajectories of {STEPS} samples, h = {H}")
print(f"{'':>22} {'a (-ω²)':>10} {'b (-2ζω)':>10}")
print(f"{'true':>22} {truth[0]:10.4f} {truth[1]:10.4f}")
a, b = learn(x)
print(f"{'learned, clean samples':>22} {a:10.4f} {b:10.4f}")
noisy = x + rng.normal(0, 1e-3, x.shape).astype("float32")
a_noisy, b_noisy = learn(noisy)
print(f"{'learned, noise 1e-3':>22} {a_noisy:10.4f} {b_noisy:10.4f}")
print("relative error, clean: "
      f"{max(abs(a / truth[0] - 1), abs(b / truth[1] - 1)):.1e}; with noise "
      f"{max(abs(a_noisy / truth[0] - 1), abs(b_noisy / truth[1] - 1)):.1e} "
      "(noise is amplified by 1/h² in x'')")
