"""fdlayers: Keras layers that differentiate sampled series by finite differences.

Public API:

- `coefficients(order, offsets, exact=False)` and `stencil(order, accuracy, kind)`:
  stencil mathematics (NumPy only);
- `derivative(x, order, spacing, accuracy, padding, axis, mask)`: the tensor op;
- `FiniteDifference1D`: the Keras layer;
- `SavitzkyGolay1D`: a noise-robust derivative (least-squares polynomial fits);
- `partial(x, orders, ...)`, `PartialDerivative`, `Gradient`, `Divergence`,
  `Curl` and `Laplacian`: partial derivatives and vector calculus of fields
  on 1-D to 3-D grids;
- `spectral_derivative(x, order, spacing, cutoff, axis)` and
  `SpectralDerivative1D`: the derivative of a periodic series by FFT;
- `input_derivatives(model, x, order)`, `input_partials(model, x, indices)`,
  `input_laplacian(model, x, features)` and `input_operator(model, x,
  terms)`: a model's derivatives with
  respect to its input by autodiff, zeros where the truth is zero (never
  None), differentiable with respect to its weights on every backend.

`import fdlayers` imports every layer, and with them Keras and its backend,
so that saved models load. The one exception is the `fdlayers` command
itself (`fdlayers ...` or `python -m fdlayers ...`): `diff` needs NumPy
only, and `--help` or a bad argument should not wait seconds for a backend,
so there the same names are imported on first use.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

__all__ = ["FiniteDifference1D", "SavitzkyGolay1D", "coefficients",
           "derivative", "input_derivatives", "input_laplacian",
           "input_operator", "input_partials", "stencil", "__version__"]
__all__ += ["SpectralDerivative1D", "spectral_derivative"]
__all__ += ["partial", "PartialDerivative", "Gradient", "Divergence", "Curl",
            "Laplacian"]

_HOMES = {"coefficients": "stencils", "stencil": "stencils",
          "derivative": "ops", "FiniteDifference1D": "layers",
          "SavitzkyGolay1D": "layers", "input_derivatives": "autodiff",
          "input_partials": "autodiff", "input_laplacian": "autodiff",
          "input_operator": "autodiff"}
_HOMES.update({"spectral_derivative": "spectral",
               "SpectralDerivative1D": "spectral_layers"})
_HOMES.update({"partial": "fields", "PartialDerivative": "field_layers",
               "Gradient": "field_layers", "Divergence": "field_layers",
               "Curl": "field_layers", "Laplacian": "field_layers"})


def _is_the_command():
    """Whether this process is the `fdlayers` command: its console script,
    or `python -m fdlayers` (whose package is imported before argv[0] is
    set, hence `orig_argv`)."""
    script = _os.path.basename(_sys.argv[0]) if _sys.argv else ""
    if _os.path.splitext(script)[0] in ("fdlayers", "fdlayers-script"):
        return True
    arguments = getattr(_sys, "orig_argv", [])
    return any(a == "-m" and b == "fdlayers"
               for a, b in zip(arguments, arguments[1:]))


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module 'fdlayers' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"fdlayers.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


if not _is_the_command():
    from fdlayers.stencils import coefficients, stencil  # noqa: E402,F401
    from fdlayers.ops import derivative  # noqa: E402,F401
    from fdlayers.layers import FiniteDifference1D, SavitzkyGolay1D  # noqa: E402,F401
    from fdlayers.autodiff import (  # noqa: E402,F401
        input_derivatives, input_laplacian, input_operator, input_partials)
    from fdlayers.spectral import spectral_derivative  # noqa: E402,F401
    from fdlayers.spectral_layers import SpectralDerivative1D  # noqa: E402,F401
    from fdlayers.fields import partial  # noqa: E402,F401
    from fdlayers.field_layers import (  # noqa: E402,F401
        Curl, Divergence, Gradient, Laplacian, PartialDerivative)
