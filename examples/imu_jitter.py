"""Velocity from a jittered position recording: SavitzkyGolay1D on time stamps.

A simulated sensor logs position at a nominal 100 Hz, but each interval
between time stamps is 10 ms ± up to 15 % (uniform jitter), and each
position carries white noise of deviation 2 mm. The true velocity is a
smooth mixture of two slow sinusoids. The example estimates the velocity
three ways, on a batch of independent recordings, and prints the RMS error
of each against the true velocity:

- `FiniteDifference1D` on the true time stamps (`layer([x, t])`): exact
  for the jitter, but it amplifies the noise by ≈ 1/(√2·h);
- `SavitzkyGolay1D` at the nominal spacing: smooths the noise but takes
  the jittered samples as evenly spaced;
- `SavitzkyGolay1D` on the true time stamps: each output is the slope of
  the cubic fitted by least squares to the samples at their own stamps.

    python examples/imu_jitter.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import fdlayers  # noqa: E402

FAST = os.environ.get("FDLAYERS_FAST") == "1"

rate, jitter, sigma = 100.0, 0.15, 0.002  # Hz, fraction of a step, metres
duration = 5.0 if FAST else 20.0  # seconds per recording
batch = 4 if FAST else 16
steps = int(duration * rate)
rng = np.random.default_rng(18)

# Time stamps: jittered intervals, from 0 (relative time stamps keep the
# float32 weights accurate; see the README's "Precision").
intervals = (1 + rng.uniform(-jitter, jitter, (batch, steps))) / rate
t = np.cumsum(intervals, axis=1) - intervals[:, :1]
phase = rng.uniform(0, 2 * np.pi, (batch, 1))


def velocity(t):
    return (0.8 * np.sin(2 * np.pi * 0.4 * t + phase)
            + 0.3 * np.sin(2 * np.pi * 1.1 * t + 2 * phase))


def position(t):
    return (-0.8 / (2 * np.pi * 0.4) * np.cos(2 * np.pi * 0.4 * t + phase)
            - 0.3 / (2 * np.pi * 1.1) * np.cos(2 * np.pi * 1.1 * t + 2 * phase))


x = (position(t) + rng.normal(0.0, sigma, t.shape))[..., None]
truth = velocity(t)
x32, t32 = x.astype("float32"), t.astype("float32")
window, polyorder = 21, 3  # 0.2 s of samples, a cubic fit

estimates = {
    "FiniteDifference1D(order=1), true time stamps":
        fdlayers.FiniteDifference1D(order=1)([x32, t32]),
    f"SavitzkyGolay1D(order=1, window={window}, polyorder={polyorder}), "
    "nominal spacing":
        fdlayers.SavitzkyGolay1D(order=1, window=window, polyorder=polyorder,
                                 spacing=1 / rate)(x32),
    f"SavitzkyGolay1D(order=1, window={window}, polyorder={polyorder}), "
    "true time stamps":
        fdlayers.SavitzkyGolay1D(order=1, window=window,
                                 polyorder=polyorder)([x32, t32]),
}
print(f"{batch} recordings of {duration:g} s at {rate:g} Hz, intervals "
      f"±{jitter:.0%}, position noise {sigma * 1000:g} mm; velocity RMS "
      f"{np.sqrt(np.mean(truth ** 2)):.3f} m/s")
for name, estimate in estimates.items():
    error = np.asarray(estimate)[..., 0] - truth
    print(f"{name}: RMS error {np.sqrt(np.mean(error ** 2)):.4f} m/s")
