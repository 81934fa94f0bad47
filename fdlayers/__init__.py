"""fdlayers: Keras layers that differentiate sampled series by finite differences.

Public API:

- `coefficients(order, offsets, exact=False)` and `stencil(order, accuracy, kind)`:
  stencil mathematics (NumPy only);
- `derivative(x, order, spacing, accuracy, padding, axis)`: the tensor op;
- `FiniteDifference1D`: the Keras layer.
"""

__version__ = "0.1.0"

from fdlayers.stencils import coefficients, stencil  # noqa: E402
from fdlayers.ops import derivative  # noqa: E402
from fdlayers.layers import FiniteDifference1D  # noqa: E402

__all__ = ["FiniteDifference1D", "coefficients", "derivative", "stencil",
           "__version__"]
