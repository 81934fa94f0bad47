"""Where each backend runs a stencil, and how.

By backend, mode and size (`placement`): on TensorFlow, small eager inputs in
NumPy, small graph inputs op by op through one function pair per
configuration traced for every size (`run_stencil`), large inputs through XLA
kernels compiled for their shape, or, where the length is known at run time
only, for padded lengths (`padded_call`); on JAX through `jax.jit`; on
PyTorch written into one output tensor (`kernels.LinearStencil`). Here too: the gradients of compiled kernels (the
transposed stencil), and the guards that keep a length known only to a
compiler (XLA's, or JAX's symbolic dimensions) from breaking the stencil's
slices. `fdlayers.ops` says what to compute; this module, where.
"""

import contextlib
import contextvars
import functools
import math

import keras
import numpy as np
from keras import ops

from fdlayers import caches, kernels, savgol, stencils


# Used here and by `fdlayers.ops`; it lives with the kernels, which need it too.
plain_python = kernels.plain_python


def static_python(fn):
    """`fn` as TensorFlow's AutoGraph must call it: unconverted.

    fdlayers branches on static facts only (arguments, static shapes), never
    on a tensor's value, so converting its call tree, which AutoGraph would
    do inside every `tf.function` that calls it, changes nothing and costs
    seconds on the first trace.
    """
    if keras.backend.backend() != "tensorflow":
        return fn
    import tensorflow as tf

    return tf.autograph.experimental.do_not_convert(fn)


def static_length(dim):
    """`dim`, or None where the length is not known while tracing: None
    itself, or a symbolic dimension of JAX's shape polymorphism (as
    `model.export` traces on JAX), which has no truth value against an
    int. (PyTorch's symbolic sizes compare as ints and pass through.)"""
    return None if dim is None or is_symbolic(dim) else dim


def is_symbolic(dim):
    """Whether `dim` is a symbolic dimension of JAX's shape polymorphism."""
    if keras.backend.backend() != "jax":
        return False
    from jax import export

    return export.is_symbolic_dim(dim)


@plain_python
@functools.lru_cache(maxsize=1024)
def plan_of(spec):
    """The `stencils.Plan` named by `spec`: `("difference", order, accuracy,
    padding)` or `("savgol", order, window, polyorder, padding)`."""
    if spec[0] == "difference":
        return stencils.plan(*spec[1:])
    return savgol.plan(*spec[1:])


# Below this many elements a stencil runs op by op (eagerly on the CPU, in
# NumPy), above it through XLA. A kernel compiled for a new shape costs
# ≈ 40-150 ms, more than the whole stencil takes op by op at this size, and
# real data comes in many lengths; above it, the fused single pass is worth
# its compile (benchmarks/README.md, sections 5 and 10).
_FUSION_MIN_SIZE = 1 << 20


# Small eager calls on the CPU run in NumPy: one TensorFlow op dispatched
# eagerly costs ≈ 10 µs, as much as a whole 3-term stencil over 4096 samples
# in NumPy, and the op-by-op stencil is 10-20 of them.
_EAGER_NUMPY = True


# Where the chunks of a long input run (`chunks_placed`); None elsewhere.
_CHUNKS = contextvars.ContextVar("fdlayers_chunks", default=None)


@contextlib.contextmanager
def chunks_placed(where):
    """Within it, TensorFlow stencils are placed `where`, whatever their
    size, for the chunks of a long input (`fdlayers.ops._in_chunks`):

    - "xla" where the chunks share one static shape (eagerly, and in a
      graph's loop): compiled once for all of them, where op by op each
      would take dozens of passes over its points (eagerly 4.5× the time in
      chunks of 2**18 points; in a graph's loop 1.7-3.4×);
    - "ops" in a graph's loop over chunks whose size is known at run time
      only (`fdlayers.ops._looped_any_size`): compiled per size there, a
      small input would compile at each new length.
    """
    token = _CHUNKS.set(where)
    try:
        yield
    finally:
        _CHUNKS.reset(token)


def placement(x, weights_width=0):
    """Where the stencil runs on `x`, by backend, mode and size:

    - "numpy": TensorFlow, eager, on the CPU, under `_FUSION_MIN_SIZE`
      elements (uniform grids; the other stencils run "ops" there);
    - "ops": op by op (PyTorch: into one output tensor, term by term in
      place, `kernels.LinearStencil`). PyTorch always; TensorFlow eagerly
      on other devices
      and in graphs whose static size is under `_FUSION_MIN_SIZE`; every
      backend where weights of a window wider than
      `FUSED_WEIGHTS_MAX_WIDTH` are computed in the graph;
    - "xla": through XLA, compiled for `x`'s shape. JAX always; TensorFlow
      from `_FUSION_MIN_SIZE` elements on, where the size is static;
    - "any": a TensorFlow graph in which the size is known at run time only
      (a Keras model's `None` lengths, `predict`, a served SavedModel): the
      choice is made then, per call (`_by_size`), and a large input runs
      through a kernel compiled for a padded length (`_bucket`), not for
      each length.
    """
    backend = keras.backend.backend()
    if backend == "torch" or weights_width > FUSED_WEIGHTS_MAX_WIDTH:
        return "ops"
    if backend == "jax":
        return "xla"
    import tensorflow as tf

    size = _static_size(x)
    if tf.executing_eagerly():
        if size >= _FUSION_MIN_SIZE or _CHUNKS.get() == "xla":
            return "xla"
        return "numpy" if _EAGER_NUMPY and "CPU" in x.device else "ops"
    if _in_xla_program():
        return "xla"  # in an XLA program, the kernel is simply inlined
    if _CHUNKS.get():
        return _CHUNKS.get()
    if size == math.inf:
        return "any"
    return "xla" if size >= _FUSION_MIN_SIZE else "ops"


def captured(*arrays, dtype=None, shared=False):
    """`arrays` (NumPy), concatenated along their first axis, in `dtype`
    (theirs where None), as a tensor; in a TensorFlow graph, an eager
    tensor that the graph captures, not a constant of it. A graph's
    constant is copied into its definition, its optimised and its
    instantiated forms: in a toy graph of slices and products on 2**24
    float64, 15.2× the input's size at a first call as a constant, 5.1×
    captured (benchmarks/README.md, section 15).

    TensorFlow copies a NumPy array it converts, and keeps that copy for a
    while beside the tensor: a long array is converted in blocks, whose
    concatenation is the tensor, or, `shared`, on a machine whose tensors
    live in host memory, written once into memory aligned as TensorFlow's
    own, which the tensor then shares (DLPack): the arrays and one size of
    the result at most, for a static grid's weights, a window per point,
    kept (3 sizes of them in blocks). Not for what a call uses and drops:
    a long static grid's coordinates, in a `tf.function`'s loop over its
    chunks, took 4.3× the input's size so shared, 2.8× in blocks, whose
    memory TensorFlow's allocator then gives to the call."""
    if keras.backend.backend() != "tensorflow":
        joined = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        return keras.ops.convert_to_tensor(
            joined if dtype is None else joined.astype(dtype, copy=False))
    import tensorflow as tf

    dtype = np.dtype(dtype or arrays[0].dtype)
    length = sum(len(a) for a in arrays) if arrays[0].ndim else 0
    with tf.init_scope():
        if length <= 2 * _BLOCK:
            joined = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            return tf.constant(joined.astype(dtype, copy=False))
        if shared and _host_tensors():
            joined = arrays[0]
            if (len(arrays) > 1 or joined.dtype != dtype
                    or not joined.flags.c_contiguous
                    or joined.ctypes.data % _ALIGNMENT):
                joined = aligned_empty((length,) + arrays[0].shape[1:],
                                       dtype)
                np.concatenate(arrays, out=joined, casting="same_kind")
            return tf.experimental.dlpack.from_dlpack(joined.__dlpack__())
        return tf.concat([tf.constant(array[start:start + _BLOCK]
                                      .astype(dtype, copy=False))
                          for array in arrays
                          for start in range(0, len(array), _BLOCK)], 0)


@functools.lru_cache(maxsize=1)
def _host_tensors():
    """Whether TensorFlow's tensors live in host memory here (no GPU)."""
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


# TensorFlow's tensors start at a multiple of this many bytes (Eigen's
# widest vectors); one that shares memory not so aligned aborts the process.
_ALIGNMENT = 64


def aligned_empty(shape, dtype):
    """An empty C-ordered array of `shape` and `dtype` whose data starts at
    a multiple of `_ALIGNMENT` bytes."""
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + _ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % _ALIGNMENT
    return raw[offset:offset + size].view(dtype).reshape(shape)


_BLOCK = 1 << 18


def executing_eagerly():
    """Whether TensorFlow runs eagerly (not tracing a graph)."""
    import tensorflow as tf

    return tf.executing_eagerly()


def _in_xla_program():
    """Whether the TensorFlow graph being traced is compiled whole by XLA
    (`jit_compile=True`, as Keras compiles models on GPUs). TensorFlow has no
    public call for this; without the internal one, assume not."""
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util

        return control_flow_util.GraphOrParentsInXlaContext(
            tf.compat.v1.get_default_graph())
    except (ImportError, AttributeError):
        return False


def uniform_kernel(x, spec, scale, axis, plan):
    """Apply the plan where the backend runs it fastest (`placement`).

    Shifted slices read and write the whole tensor once per stencil term when
    their ops run one by one (≈ 3-6× an elementwise `x * 2.0`), but XLA fuses
    them into a single pass (≈ 1.0-1.3×), whereas a depthwise convolution is
    ≈ 3-5× without XLA and ≈ 30-90× with it on CPU. So large inputs run the
    slices through XLA (nested in an outer XLA program, the inner function
    is simply inlined), and small ones, where compiling for each new shape
    would cost more than it saves, op by op. PyTorch writes them into one
    output tensor, term by term in place.
    """
    backend = keras.backend.backend()
    # Unknown trailing sizes count as channels; the choice is only for speed.
    channels = any(dim != 1 for dim in x.shape[axis + 1:])
    key = (spec, scale, axis, channels)
    if backend == "jax":
        if bucketed_on_host(x):
            return _jax_bucketed_kernel(x, key)
        return _jax_forward(*key)(x)
    if backend == "torch":
        return _linear_stencil(*key).forward(x)
    where = placement(x)
    if where == "numpy":
        return _numpy_kernel(x, key)
    import tensorflow as tf

    if where == "ops" and tf.executing_eagerly():
        # Op by op on a GPU: one op a term each way.
        stencil = _linear_stencil(*key, in_place=False)
        return _with_transpose_gradient(x, stencil.forward, stencil.transpose)
    return run_stencil(_uniform_body, x, (), plan, axis, where,
                       _bucketed_kernel, key=key)


def _uniform_body(x, compiled, key):
    """The uniform stencil on TensorFlow: through the XLA pair, its gradient
    the transposed stencil; or op by op, which, being inside a graph
    (`run_stencil`), autodiff differentiates."""
    if compiled:
        forward, transpose = _tensorflow_pair(*key, len(x.shape))
        return _with_transpose_gradient(x, forward, transpose)
    # Compact edges: fewer operations for TensorFlow to optimise at every
    # new trace that inlines this function (a new length in a tf.function).
    # (Inside an XLA program `placement` gives "xla", whose kernels guard a
    # length known only to the compiler; a sequence too short for this one
    # is refused by `fdlayers.ops._check_length`, or `_by_size` gives NaN.)
    return _linear_stencil(*key, in_place=False, compact=True).forward(x)


def length_change(plan):
    """How many steps longer than its input the plan's output is."""
    return plan.output_length(plan.min_length) - plan.min_length


def _numpy_kernel(x, key):
    """The stencil of a small eager CPU tensor, computed in NumPy.

    The same operations in the same order as op by op, so the same result;
    differentiable, to any order, through the transposed stencil, which is
    attached only where a gradient tape or forward accumulator is watching.
    """
    import tensorflow as tf

    stencil = _linear_stencil(*key, in_place=False, xp=kernels.NUMPY)

    # As TensorFlow's kernels do, and NumPy's would not by default, NaN and
    # Inf samples give NaN and Inf results without a word.
    # (tf.constant: a NumPy array takes the shortest way into a tensor.)
    def forward(v):
        with np.errstate(all="ignore"):
            return tf.constant(stencil.forward(v.numpy()))

    def transpose(g):
        with np.errstate(all="ignore"):
            return tf.constant(stencil.transpose(g.numpy()))

    if not _recording():
        return forward(x)
    return _with_transpose_gradient(x, forward, transpose)


def _recording():
    """Whether a TensorFlow gradient tape or forward accumulator could record
    an operation now. TensorFlow has no public call for this; without the
    internal one, assume so (the gradient is then always attached)."""
    global _could_record
    if _could_record is None:
        try:
            from tensorflow.python.eager import record

            _could_record = record.could_possibly_record
        except (ImportError, AttributeError):
            _could_record = lambda: True  # noqa: E731
    return _could_record()


_could_record = None


def _by_size(shape, axis, min_length, small, large, threshold, short, dtype):
    """`small()` or `large()`, chosen when the graph runs: the first for an
    input of `shape` (a tensor) with fewer than `threshold` elements.

    An input shorter than `min_length` along `axis` gives NaN of the shape
    `short` (a tensor): outside XLA `_check_length` has failed before, but
    inside an XLA program, where TensorFlow's run-time checks are dropped,
    the stencil's slices would clamp silently to a result of the wrong
    length.
    """
    import tensorflow as tf

    size = tf.reduce_prod(tf.cast(shape, tf.int64))
    # Two conditionals rather than one switch: LiteRT has no `Case`.
    return tf.cond(
        shape[axis] < min_length,
        lambda: tf.fill(short, tf.constant(np.nan, dtype)),
        lambda: tf.cond(size < threshold, small, large))


# The padded lengths a kernel is compiled for: 4·2**e, 5·2**e, 6·2**e and
# 7·2**e, so at most 25 % of a padded input is padding, and inputs of up to
# 2**k steps need at most 4k compiled kernels, whatever their lengths.
_BUCKETS = np.array(sorted(c << e for e in range(1, 60) for c in (4, 5, 6, 7)),
                    dtype=np.int64)


def _bucket(steps):
    """The smallest of `_BUCKETS` ≥ `steps` (a scalar tensor), as int32."""
    import tensorflow as tf

    buckets = tf.constant(_BUCKETS)
    # A count, not `searchsorted`, which LiteRT lacks.
    index = tf.reduce_sum(tf.cast(buckets < tf.cast(steps, tf.int64), tf.int32))
    return tf.cast(tf.gather(buckets, index), tf.int32)


def padded_to_bucket(x, axis):
    """`x` zero-padded along `axis` to the `_bucket` of its length (a
    TensorFlow tensor): an XLA program for the padded shape serves every
    length up to it, at most 25 % of its work on padding."""
    import tensorflow as tf

    return _padded(x, axis, _bucket(tf.shape(x)[axis]))


def _padded(x, axis, length, value=0.0):
    """`x` padded with `value` to `length` (a scalar tensor) along `axis`."""
    import tensorflow as tf

    widths = [[0, 0]] * len(x.shape)
    widths[axis] = [0, length - tf.shape(x)[axis]]
    return tf.pad(x, widths, constant_values=value)


# Other axes (not the batch) whose length is known at run time only are
# padded to their `_bucket` too from this many steps: XLA compiles for each
# concrete shape, and a field's other spatial axes would otherwise give a
# kernel per size. Shorter axes keep their length (a few shapes), where a
# bucket (at least 8) could multiply the work.
_BUCKET_OTHER_MIN = 32


def _bucketed_kernel(x, key):
    """The stencil of a large input whose length is known at run time only:
    zero-padded to its `_bucket`, through an XLA kernel compiled once per
    bucket that takes the true length as a run-time value
    (`kernels.LinearStencil.forward(x, length)`), and cut back. The other
    axes of unknown length (a field's other spatial axes), from
    `_BUCKET_OTHER_MIN` steps, are padded to their buckets as well, which
    the stencil, acting along its own axis, leaves apart. Autodiff
    differentiates it (the kernel has no in-place update)."""
    import tensorflow as tf

    plan, axis = plan_of(key[0]), key[2]
    steps = tf.shape(x)[axis]
    # A sequence too short for the stencil gets NaN (`_by_size`), but this
    # branch, compiled all the same inside an XLA program, must stay in range.
    steps_or_minimum = tf.maximum(steps, plan.min_length)
    padded = _padded(x, axis, _bucket(steps_or_minimum))
    others = [k for k in range(1, len(x.shape))
              if k != axis and x.shape[k] is None]
    for k in others:
        length = tf.shape(x)[k]
        padded = _padded(padded, k, tf.where(
            length < _BUCKET_OTHER_MIN, length, _bucket(length)))
    y = _bucketed_fn(*key, len(x.shape))(padded, steps_or_minimum)
    y = kernels.take(y, axis, 0, tf.maximum(steps + length_change(plan), 0))
    for k in others:
        y = kernels.take(y, k, 0, tf.shape(x)[k])
    return y


def _forward_padded(x, length, stencil):
    return stencil.forward(x, length)


@functools.lru_cache(maxsize=256)
def _bucketed_fn(spec, scale, axis, channels, rank):
    """The padded-length kernel, one per rank: a function traced for two
    ranks would generalise to an unknown rank, on which the stencil's
    slices cannot be built (as in `_tensorflow_pair`)."""
    import tensorflow as tf

    stencil = _linear_stencil(spec, scale, axis, channels, in_place=False)
    return tf.function(functools.partial(_forward_padded, stencil=stencil),
                       jit_compile=True, reduce_retracing=True,
                       autograph=False)


def run_stencil(body, x, args, plan, along, placement, padded=None,
                transposed=None, **config):
    """`body(x, *args, compiled=..., **config)`, a stencil of `plan` along
    axis `along`, where `placement` says: op by op (`compiled=False`) or
    compiled for x's shape. In a TensorFlow graph, through one function per
    configuration, traced once for every size (`_graph_pair`); where the
    size is known at run time only ("any"), a large input runs
    `padded(x, *args, **config)` (a kernel compiled once per padded length,
    `padded_call`) where that is given, else `body` compiled for its shape.
    `transposed`, where given, is the pair `(body, padded)` of the stencil's
    transpose, `g ↦ the gradient of Σ g · stencil(x)`, which TensorFlow
    graphs then take as the gradient instead of autodiff of `body`.
    """
    if placement == "xla":
        if (padded is not None and keras.backend.backend() == "jax"
                and bucketed_on_host(x)):
            # Eager: one program per bucket of lengths, not per length.
            return padded(x, *args, **config)
        return body(x, *args, compiled=True, **config)
    if keras.backend.backend() != "tensorflow":
        return body(x, *args, compiled=False, **config)
    import tensorflow as tf

    if tf.executing_eagerly():
        return body(x, *args, compiled=False, **config)
    signature = tuple((a.dtype, a.shape.rank) for a in (x,) + tuple(args))
    # The sizes after the axis, where all are known: traced with them (once
    # per layout of channels), a stencil can use a depthwise convolution
    # (`kernels._convolved`).
    trailing = tuple(x.shape[along + 1:])
    lengths = (plan.min_length, length_change(plan))
    forward, transpose = _graph_pair(
        body, padded, transposed, tuple(sorted(config.items())), signature,
        placement == "any", int(min(_FUSION_MIN_SIZE, 2 ** 62)), lengths,
        along, None if None in trailing else trailing)

    # Each of these stencils is linear in x (masks and coordinates are data,
    # without a gradient), so its gradient is the transposed map, and the
    # gradient's own gradient is autodiff of that map.
    @tf.custom_gradient
    def apply(x):
        shape = tf.shape(x)
        return forward(tf.stop_gradient(x), *args), lambda g: transpose(
            g, shape, *args)

    y = apply(x)
    shape = list(x.shape)
    shape[along] = plan.output_length(shape[along])
    y.set_shape(shape)
    return y


# The bytes that functions built for static coordinate grids may keep alive
# (`_graph_pair`, `fdlayers.ops._static_fn`): their weights are as long as
# the grid, and the layers they served may be long gone.
STATIC_CACHE_BYTES = 256 * 2**20


def _graph_pair_bytes(body, padded, transposed, config, signature, any_size,
                      threshold, lengths, axis, trailing):
    """About what a `_graph_pair` keeps alive: the constants of a static
    grid's weights (a coordinates' bytes in `config`, a window of them per
    point) in its traced graphs, or a small graph's worth otherwise."""
    grid = sum(len(value) for _, value in config if isinstance(value, bytes))
    min_length = lengths[0]  # a window's width, for coordinates
    return 2**16 + grid * (min_length + 1) * 2


@caches.bytes_cache(lambda: STATIC_CACHE_BYTES, _graph_pair_bytes,
                    max_entries=256)
def _graph_pair(body, padded, transposed, config, signature, any_size,
                threshold, lengths, axis, trailing):
    """`run_stencil`'s stencil and its transpose as TensorFlow functions of inputs
    of any size: `forward(x, *args)` and `transpose(g, shape, *args)`, the
    gradient for an upstream `g` and an input of `shape`; of any size along
    and before `axis`, and of sizes `trailing` after it where that is given.

    A graph that calls them holds one call, not the stencil's dozens of
    operations, and each is traced, and the transpose differentiated, once
    per configuration, not at every trace of every model that uses it: a
    first call, a first `fit` step, a saved model's loading stay about as
    quick as with a built-in layer. The transpose is `transposed` where
    given, else autodiff of the stencil, done when it is traced; either is
    itself differentiable by autodiff, so a SavedModel keeps derivatives of
    every order.
    """
    import tensorflow as tf

    config = dict(config)
    min_length, change = lengths
    dtype = signature[0][0]

    def choose(shape, steps, small, large):
        if not any_size:
            return small()
        short = tf.tensor_scatter_nd_update(shape, [[axis]],
                                            [tf.maximum(steps, 0)])
        return _by_size(shape, axis, min_length, small, large, threshold,
                        short, dtype)

    def large_fn(x, *args):
        if padded is not None:
            return padded(x, *args, **config)
        return body(x, *args, compiled=True, **config)

    def small_fn(x, *args):
        return body(x, *args, compiled=False, **config)

    def forward(x, *args):
        shape = tf.shape(x)
        return choose(shape, shape[axis] + change,
                      lambda: small_fn(x, *args), lambda: large_fn(x, *args))

    def transpose(g, shape, *args):
        if transposed is not None:
            small, large = transposed
            return choose(
                shape, shape[axis],
                lambda: small(g, *args, compiled=False, **config),
                lambda: (large(g, *args, **config) if large is not None
                         else small(g, *args, compiled=True, **config)))

        def vjp(fn):
            def run():
                # The stencil's forward ops on these zeros feed nothing the
                # gradient of a linear map needs, and are pruned.
                x = tf.zeros(shape, dtype)
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = fn(x, *args)
                return tape.gradient(y, x, output_gradients=g)
            return run

        return choose(shape, shape[axis], vjp(small_fn), vjp(large_fn))

    specs = [tf.TensorSpec([None] * rank, dtype) for dtype, rank in signature]
    if trailing is not None:
        specs[0] = tf.TensorSpec([None] * (axis + 1) + list(trailing), dtype)
    out = tf.TensorSpec(specs[0].shape, dtype)
    shape = tf.TensorSpec([signature[0][1]], tf.int32)
    return (tf.function(forward, input_signature=specs, autograph=False),
            tf.function(transpose, input_signature=[out, shape] + specs[1:],
                        autograph=False))


def padded_call(fn, x, mask=None, t=None, change=0):
    """`fn(x[, mask][, t])` on inputs padded along axis 1 to their
    `_bucket`, cut back to `x`'s length plus `change`: one compiled kernel
    serves every length up to the bucket. `fn` must not let the padding
    reach the outputs kept: it is masked where `mask` is given; time stamps
    go on increasing there (by their mean step), so that every weight stays
    finite and no NaN reaches a gradient."""
    if keras.backend.backend() != "tensorflow":
        return _static_padded_call(fn, x, mask, t, change)
    import tensorflow as tf

    steps = tf.shape(x)[1]
    length = _bucket(steps)
    args = [_padded(x, 1, length)]
    if mask is not None:
        args.append(tf.cast(_padded(tf.cast(mask, tf.int8), 1, length),
                            tf.bool))
    if t is not None:
        last = t.shape.rank - 1
        first, end = kernels.take(t, last, 0, 1), kernels.take(t, last, -1, None)
        step = (end - first) / tf.cast(tf.maximum(steps - 1, 1), t.dtype)
        count = tf.cast(tf.range(1, length - steps + 1), t.dtype)
        args.append(tf.concat([t, end + step * count], last))
    return kernels.take(fn(*args), 1, 0, steps + change)


def _static_padded_call(fn, x, mask, t, change):
    """`padded_call` for an input whose length is static (eager JAX)."""
    steps = x.shape[1]
    length = _static_bucket(steps)
    args = [_static_padded(x, 1, length)]
    if mask is not None:
        args.append(_static_padded(mask, 1, length, False))
    if t is not None:
        t = np.asarray(t)
        first, end = t[..., :1], t[..., -1:]
        step = (end - first) / max(steps - 1, 1)
        count = np.arange(1, length - steps + 1, dtype=t.dtype)
        args.append(ops.convert_to_tensor(
            np.concatenate([t, end + step * count], -1)))
    return _static_cut(fn(*args), 1, steps + change)


def _static_size(x):
    size = 1
    for dim in x.shape:
        if dim is None:
            return math.inf
        size *= dim
    return size


@plain_python
@functools.lru_cache(maxsize=256)
def _linear_stencil(spec, scale, axis, channels, in_place=True, xp=ops,
                    compact=False):
    return kernels.LinearStencil(plan_of(spec), scale, axis, channels,
                                 in_place, xp, compact)


@functools.lru_cache(maxsize=256)
def _tensorflow_pair(spec, scale, axis, channels, rank):
    """(forward, transpose) of a stencil as XLA-compiled TensorFlow callables.

    reduce_retracing lets one trace of the
    forward map serve every length (XLA still compiles once per concrete
    shape and caches it), and there is one pair per rank because a function traced for two ranks
    generalises to an unknown rank. The callables are partials, not the bound
    methods: TensorFlow pools retracing statistics by code object, and every
    stencil would share the methods' code and warn of "excessive retracing".
    """
    import tensorflow as tf

    stencil = _linear_stencil(spec, scale, axis, channels)
    plan = stencil.plan
    change = plan.output_length(plan.min_length) - plan.min_length
    forward = functools.partial(_xla_length_guard, fn=stencil.forward,
                                axis=axis, minimum=plan.min_length,
                                change=change)
    transpose = functools.partial(_xla_length_guard, fn=stencil.transpose,
                                  axis=axis,
                                  minimum=plan.min_length + change,
                                  change=-change)
    return (
        tf.function(forward, jit_compile=True, reduce_retracing=True,
                    autograph=False),
        # Traced per shape: the transpose is faster where it knows the length
        # (LinearStencil.transpose), and XLA compiles per shape regardless.
        tf.function(transpose, jit_compile=True, autograph=False),
    )


def _xla_length_guard(x, fn, axis, minimum, change):
    """`fn(x)`, safe for a length along `axis` that only XLA's compiler knows.

    Inside an XLA program (an outer `jit_compile=True`, as Keras uses by
    default on GPUs) TensorFlow's run-time assertions do nothing, so
    `_check_length` cannot stop a sequence shorter than `minimum`, and the
    stencil's slices clamp silently: the result would have the wrong length.
    So `fn` runs on `x` zero-padded to `minimum` steps, its result is cut to
    its documented length (x's plus `change`, or empty) and it is NaN unless
    `x` was long enough. XLA sees the length as a constant and folds all of
    this away for a long enough input: the optimised program is fn's own.
    Outside XLA, `_check_length` raises first.
    """
    if x.shape[axis] is not None:
        return fn(x)
    import tensorflow as tf

    steps = tf.shape(x)[axis]
    paddings = [[0, 0]] * len(x.shape)
    paddings[axis] = [0, tf.maximum(minimum - steps, 0)]
    padded = tf.pad(x, paddings)
    padded.set_shape(x.shape)  # the pad's shape inference loses it
    length = tf.maximum(steps + change, 0)
    y = kernels.take(fn(padded), axis, 0, length)
    y = tf.where(steps >= minimum, y, tf.constant(np.nan, y.dtype))
    # A shape made of x's own: where the function is called on inputs of a
    # known shape, shape inference sees them through it.
    shape = tf.shape(x)
    return tf.reshape(y, tf.concat([shape[:axis], [length], shape[axis + 1:]],
                                   0))


def _with_transpose_gradient(x, forward, transpose):
    """`forward(x)` whose gradient is `transpose`, to any order.

    XLA's in-place update has no registered TensorFlow gradient, and the
    transpose is also a single fused pass, where autodiff of the forward
    slices would add one pass per stencil term. The gradient of the transpose
    is the forward map again, so higher derivatives work too.
    """
    import tensorflow as tf

    @tf.custom_gradient
    def apply(x):
        # stop_gradient: a watching tape would otherwise ask TensorFlow to
        # differentiate the compiled function itself, in-place update and all.
        y = forward(tf.stop_gradient(x))
        return y, lambda g: _with_transpose_gradient(g, transpose, forward)

    return apply(x)


def is_concrete(x):
    """Whether `x` is a JAX array with values, not a tracer (under
    `jax.jit`, `jax.grad`, an export): an eager call, whose length is
    static and whose result nothing differentiates."""
    import jax

    return not isinstance(x, jax.core.Tracer)


def bucketed_on_host(x):
    """Whether an eager JAX call on `x` is padded to its bucket and cut back
    on the host (`_static_padded`, `_static_cut`), so that every length up
    to the bucket shares one compiled kernel.

    On the CPU that costs a copy each way. On an accelerator it moves the
    array to the host and back twice: a `(256, 2**20, 1)` float32 series
    took 2.2 s a call on an H200 that way, where a device copy of it takes
    0.5 ms (benchmarks/README.md, "GPU"). There only arrays under
    `_FUSION_MIN_SIZE` elements (4 MB of float32, whose transfers take
    about a millisecond, against a compile of tens of milliseconds per
    length) go through the host; larger ones run the kernel compiled for
    their shape, on the device.
    """
    if not is_concrete(x):
        return False
    return _static_size(x) < _FUSION_MIN_SIZE or on_host(x)


def on_host(x):
    """Whether `x` (a tensor of any backend, or a NumPy array) lives in the
    host's memory: a JAX array on CPU devices, a PyTorch tensor on the CPU,
    a TensorFlow tensor where no GPU is (or placed on a CPU)."""
    devices = getattr(x, "devices", None)
    if callable(devices):  # JAX
        return all(d.platform == "cpu" for d in devices())
    device = getattr(x, "device", None)
    if device is None or isinstance(x, np.ndarray):
        return True
    if hasattr(device, "type"):  # PyTorch
        return device.type == "cpu"
    return _host_tensors() or "CPU" in str(device)


def _static_bucket(steps):
    """The smallest of `_BUCKETS` ≥ `steps`, an int."""
    return int(_BUCKETS[np.searchsorted(_BUCKETS, steps)])


# Padding and cutting back an eager JAX array are done on the host: each
# eager JAX operation compiles a program for every new shape (≈ 20 ms).
def _static_padded(x, axis, length, value=0):
    widths = [(0, 0)] * len(x.shape)
    widths[axis] = (0, length - x.shape[axis])
    return ops.convert_to_tensor(
        np.pad(np.asarray(x), widths, constant_values=value))


def _static_cut(y, axis, stop):
    index = [slice(None)] * len(y.shape)
    index[axis] = slice(0, stop)
    return ops.convert_to_tensor(np.asarray(y)[tuple(index)])


def _jax_bucketed_kernel(x, key):
    """The stencil of an eager JAX array: zero-padded to its `_bucket`,
    through a kernel compiled once per bucket that takes the true length as
    a run-time value, and cut back. `jax.jit` compiles for every new shape
    and keeps each program (≈ 0.15 s and 3 MB a length on a 2-core CPU), so
    eager calls at many lengths would otherwise compile, and grow the
    process, without end."""
    plan, axis = plan_of(key[0]), key[2]
    steps = x.shape[axis]
    y = _jax_bucketed_fn(*key)(
        _static_padded(x, axis, _static_bucket(max(steps, plan.min_length))),
        steps)  # a traced value, of JAX's default integer type
    return _static_cut(y, axis, max(steps + length_change(plan), 0))


@functools.lru_cache(maxsize=256)
def _jax_bucketed_fn(spec, scale, axis, channels):
    import jax

    stencil = _linear_stencil(spec, scale, axis, channels)
    return jax.jit(functools.partial(_forward_padded, stencil=stencil))


@functools.lru_cache(maxsize=256)
def _jax_forward(spec, scale, axis, channels):
    import jax

    # JAX differentiates the in-place update itself.
    stencil = _linear_stencil(spec, scale, axis, channels)
    return jax.jit(any_length(stencil.forward, stencil.plan, axis))


def any_length(fn, layout, axis, steps=None):
    """`fn`, which applies `layout` (a `stencils.Plan` or `Windows`) along
    `axis`, for inputs of at least `layout.min_length` steps, or of exactly
    `steps` (static coordinates): on JAX wrapped in `_symbolic_length_guard`
    for lengths that are symbolic; on the other backends `fn` itself."""
    if keras.backend.backend() != "jax":
        return fn
    minimum = layout.min_length if steps is None else steps
    return functools.partial(_symbolic_length_guard, fn=fn, axis=axis,
                             minimum=minimum,
                             change=layout.output_length(minimum) - minimum,
                             exact=steps is not None)


def _symbolic_length_guard(x, *times, fn, axis, minimum, change, exact=False):
    """`fn(x, *times)`, also where the length along `axis` is symbolic.

    JAX's shape polymorphism (`jax.export`, which `model.export` uses on
    JAX) traces a length known only at run time as a symbol `a` of which it
    knows only `a ≥ 1`: `x[2:]` is then `a - min(a, 2)` steps long and
    `x[:-2]` `max(0, a - 2)`, which it cannot prove equal, so the stencil's
    shifted slices would not add up. So, as `_xla_length_guard` does for
    TensorFlow's XLA, `fn` runs on `x` cut or zero-padded to `max(a,
    minimum)` steps (`minimum` where `exact`: static coordinates), a length
    on which every slice is known, and so do `times`, the coordinates and
    mask that come with `x`, along their last axis (per-sample coordinates
    have a symbol of their own). The result is cut or padded to its
    documented length, `max(a + change, 0)`, and is NaN (False for a mask)
    unless `a ≥ minimum` (`a == minimum` where `exact`) and `times` have
    `a` steps. For a length that is a number, or None, it is
    `fn(x, *times)`.
    """
    steps = x.shape[axis]
    if not is_symbolic(steps):
        return fn(x, *times)
    import jax
    import jax.numpy as jnp

    length = minimum if exact else jax.core.max_dim(steps, minimum)
    y = fn(_to_length(x, axis, length),
           *(_to_length(t, len(t.shape) - 1, length) for t in times))
    y = _to_length(y, axis, jax.core.max_dim(steps + change, 0))
    steps = jnp.asarray(steps)
    ok = steps == minimum if exact else steps >= minimum
    for t in times:
        ok = ok & (jnp.asarray(t.shape[-1]) == steps)
    fill = np.nan if jnp.issubdtype(y.dtype, jnp.inexact) else 0
    return jnp.where(ok, y, jnp.asarray(fill, y.dtype))


def _to_length(x, axis, length):
    """`x` cut, or zero-padded at the end, to `length` steps along `axis`
    (a slice of `x` padded by `length` zeros: its stop is never beyond the
    end, even for symbolic lengths)."""
    return kernels.take(kernels.pad(x, axis, 0, length), axis, 0, length)


# Weights computed in the graph unroll Fornberg's recurrence over the window:
# O(width²) operations, which XLA compiles, for each new shape, in ≈ 3 s at
# width 16, 11 s at 32 and 100 s at 63 (per-sample coordinates, 2-core CPU).
# Wider windows run op by op (≈ 1 s a call at width 63).
FUSED_WEIGHTS_MAX_WIDTH = 24


def through_xla(fn, compiled):
    """`fn` run by XLA on TensorFlow and JAX when `compiled`; as it is otherwise.

    The position-dependent stencil is slices, products and a concatenation,
    all differentiable, so autodiff gives its gradient on every backend.
    """
    if not compiled:
        return fn
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True, reduce_retracing=True,
                           autograph=False)
    import jax

    return jax.jit(fn)


def shared_through_xla(fn, compiled):
    """`through_xla(fn, compiled)`, except that in a TensorFlow graph `fn`
    op by op and `fn` compiled are both calls of one function, traced (and
    differentiated) once: a graph whose size is known at run time only
    holds both (`_by_size`), and a first `fit` step would otherwise trace
    the stencil, and its gradient, twice. For stencils of many operations
    and no data of their own (masks); the caller caches the result.
    """
    if keras.backend.backend() != "tensorflow":
        return through_xla(fn, compiled)
    import tensorflow as tf

    if compiled:
        return tf.function(functools.partial(_call, fn=_traced_once(fn)),
                           jit_compile=True, reduce_retracing=True,
                           autograph=False)
    return functools.partial(_in_graphs_traced_once, fn=fn)


@functools.lru_cache(maxsize=64)
def _traced_once(fn):
    import tensorflow as tf

    return tf.function(fn, reduce_retracing=True, autograph=False)


def _call(*args, fn):
    return fn(*args)


def _in_graphs_traced_once(*args, fn):
    """`fn(*args)`: eagerly or in an XLA program as it is, else through
    `_traced_once`."""
    import tensorflow as tf

    if tf.executing_eagerly() or _in_xla_program():
        return fn(*args)
    return _traced_once(fn)(*args)
