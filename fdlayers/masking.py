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

import functools

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


def long_runs(mask, length):
    """Whether each step is in a run of at least `length` unmasked steps.

    By prefix sums, a handful of operations whatever `length`: a window of
    `length` steps starting at `j` is whole where its count of unmasked
    steps is `length`, and step `i` is kept where one of the windows
    starting at `i - length + 1 … i` is. The mask is first extended by
    `length` masked steps, so that every slice below has a length, even
    for sequences shorter than `length`.
    """
    mask = ops.cast(mask, "bool")
    flags = kernels.pad(ops.cast(mask, "int32"), 1, 1, length)
    counts = ops.cumsum(flags, axis=1)  # counts[k]: unmasked before step k
    whole = ops.cast(ops.equal(kernels.take(counts, 1, length, None)
                               - kernels.take(counts, 1, 0, -length), length),
                     "int32")
    # whole[j], j = 0 … steps: the window starting at j is whole.
    starts = ops.cumsum(kernels.pad(whole, 1, length, 0), axis=1)
    # starts[k]: whole windows starting before step k - length + 1.
    covered = (kernels.take(starts, 1, length, -1)
               - kernels.take(starts, 1, 0, -length - 1))
    return ops.logical_and(mask, ops.greater(covered, 0))


def output_mask(mask, layout, padding):
    """The mask of the derivative of a sequence masked by `mask`.

    `layout` is the `stencils.Plan` (uniform grid) or `stencils.Windows`
    (coordinates) that differentiates it; see the module docstring.
    """
    mask = ops.cast(mask, "bool")
    if padding == "causal":
        return mask
    if padding == "same":
        return long_runs(mask, layout.min_length)
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


#: Up to this many rows, compiled `masked_forward` computes every row over
#: the whole tensor and keeps the right one per step (measured with XLA on
#: CPU: a product by a constant costs a sixth of a product by a weight
#: gathered per step); beyond, the rows × width passes would be too many to
#: compile (a 255-sample Savitzky–Golay window has 255 rows), and it goes by
#: offset.
_ROWS_BY_SELECTION = 16

#: Op by op, `masked_forward` and `masked_transpose` gather each step's
#: samples at every offset its rows use, as one tensor, where there are at
#: most this many offsets: a graph of a few operations whatever the rows,
#: which TensorFlow traces and optimises before every first run (a first
#: `fit` step), where the rows × width of the selection are hundreds; at
#: the price of a copy of the input per offset, on inputs below
#: `dispatch._FUSION_MIN_SIZE` elements.
GATHERED_MAX_OFFSETS = 32


#: Up to this many head and tail rows together, `_rows_and_kept` reads each
#: step's row from a table indexed by the bits of its neighbours' mask.
CODED_MAX_EDGE_ROWS = 12


def _rows_and_kept(mask, rows):
    """Each step's row in `rows` (a `(batch, steps)` int32 tensor) and
    whether its output is kept, for a boolean `mask`.

    A step's row depends only on whether its `heads` preceding and `tails`
    following steps are unmasked: with few of them, those flags, as the bits
    of an integer (one convolution, exact in float32), index a table of
    rows; a handful of operations where counting the run's extent by
    doubling takes a dozen per doubling."""
    min_length, causal, heads, tails, _, _ = rows
    kept = mask if causal else long_runs(mask, min_length)
    if heads + tails > CODED_MAX_EDGE_ROWS:
        before, after = run_extents(mask, heads, tails)
        return ops.where(before < heads, 1 + tails + before,
                         ops.where(after < tails, 1 + after, 0)), kept
    table, kernel = _row_table(heads, tails)
    flags = kernels.pad(ops.cast(mask, "float32"), 1, heads, tails)
    code = ops.conv(ops.expand_dims(flags, -1), ops.convert_to_tensor(kernel),
                    padding="valid", data_format="channels_last")
    # (A reshape, not code[..., 0]: TensorFlow's convolution of an empty
    # batch returns its input's length.)
    code = ops.reshape(ops.cast(code, "int32"), ops.shape(mask))
    return kernels.lookup(table, code), kept


@functools.lru_cache(maxsize=64)
def _row_table(heads, tails):
    """`(table, kernel)` for `_rows_and_kept`: bit `j` of a step's code is
    whether step `i - 1 - j` is unmasked (`j < heads`), bit `heads + j`
    whether step `i + 1 + j` is (`j < tails`); `kernel` computes the code
    by cross-correlation with the flags padded by `heads` before and `tails`
    after, and `table[code]` is the row (see `stencil_rows`)."""
    kernel = np.zeros((heads + 1 + tails, 1, 1), dtype="float32")
    for j in range(heads):
        kernel[heads - 1 - j, 0, 0] = 2.0 ** j
    for j in range(tails):
        kernel[heads + 1 + j, 0, 0] = 2.0 ** (heads + j)
    table = np.zeros(2 ** (heads + tails), dtype="int32")
    for code in range(table.size):
        before = after = 0
        while before < heads and code >> before & 1:
            before += 1
        while after < tails and code >> (heads + after) & 1:
            after += 1
        table[code] = (1 + tails + before if before < heads
                       else 1 + after if after < tails else 0)
    return table, kernel


def _window_index(x, starts):
    """`i + starts[k]` for every step `i` of `x` (axis 1): a `(steps, k)`
    int32 tensor."""
    steps = ops.arange(ops.shape(x)[1], dtype="int32")
    return ops.expand_dims(steps, 1) + ops.convert_to_tensor(
        np.array(starts, dtype="int32"))


def _table(columns, dtype):
    """`columns`' weights as a `(rows, offsets)` NumPy array."""
    return np.array([weights for _, weights in columns], dtype=dtype).T


def masked_forward(x, mask, rows, gathered=False):
    """The derivative along axis 1 of `x` masked by `mask`, on a uniform grid.

    `rows` is `stencil_rows(plan, scale)`. Every step's row follows from
    its place in its run: a head row for the first steps of a run (these
    win), a tail row for the last, the interior stencil elsewhere. Each
    row's terms are those of `kernels`, its zero weights skipped, so that
    a run covering the whole sequence gets the unmasked result (to
    rounding) and a NaN or Inf reaches only the outputs whose row uses it.

    - `gathered` (op by op), with at most `GATHERED_MAX_OFFSETS` offsets:
      every step's samples at all the offsets, gathered, times its row's
      weights, summed;
    - compiled, up to `_ROWS_BY_SELECTION` rows: each row is one
      shifted-slice pass over the whole (zero-padded) tensor, summed in
      column order, and `where` keeps the right one;
    - else one pass per offset multiplies each sample by its step's weight,
      gathered from the offset's column.
    """
    *_, selection, columns = rows
    mask = ops.cast(mask, "bool")
    mode = kernels._torch_mode(x) if gathered else None
    if mode == "direct":
        return _torch_masked_forward(x, mask, rows)
    if mode == "recorded":  # the gradient: the transpose, in place too
        return kernels.torch_linear(_torch_masked_forward,
                                    _torch_masked_transpose)(x, mask, rows)
    rank = len(x.shape)
    row, kept = _rows_and_kept(mask, rows)
    reach = max(abs(o) for o, _ in columns)
    padded = kernels.pad(zero_masked(x, mask), 1, reach, reach)
    dtype = keras.backend.standardize_dtype(x.dtype)

    if gathered and len(columns) <= GATHERED_MAX_OFFSETS:
        table = _table(columns, dtype)
        weight = _along(kernels.lookup(table, row), rank)
        # (b, steps, offsets, ...): each a copy of the input per offset,
        # so no name keeps one alive once it is used.
        terms = ops.take(padded, _window_index(
            x, [reach + o for o, _ in columns]), axis=1) * weight
        del padded
        if not table.all():
            terms = ops.where(weight != 0, terms, 0.0)
        return zero_masked(ops.sum(terms, axis=2), kept)
    if len(selection) <= _ROWS_BY_SELECTION:
        shifted = {}
        y = _shifted_sum(padded, reach, *selection[0], shifted)
        for r, (offsets, weights) in enumerate(selection[1:], 1):
            y = ops.where(_along(row == r, rank),
                          _shifted_sum(padded, reach, offsets, weights,
                                       shifted), y)
        return zero_masked(y, kept)
    y = None
    for o, weights in columns:
        weight = _along(kernels.lookup(np.array(weights, dtype=dtype), row),
                        rank)
        term = kernels.take(padded, 1, reach + o, (o - reach) or None) * weight
        if not all(weights):
            term = ops.where(weight != 0, term, ops.zeros_like(term))
        y = term if y is None else y + term
    return zero_masked(y, kept)


def _torch_masked_forward(x, mask, rows):
    """`masked_forward` of a PyTorch tensor written into one output tensor
    (autograd records none of it; `kernels.torch_linear` gives it its
    gradient): the interior stencil at every step, each term added in
    place (as `kernels.LinearStencil._forward_into` does),
    then, at the steps that take another row (a run's first or last
    steps), their samples gathered and weighed by that row. Those are few
    where runs are long, where gathering every step's window takes a copy
    of the input per offset (benchmarks/README.md, section 16)."""
    torch = kernels._torch()
    *_, selection, columns = rows
    row, kept = _rows_and_kept(mask, rows)
    reach = max(abs(o) for o, _ in columns)
    padded = kernels.pad(zero_masked(x, mask), 1, reach, reach)
    steps = x.shape[1]
    y = x.new_empty(x.shape)
    terms = [(o, w) for o, w in zip(*selection[0]) if w != 0.0]
    if not terms:
        y.zero_()
    for k, (o, weight) in enumerate(terms):
        term = kernels.take(padded, 1, reach + o, reach + o + steps)
        if k == 0:
            torch.mul(term, weight, out=y)
        else:
            y.add_(term, alpha=weight)
    batch, step = torch.nonzero(row != 0, as_tuple=True)
    if len(batch):
        table = torch.as_tensor(_table(columns, "float64"), dtype=x.dtype,
                                device=x.device)
        weights = table[row[batch, step]]
        total = None
        for k, (o, _) in enumerate(columns):
            weight = weights[:, k].reshape((-1,) + (1,) * (len(x.shape) - 2))
            # A zero weight keeps its sample out, NaN included.
            term = torch.where(weight != 0, padded[batch, step + reach + o]
                               * weight, 0.0)
            total = term if total is None else total + term
        y[batch, step] = total
    return y.masked_fill_(~_along(kept, len(x.shape)), 0.0)


def _torch_masked_transpose(g, mask, rows):
    """`masked_transpose` of a PyTorch tensor, written into one tensor:
    each interior weight's share of the upstream at the steps that take
    the interior row, added in place along its offset, then the shares of
    the steps that take an edge row, scattered and added."""
    torch = kernels._torch()
    *_, selection, columns = rows
    row, kept = _rows_and_kept(mask, rows)
    rank, steps = len(g.shape), g.shape[1]
    g = g.masked_fill(~_along(kept, rank), 0.0)
    interior = g.masked_fill(_along(row != 0, rank), 0.0)
    x = g.new_zeros(g.shape)
    for o, weight in zip(*selection[0]):
        if weight != 0.0:
            # x[i + o] += w · g[i], for i and i + o in the sequence.
            kernels.take(x, 1, max(o, 0), steps + min(o, 0)).add_(
                kernels.take(interior, 1, max(-o, 0), steps - max(o, 0)),
                alpha=weight)
    batch, step = torch.nonzero(row != 0, as_tuple=True)
    if len(batch):
        table = torch.as_tensor(_table(columns, "float64"), dtype=g.dtype,
                                device=g.device)
        weights = table[row[batch, step]]
        upstream = g[batch, step]
        for k, (o, _) in enumerate(columns):
            weight = weights[:, k].reshape((-1,) + (1,) * (rank - 2))
            inside = ((weight.flatten() != 0) & (step + o >= 0)
                      & (step + o < steps))
            x.index_put_((batch[inside], step[inside] + o),
                         (upstream * weight)[inside], accumulate=True)
    return x.masked_fill_(~_along(mask, rank), 0.0)


def masked_transpose(g, mask, rows, gathered=False):
    """The transpose of `masked_forward(·, mask, rows)` applied to `g`: the
    gradient of `Σ g · masked_forward(x, mask, rows)` with respect to `x`.

    The forward map is `y[i] = Σ_o c_o[i] · x[i + o]` on the kept outputs,
    where `c_o[i]` is the weight of offset `o` in step `i`'s row (0 where
    the row does not use it, and for masked `x`). So its transpose is
    `x̄[j] = Σ_o c_o[j - o] · g[j - o]`: each step's weight at offset `o`
    taken from the row of the step `j - o` it reached; gathered op by op as
    in `masked_forward`, else one pass per offset. Written out rather than
    left to autodiff, whose gradient of the row-by-row selection has ten
    times its operations, in a graph traced and optimised at every first
    `fit` step.
    """
    columns = rows[-1]
    mask = ops.cast(mask, "bool")
    rank = len(g.shape)
    row, kept = _rows_and_kept(mask, rows)
    reach = max(abs(o) for o, _ in columns)
    # Steps outside the sequence hold g = 0; their row is any row.
    padded = kernels.pad(zero_masked(g, kept), 1, reach, reach)
    row = kernels.pad(row, 1, reach, reach)
    dtype = keras.backend.standardize_dtype(g.dtype)

    if gathered and len(columns) <= GATHERED_MAX_OFFSETS:
        table = _table(columns, dtype)
        index = _window_index(g, [reach - o for o, _ in columns])
        # The weight of offset k in the row of step j - o_k: entry
        # row · offsets + k of the flattened table.
        flat = ops.take(row, index, axis=1) * len(columns) + ops.arange(
            len(columns), dtype="int32")
        weight = _along(kernels.lookup(table.ravel(), flat), rank)
        del row, flat
        return zero_masked(ops.sum(ops.take(padded, index, axis=1) * weight,
                                   axis=2), mask)
    x = None
    for o, weights in columns:
        start, stop = reach - o, (-reach - o) or None
        weight = kernels.lookup(np.array(weights, dtype=dtype),
                                kernels.take(row, 1, start, stop))
        term = kernels.take(padded, 1, start, stop) * _along(weight, rank)
        x = term if x is None else x + term
    return zero_masked(x, mask)


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
