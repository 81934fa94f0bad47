"""Derivatives of masked sequences: every unmasked run is a sequence of its own.

A Keras mask `(batch, steps)` marks the steps of a padded batch that hold
data. A derivative along the steps axis never reads a masked step:

- `same`: each maximal run of unmasked steps is differentiated as if it were
  the whole sequence, with the plan's edge rows at both of its ends, so the
  accuracy holds up to the last real sample of every run. A run shorter than
  the plan's minimum length has no estimate of that accuracy: its steps are
  masked in the output.
- `causal`: likewise, with the plan's history-less rows at the start of each
  run; the output mask is the input mask (whether a run will be long enough
  is not known causally, and every causal row is defined).
- `valid` and `periodic`: an output is kept where its stencil (wrapped
  around, for `periodic`) reads unmasked steps only; the others are masked.

Masked outputs are 0, and masked samples are replaced by 0 before any
arithmetic, so whatever they hold (NaN included) reaches no output.

Everything here is `keras.ops` on the steps axis 1 of tensors whose batch axis
is 0, as Keras masks are; `fdlayers.dispatch` decides where it runs.
"""

import keras
import numpy as np
from keras import ops

from fdlayers import kernels, stencils


def _shift(flags, k):
    """`flags[:, i - k]` for every step `i` (k may be negative), 0 outside."""
    reach = abs(k)
    padded = kernels.pad(flags, 1, reach, reach)
    return kernels.take(padded, 1, reach - k, (-reach - k) or None)


def run_extents(mask, before, after):
    """How many unmasked steps precede and follow each step within its run.

    Returns int32 tensors `(a, b)` shaped like `mask`: `a[i]` counts the
    consecutive unmasked steps just before step `i`, capped at `before`;
    `b[i]` those just after, capped at `after`. By doubling: a count of
    `size` (all `size` steps unmasked) goes on with the count `size` steps
    further, so a cap of c takes log2(c) passes, not c.
    """
    flags = ops.cast(mask, "int32")  # 0/1: padding and sums on every backend
    counts = []
    for direction, cap in ((1, before), (-1, after)):
        if not cap:
            counts.append(ops.zeros_like(flags))
            continue
        run, size = _shift(flags, direction), 1
        while size < cap:
            run = ops.where(run == size, size + _shift(run, direction * size),
                            run)
            size *= 2
        counts.append(ops.minimum(run, cap))
    return tuple(counts)


def _covered(mask, offsets, periodic):
    """Whether `mask` holds at every `i + o`, `o` in `offsets`: one entry per
    step whose offsets all fall inside the sequence (wrapped when `periodic`).
    """
    low, high = min(0, *offsets), max(0, *offsets)
    if periodic:  # x[n - r:] ++ x ++ x[:r]: every step keeps its window.
        parts = [p for p in (kernels.take(mask, 1, low, None) if low else None,
                             mask,
                             kernels.take(mask, 1, 0, high) if high else None)
                 if p is not None]
        mask = ops.concatenate(parts, 1) if len(parts) > 1 else mask
    span = high - low
    covered = None
    for o in offsets:
        part = kernels.take(mask, 1, o - low, (o - low - span) or None)
        covered = part if covered is None else ops.logical_and(covered, part)
    return covered


def output_mask(mask, layout, padding):
    """The mask of the derivative of a sequence masked by `mask`.

    `layout` is the `stencils.Plan` (uniform grid) or `stencils.Windows`
    (coordinates) that differentiates it; see the module docstring.
    """
    mask = ops.cast(mask, "bool")
    if padding == "causal":
        return mask
    if padding == "same":
        cap = layout.min_length - 1
        before, after = run_extents(mask, cap, cap)
        return ops.logical_and(mask, before + after + 1 >= layout.min_length)
    if isinstance(layout, stencils.Windows):
        offsets = range(layout.width)
    else:
        offsets = [int(o) for o in layout.offsets]
    return _covered(mask, offsets, padding == "periodic")


def _along(condition, rank):
    """A `(batch, steps)` condition against a rank-`rank` tensor's axes 0, 1."""
    for _ in range(rank - 2):
        condition = ops.expand_dims(condition, -1)
    return condition


def zero_masked(x, mask):
    """`x` with the masked steps set to 0."""
    return ops.where(_along(mask, len(x.shape)), x, ops.zeros_like(x))


def _shifted_sum(padded, reach, offsets, weights, shifted=None):
    """Σ_k weights[k] · x[i + offsets[k]] for every step of `x`, where
    `padded` is `x` with `reach` zeros before and after along axis 1.

    Terms in column order and zero weights skipped, as `kernels` does, so
    that a run covering the whole sequence gets the unmasked result.
    `shifted`, a dict, keeps each offset's slice for the next rows: one
    slice per offset, not per term, in a graph that is traced (and
    optimised) before its first run.
    """
    shifted = {} if shifted is None else shifted
    total = None
    for o, w in zip(offsets, weights):
        if w == 0.0:
            continue
        if o not in shifted:
            shifted[o] = kernels.take(padded, 1, reach + o,
                                      (o - reach) or None)
        term = shifted[o] * float(w)
        total = term if total is None else total + term
    if total is None:
        return ops.zeros_like(kernels.take(padded, 1, reach, -reach or None))
    return total


def stencil_rows(plan, scale):
    """The rows `masked_forward` picks from, for a `same` or `causal` plan.

    Plain Python numbers (they are constants of a traced function), as
    `(min_length, causal, heads, tails, rows, columns)`. `rows` holds
    `(offsets, weights)` relative to the output step: row 0 is the interior
    stencil; row `1 + a`, for `a < tails`, that of a step with `a` unmasked
    steps after it in its run; row `1 + tails + b`, for `b < heads`, that
    of a step with `b` before it. `columns` is the same by offset: for
    every offset `o` some row uses, `(o, weights)`, the weight of x[i + o]
    in each row (0 where a row does not use it).
    """
    heads, tails = plan.head.shape[0], plan.tail.shape[0]
    rows = [(plan.offsets, plan.weights)]
    cols = plan.tail.shape[1]
    for after in range(tails):
        rows.append(([c - cols + 1 + after for c in range(cols)],
                     plan.tail[tails - 1 - after]))
    for before in range(heads):
        rows.append(([c - before for c in range(plan.head.shape[1])],
                     plan.head[before]))
    rows = tuple((tuple(int(o) for o in offsets),
                  tuple(float(w) * scale for w in weights))
                 for offsets, weights in rows)
    table = {}
    for r, (offsets, weights) in enumerate(rows):
        for o, w in zip(offsets, weights):
            table.setdefault(o, [0.0] * len(rows))[r] = w
    columns = tuple((o, tuple(table[o])) for o in sorted(table)
                    if any(table[o]))
    return plan.min_length, not tails, heads, tails, rows, columns


#: Up to this many rows, `masked_forward` computes every row over the whole
#: tensor and keeps the right one per step (measured with XLA on CPU: a
#: product by a constant costs a sixth of a product by a weight gathered per
#: step); beyond, the rows × width passes would be too many to compile (a
#: 255-sample Savitzky–Golay window has 255 rows), and it goes by offset.
_ROWS_BY_SELECTION = 16


def masked_forward(x, mask, rows):
    """The derivative along axis 1 of `x` masked by `mask`, on a uniform grid.

    `rows` is `stencil_rows(plan, scale)`. Every step's row follows from
    its place in its run: a head row for the first steps of a run (these
    win), a tail row for the last, the interior stencil elsewhere. Each row
    sums its own terms in column order and skips its zero weights, as
    `kernels` does, so that a run covering the whole sequence gets the
    unmasked result and a NaN or Inf reaches only the outputs whose row
    uses it: either each row is one shifted-slice pass over the whole
    (zero-padded) tensor and `where` keeps the right one, or, for many
    rows, one pass per offset multiplies each sample by its step's weight
    (gathered from the offset's column), zero weights kept out by `where`.
    """
    min_length, causal, heads, tails, rows, columns = rows
    mask = ops.cast(mask, "bool")
    rank = len(x.shape)
    cap = max(min_length - 1, heads, tails)
    before, after = run_extents(mask, cap, 0 if causal else cap)
    row = ops.where(before < heads, 1 + tails + before,
                    ops.where(after < tails, 1 + after, 0))
    reach = max(abs(o) for o, _ in columns)
    padded = kernels.pad(zero_masked(x, mask), 1, reach, reach)

    if len(rows) <= _ROWS_BY_SELECTION:
        shifted = {}
        y = _shifted_sum(padded, reach, *rows[0], shifted)
        for r, (offsets, weights) in enumerate(rows[1:], 1):
            y = ops.where(_along(row == r, rank),
                          _shifted_sum(padded, reach, offsets, weights,
                                       shifted), y)
    else:
        dtype = keras.backend.standardize_dtype(x.dtype)
        y = None
        for o, weights in columns:
            weight = _along(ops.take(ops.convert_to_tensor(
                np.array(weights, dtype=dtype)), row), rank)
            term = kernels.take(padded, 1, reach + o, (o - reach) or None) * weight
            if not all(weights):
                term = ops.where(weight != 0, term, ops.zeros_like(term))
            y = term if y is None else y + term
    if causal:
        return zero_masked(y, mask)
    return zero_masked(y, ops.logical_and(mask, before + after + 1 >= min_length))


def _gather_steps(x, index):
    """`x[b, index[b, i], ...]` for a `(batch, steps)` integer `index`."""
    return ops.take_along_axis(x, _along(index, len(x.shape)), axis=1)


def _causal_windows_at_once(x, t, size, here, m, order):
    """`masked_windows`' causal rows where each step's window has `size`
    nodes (≤ m), ending at the step: one `kernels.fornberg_loop` for all the
    sizes, on windows padded to m nodes by repeating their last, which the
    loop never reaches; a window of at most `order` nodes gives 0."""
    rank = len(x.shape)
    steps = ops.shape(x)[1]
    start = here - (size - 1)
    index = [ops.clip(start + ops.minimum(k, size - 1), 0, steps - 1)
             for k in range(m)]
    nodes = ops.stack([_gather_steps(t, i) - t for i in index], axis=-1)
    # Each window's last node is its last column too.
    extent = nodes[..., m - 1] - nodes[..., 0]
    enough = size > order
    inverse = ops.where(enough, 1.0 / ops.where(enough, extent,
                                                ops.ones_like(extent)),
                        ops.zeros_like(extent))
    weights = kernels.fornberg_loop(order, nodes * ops.expand_dims(inverse, -1),
                                    ops.where(enough, size, 0))
    terms = [ops.where(_along(size > k, rank),
                       _along(weights[..., k], rank) * _gather_steps(x, i),
                       ops.zeros_like(x))
             for k, i in enumerate(index)]
    y = kernels.sum_terms(terms)
    for _ in range(order):
        y = y * _along(inverse, rank)
    return y


def masked_windows(x, mask, t, layout, order, fit=None):
    """The derivative along axis 1 of `x` masked by `mask`, on coordinates `t`.

    `t` is `(steps,)` or `(batch, steps)`; `layout` a `same` or `causal`
    `stencils.Windows`. Every step takes the window the unmasked layout
    would give it if its run were the whole sequence (clamped flush to the
    run's ends for `same`, backward and shorter at a run's start for
    `causal`); its weights come from Fornberg's recurrence on the gathered
    coordinates, in `t`'s dtype, vectorised over batch and steps; or from
    `fit(order, offsets)` where it is given (`kernels.savgol_scaled`).
    """
    fit = kernels.fornberg_scaled if fit is None else fit
    mask = ops.cast(mask, "bool")
    t = ops.stop_gradient(t) + ops.zeros_like(ops.cast(mask, t.dtype))
    x = zero_masked(x, mask)
    m, left = layout.width, layout.left
    causal = not layout.tail
    before, after = run_extents(mask, m - 1, 0 if causal else m - 1)
    steps = ops.shape(x)[1]
    here = ops.expand_dims(ops.arange(steps, dtype="int32"), 0)

    def window(start, size):
        index = [ops.clip(start + k, 0, steps - 1) for k in range(size)]
        offsets = [_gather_steps(t, i) - t for i in index]
        weights, scale = fit(order, offsets)
        y = kernels.sum_terms([_along(w, len(x.shape)) * _gather_steps(x, i)
                               for w, i in zip(weights, index)])
        for _ in range(order):
            y = y * _along(scale, len(x.shape))
        return y

    if causal and m > kernels.UNROLLED_MAX_WIDTH:
        return zero_masked(
            _causal_windows_at_once(x, t, ops.minimum(before, m - 1) + 1,
                                    here, m, order), mask)
    if causal:
        size = ops.minimum(before, m - 1) + 1
        y = ops.zeros_like(x)
        for points in range(order + 1, m + 1):
            y = ops.where(_along(size == points, len(x.shape)),
                          window(here - (points - 1), points), y)
        return zero_masked(y, mask)
    right = m - 1 - left
    start = (here - ops.minimum(before, left)
             - ops.maximum(right - after, 0))
    return zero_masked(window(start, m), output_mask(mask, layout, "same"))


def masked_gathered(x, mask, t, layout, order, polyorder):
    """`masked_windows` for Savitzky–Golay on a 'same' `layout`, gathered:
    every step's window (the one the unmasked layout would give it if its
    run were the whole sequence) as one gathered tensor `(batch, steps,
    width)`, its weights from one `kernels.savgol_loop`. A graph of a few
    operations whatever the width, at the price of a copy of `x` `width`
    times over (`kernels.GATHERED_MIN_WIDTH`)."""
    mask = ops.cast(mask, "bool")
    t = ops.stop_gradient(t) + ops.zeros_like(ops.cast(mask, t.dtype))
    x = zero_masked(x, mask)
    m, left = layout.width, layout.left
    before, after = run_extents(mask, m - 1, m - 1)
    steps = ops.shape(x)[1]
    here = ops.expand_dims(ops.arange(steps, dtype="int32"), 0)
    start = (here - ops.minimum(before, left)
             - ops.maximum(m - 1 - left - after, 0))
    index = ops.clip(ops.expand_dims(start, -1)
                     + ops.arange(m, dtype="int32"), 0, steps - 1)
    flat = ops.reshape(index, (ops.shape(index)[0], -1))
    nodes = (ops.reshape(ops.take_along_axis(t, flat, axis=1),
                         ops.shape(index)) - ops.expand_dims(t, -1))
    # A run shorter than the window has no fit (its outputs are masked);
    # evenly spread nodes there keep its weights, and their gradients, finite.
    kept = output_mask(mask, layout, "same")
    spread = ops.convert_to_tensor(np.linspace(-1.0, 1.0, m).astype(
        keras.backend.standardize_dtype(t.dtype)))
    nodes = ops.where(ops.expand_dims(kept, -1), nodes, spread)
    inverse = 2.0 / (nodes[..., m - 1] - nodes[..., 0])
    weights = kernels.savgol_loop(order, polyorder,
                                  nodes * ops.expand_dims(inverse, -1))
    rank = len(x.shape)
    shape = ops.shape(x)
    windows = ops.reshape(
        ops.take_along_axis(x, _along(flat, rank), axis=1),
        (shape[0], steps, m) + tuple(shape[2:]))
    y = ops.sum(windows * _along(weights, rank), axis=2)  # (b, steps, m, ...)
    scale = _along(inverse, rank)
    for _ in range(order):
        y = y * scale
    return zero_masked(y, kept)
