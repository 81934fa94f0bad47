"""Stencil plans applied to float64 NumPy arrays: the command line's arithmetic.

`fdlayers diff` differentiates files, not tensors, so it needs neither Keras
nor a backend: it applies the same plans as the layers (`stencils.plan`,
`stencils.window_weights`, `savgol.plan`) with NumPy, always in float64,
whatever `KERAS_BACKEND` says. Arrays are `(steps, channels)`; the steps
axis is 0.
"""

import numpy as np

from fdlayers import stencils

# Rows per block of the interior sum: bounds the scratch array to a few MB
# for any length, and keeps a block in cache while every weight passes.
_BLOCK = 1 << 15


def apply_plan(x, plan, scale=1.0):
    """`plan` (a `stencils.Plan`, unit spacing) applied along axis 0 of `x`,
    times `scale` (`spacing**-order`).

    Returns:
        float64 of shape `(plan.output_length(steps), channels)`: the head
        rows, then the interior, then the tail rows, as `stencils.Plan`
        defines them (periodic edges wrap around).
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    head, tail = plan.head, plan.tail
    count = n - plan.width + 1  # points whose stencil lies inside
    y = np.empty((head.shape[0] + count + tail.shape[0],) + x.shape[1:])
    if head.shape[0]:
        if plan.periodic:
            r, cols = head.shape[0], head.shape[1]
            before = np.concatenate([x[n - r:], x[:cols - r]])
            after = np.concatenate([x[n - cols + r:], x[:r]])
        else:
            before, after = x[:head.shape[1]], x[n - tail.shape[1]:]
        y[:head.shape[0]] = np.tensordot(head, before, axes=1) * scale
        y[head.shape[0] + count:] = np.tensordot(tail, after, axes=1) * scale
    weights = plan.weights * scale
    _correlate(x, weights, y[head.shape[0]:head.shape[0] + count])
    return y


def _correlate(x, weights, out):
    """out[i] = Σ_k weights[k] · x[i + k], block by block."""
    count = out.shape[0]
    scratch = np.empty((min(count, _BLOCK),) + x.shape[1:])
    for start in range(0, count, _BLOCK):
        stop = min(start + _BLOCK, count)
        block, tmp = out[start:stop], scratch[:stop - start]
        np.multiply(x[start:stop], weights[0], out=block)
        for k in range(1, len(weights)):
            if weights[k]:  # central stencils of odd order have a zero middle
                np.multiply(x[start + k:stop + k], weights[k], out=tmp)
                block += tmp


def derivative(x, order, spacing, accuracy, padding):
    """The `order`-th derivative of `x` along axis 0, as
    `fdlayers.derivative` defines it: `spacing` a positive number (uniform
    grid) or a strictly increasing coordinate vector (one per step)."""
    if np.ndim(spacing) == 0:
        plan = stencils.plan(order, accuracy, padding)
        return apply_plan(x, plan, float(spacing) ** -order)
    layout = stencils.windows(order, accuracy, padding)
    t = stencils.check_coordinates(spacing, layout.min_length)
    x = np.asarray(x, dtype=np.float64)
    n, m, left = x.shape[0], layout.width, layout.left
    # The edge rows' windows lie within the first and the last 2m samples.
    edge = min(n, 2 * m)
    _, head, _, _ = stencils.window_weights(t[:edge], order, accuracy, padding)
    _, _, _, tail = stencils.window_weights(t[n - edge:], order, accuracy, padding)
    count = n - m + 1  # points whose window fits
    y = np.empty((len(head) + count + len(tail),) + x.shape[1:])
    for i, w in enumerate(head):
        y[i] = np.tensordot(w, x[:w.size], axes=1) if w.size else 0.0
    body = y[len(head):len(head) + count]
    for start in range(0, count, _BLOCK):
        # The interior weights block by block, as window_weights computes
        # them: its (n, m) arrays for a long series would cost more memory
        # than the data.
        stop = min(start + _BLOCK, count)
        nodes = np.lib.stride_tricks.sliding_window_view(t[start:stop + m - 1], m)
        weights = stencils.fornberg(order, list((nodes - t[start + left:stop + left, None]).T))
        block = body[start:stop]
        block[...] = 0.0
        for k in range(m):  # m ≤ stencils.MAX_WIDTH terms
            block += weights[k].reshape((-1,) + (1,) * (x.ndim - 1)) * x[start + k:stop + k]
    if len(tail):
        y[len(head) + count:] = np.tensordot(tail, x[n - m:], axes=1)
    return y


def savitzky_golay(x, order, window, polyorder, spacing, padding):
    """The `order`-th derivative of a Savitzky–Golay fit along axis 0, as
    `fdlayers.SavitzkyGolay1D` defines it, on a uniform grid."""
    from fdlayers import savgol

    return apply_plan(x, savgol.plan(order, window, polyorder, padding),
                      float(spacing) ** -order)
