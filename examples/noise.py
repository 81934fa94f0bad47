"""Which derivative when: FiniteDifference1D, SavitzkyGolay1D and
SpectralDerivative1D on clean and noisy, periodic and non-periodic signals.

Two signals on one period, t = 2π·i/628 (h ≈ 0.01):

- periodic: exp(sin t), smooth and periodic but not band-limited;
- non-periodic: exp(-0.3 t)·sin 2t + 0.2 t, whose ends do not meet;

each clean and with white noise of deviation σ = 0.01 added. The example
prints the RMS error of each first derivative over every sample (edges
included) against the analytic one, and draws docs/noise.png.

Parameters are chosen fairly: for each method and signal, the smallest RMS
error over a small grid (below), found on a separate noise realisation
(seed 1), then reported on seed 0; on clean signals, on the signal itself.
Periodic signals get `padding="periodic"` and non-periodic ones `"same"`.
The peers, where installed (`pip install pynumdiff pysindy`), get the same
treatment: PyNumDiff's `spectraldiff` (a cutoff, and its extensions that
make a non-periodic series periodic) and `rtsdiff` (a Kalman smoother),
and pysindy's `SmoothedFiniteDifference` (Savitzky–Golay smoothing, then
a finite difference).

    python examples/noise.py [OUTPUT.png]
"""

import os
import pathlib
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import fdlayers  # noqa: E402

FAST = os.environ.get("FDLAYERS_FAST") == "1"
# The README's figure, except in the quick runs of the tests (into the
# working directory, leaving the repository as it is).
OUTPUT = (pathlib.Path("noise.png") if FAST else
          pathlib.Path(__file__).resolve().parent.parent / "docs" / "noise.png")

n, sigma = 628, 0.01
h = 2 * np.pi / n
t = np.arange(n) * h
SIGNALS = {  # name: (samples, first derivative, periodic)
    "periodic": (np.exp(np.sin(t)), np.cos(t) * np.exp(np.sin(t)), True),
    "non-periodic": (np.exp(-0.3 * t) * np.sin(2 * t) + 0.2 * t,
                     np.exp(-0.3 * t) * (2 * np.cos(2 * t)
                                         - 0.3 * np.sin(2 * t)) + 0.2, False),
}

# The grids (shrunk in the quick runs of the tests).
ACCURACIES = [2, 4] if FAST else [2, 4, 6, 8, 10]
WINDOWS = [9, 41] if FAST else [5, 9, 15, 21, 31, 41, 61, 81, 121, 161, 201,
                                      251]
POLYORDERS = [3, 5] if FAST else [2, 3, 4, 5, 6]
CUTOFFS = [None, 0.01] if FAST else [None, 0.5, 0.3, 0.2, 0.1, 0.07, 0.05,
                                     0.03, 0.02, 0.015, 0.01, 0.007]
LOG_QR = [2, 4] if FAST else list(range(-4, 17, 2))


def _layer(cls, periodic, **kwargs):
    if cls is not fdlayers.SpectralDerivative1D:
        kwargs["padding"] = "periodic" if periodic else "same"
    layer = cls(order=1, spacing=h, dtype="float64", **kwargs)
    return lambda x: np.asarray(layer(x[None, :, None]))[0, :, 0]


def fdlayers_methods(periodic):
    """name -> list of (parameters, derivative function)."""
    return {
        "FiniteDifference1D": [
            (f"accuracy={a}", _layer(fdlayers.FiniteDifference1D, periodic,
                                     accuracy=a)) for a in ACCURACIES],
        "SavitzkyGolay1D": [
            (f"window={w}, polyorder={p}",
             _layer(fdlayers.SavitzkyGolay1D, periodic, window=w, polyorder=p))
            for w in WINDOWS for p in POLYORDERS if p < w],
        "SpectralDerivative1D": [
            (f"cutoff={c}", _layer(fdlayers.SpectralDerivative1D, periodic,
                                   cutoff=c)) for c in CUTOFFS],
    }


def peer_methods(periodic):
    """The peers' candidates, for those installed."""
    methods = {}
    try:
        with warnings.catch_warnings():  # "install CVXPY" for other methods
            warnings.simplefilter("ignore")
            import pynumdiff
    except ImportError:
        pynumdiff = None
    if pynumdiff is not None:
        methods["PyNumDiff spectraldiff"] = [
            (f"cutoff_freq={c}, extension={e!r}",
             lambda x, c=c, e=e: pynumdiff.spectraldiff(x, h, c, extension=e)[1])
            for c in [1.0 if c is None else c for c in CUTOFFS]
            for e in (None, "odd")]
        methods["PyNumDiff rtsdiff"] = [
            (f"order={o}, log_qr_ratio={q}",
             lambda x, o=o, q=q: pynumdiff.rtsdiff(x, h, o, q, circular=periodic)[1])
            for o in ((2,) if FAST else (1, 2, 3)) for q in LOG_QR]
    try:
        from pysindy.differentiation import SmoothedFiniteDifference
    except ImportError:
        SmoothedFiniteDifference = None
    if SmoothedFiniteDifference is not None:
        methods["pysindy SmoothedFiniteDifference"] = [
            (f"window_length={w}, polyorder={p}",
             lambda x, w=w, p=p: SmoothedFiniteDifference(
                 smoother_kws={"window_length": w, "polyorder": p,
                               "mode": "wrap" if periodic else "interp"},
                 periodic=periodic)(x, h))
            for w in WINDOWS for p in POLYORDERS if p < w]
    return methods


def rms(y, truth):
    return float(np.sqrt(np.mean((np.asarray(y) - truth) ** 2)))


results = {}  # (signal, method) -> (parameters, RMS error, derivative)
tuning, reported = (np.random.default_rng(seed).normal(0, sigma, n)
                    for seed in (1, 0))
for name, (clean, truth, periodic) in SIGNALS.items():
    methods = {**fdlayers_methods(periodic), **peer_methods(periodic)}
    for noisy in (False, True):
        signal = f"{name}, {'noisy' if noisy else 'clean'}"
        x = clean + reported if noisy else clean
        tune = clean + tuning if noisy else clean
        for method, candidates in methods.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parameters, fn = min(candidates,
                                     key=lambda c: rms(c[1](tune), truth))
                y = fn(x)
            results[signal, method] = parameters, rms(y, truth), y
            print(f"{signal:<20} | {method}({parameters}) | "
                  f"RMS {results[signal, method][1]:.2e}")

fig, axes = plt.subplots(2, 2, figsize=(11, 8),
                         gridspec_kw={"height_ratios": [1, 1.1]})
COLORS = {"FiniteDifference1D": "tab:red", "SavitzkyGolay1D": "tab:blue",
          "SpectralDerivative1D": "tab:green"}
for ax, name in zip(axes[0], SIGNALS):
    truth = SIGNALS[name][1]
    for method, color in COLORS.items():
        parameters, error, y = results[f"{name}, noisy", method]
        ax.plot(t, y, color=color, lw=1.2, alpha=0.8,
                label=f"{method}({parameters}): RMS {error:.3f}")
    ax.plot(t, truth, "k--", lw=1, label="analytic")
    ax.set_ylim(truth.min() - 0.6, truth.max() + 0.6)
    ax.set_title(f"{name} signal + noise (σ = {sigma}), d/dt", fontsize=10)
    ax.set_xlabel("t")
    ax.legend(fontsize=7, loc="lower left", framealpha=0.9)

bars = fig.add_subplot(2, 1, 2)
axes[1, 0].remove()
axes[1, 1].remove()
signals = list(dict.fromkeys(s for s, _ in results))
methods = list(dict.fromkeys(m for _, m in results))
width = 0.8 / len(methods)
for i, method in enumerate(methods):
    errors = [results[s, method][1] for s in signals]
    bars.bar(np.arange(len(signals)) + (i - (len(methods) - 1) / 2) * width,
             errors, width, label=method,
             color=COLORS.get(method, f"C{i + 3}"),
             hatch="" if method in COLORS else "//", alpha=0.9)
bars.set_yscale("log")
bars.set_xticks(range(len(signals)), signals)
bars.set_ylabel("RMS error of d/dt (best parameters)")
bars.legend(fontsize=8, ncol=3, loc="upper center",
            bbox_to_anchor=(0.5, -0.1))
bars.grid(axis="y", alpha=0.3)
fig.tight_layout()

output = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT
output.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(output, dpi=110)
print(f"wrote {output}")
