"""A network that solves the heat equation, trained with model.fit.

    u_t = u_xx  on 0 ≤ x ≤ 1, 0 ≤ t ≤ 0.5,
    u(x, 0) = sin(πx),  u(0, t) = u(1, t) = 0,

whose solution is u = exp(-π²t)·sin(πx). The network N(x, t) (three tanh
layers of 32) enters through

    u(x, t) = sin(πx) + t·x·(1 − x)·N(x, t),

which meets the initial and boundary conditions whatever N is, so the loss
is the residual u_t − u_xx alone, at random collocation points, taken with
`fdlayers.input_partials` inside the model's `compute_loss`. Any Keras
backend: `KERAS_BACKEND=jax` or `torch` to change it. It prints the relative
L2 error against the exact solution on a 101 × 51 grid and draws the solution
and the error to docs/physics_informed.png.

    python examples/physics_informed.py [OUTPUT.png]   # ≈ 1 to 3 minutes on 2 cores
"""

import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import fdlayers  # noqa: E402

FAST = os.environ.get("FDLAYERS_FAST") == "1"  # the tests' quick run
# The README's figure, except in the quick runs of the tests (into the
# working directory, leaving the repository as it is).
OUTPUT = (pathlib.Path("physics_informed.png") if FAST else
          pathlib.Path(__file__).resolve().parent.parent / "docs"
          / "physics_informed.png")
T_END = 0.5
POINTS = 2000  # collocation points
EPOCHS = 2 if FAST else 1000
BATCH = 500 if FAST else 250


class Heat(keras.Model):
    """u(x, t) from a tanh network, the conditions built in; its loss is the
    mean square of u_t − u_xx at the batch's points."""

    def __init__(self, width=32, depth=3, **kwargs):
        super().__init__(**kwargs)
        self.hidden = [keras.layers.Dense(width, activation="tanh")
                       for _ in range(depth)]
        self.out = keras.layers.Dense(1)

    def call(self, points):
        x, t = points[:, :1], points[:, 1:]
        # The network sees both coordinates scaled to [-1, 1], where tanh
        # layers start out neither flat nor saturated.
        h = keras.ops.concatenate([2 * x - 1, 2 * t / T_END - 1], axis=1)
        for layer in self.hidden:
            h = layer(h)
        return keras.ops.sin(np.pi * x) + t * x * (1 - x) * self.out(h)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        # Multi-indices into the features (x, t): (1,) = ∂/∂t, (0, 0) = ∂²/∂x².
        u_t, u_xx = fdlayers.input_partials(self, x, [(1,), (0, 0)])
        return keras.ops.mean((u_t - u_xx) ** 2)


def exact(x, t):
    return np.exp(-np.pi ** 2 * t) * np.sin(np.pi * x)


def main():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    points = rng.uniform([0, 0], [1, T_END], (POINTS, 2)).astype("float32")
    model = Heat()
    schedule = keras.optimizers.schedules.ExponentialDecay(
        3e-3, decay_steps=EPOCHS * POINTS // BATCH, decay_rate=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    start = time.perf_counter()
    history = model.fit(points, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    seconds = time.perf_counter() - start

    x, t = np.meshgrid(np.linspace(0, 1, 101), np.linspace(0, T_END, 51))
    grid = np.stack([x.ravel(), t.ravel()], axis=1).astype("float32")
    u = keras.ops.convert_to_numpy(model.predict(grid, verbose=0)).reshape(x.shape)
    truth = exact(x, t)
    error = np.linalg.norm(u - truth) / np.linalg.norm(truth)
    print(f"backend {keras.backend.backend()}: {EPOCHS} epochs of "
          f"{POINTS // BATCH} steps in {seconds:.0f} s, residual loss "
          f"{history.history['loss'][0]:.2e} -> {history.history['loss'][-1]:.2e}")
    print(f"relative L2 error against exp(-pi^2 t) sin(pi x): {error:.2e}")
    draw(x, t, u, truth, error)


def draw(x, t, u, truth, error):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    shown = axes[0].pcolormesh(x, t, u, shading="auto", cmap="viridis")
    fig.colorbar(shown, ax=axes[0])
    axes[0].set(title="network u(x, t)", xlabel="x", ylabel="t")
    largest = np.abs(u - truth).max()
    shown = axes[1].pcolormesh(x, t, u - truth, shading="auto", cmap="RdBu_r",
                               vmin=-largest, vmax=largest)
    fig.colorbar(shown, ax=axes[1])
    axes[1].set(title=f"u − exp(−π²t) sin(πx), relative L2 {error:.1e}",
                xlabel="x", ylabel="t")
    output = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT
    fig.savefig(output, dpi=100)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
