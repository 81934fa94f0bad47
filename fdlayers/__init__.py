"""fdlayers: Keras layers that differentiate sampled series by finite differences.

Public API:

- `coefficients(order, offsets, exact=False)` and `stencil(order, accuracy, kind)`:
  stencil mathematics (NumPy only);
- `derivative(x, order, spacing, accuracy, padding, axis, mask)`: the tensor op;
- `FiniteDifference1D`: the Keras layer;
- `SavitzkyGolay1D`: a noise-robust derivative (least-squares polynomial fits);
- `input_derivatives(model, x, order)`, `input_partials(model, x, indices)`
  and `input_laplacian(model, x, features)`: a model's derivatives with
  respect to its input by autodiff, zeros where the truth is zero (never
  None), differentiable with respect to its weights on every backend.
"""

__version__ = "0.1.0"

from fdlayers.stencils import coefficients, stencil  # noqa: E402
from fdlayers.ops import derivative  # noqa: E402
from fdlayers.layers import FiniteDifference1D, SavitzkyGolay1D  # noqa: E402
from fdlayers.autodiff import (  # noqa: E402
    input_derivatives, input_laplacian, input_partials)

__all__ = ["FiniteDifference1D", "SavitzkyGolay1D", "coefficients",
           "derivative", "input_derivatives", "input_laplacian",
           "input_partials", "stencil", "__version__"]
