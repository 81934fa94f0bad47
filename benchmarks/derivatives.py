"""Section 12 of bench.py: derivatives of a network, as training uses them.

A 5 × 50 tanh MLP (float32) on 10 000 points of 2 features (x, t), each
Keras backend in a fresh process, each task timed for fdlayers and for the
same derivatives written by hand with that backend's nested autodiff, in
interleaved rounds (the fastest of each: on PyTorch every candidate's
times were bimodal, a third or so of the rounds 1.7-2x slower at random,
enough to move a median of 7 by that much):

  a. u_xx + u_tt (fdlayers.input_laplacian);
  b. the residual u_t − u_xx and the weight gradients of its mean square
     (fdlayers.input_partials inside the weight gradient);
  b2. the same residual from fdlayers.input_operator, one pass that
     carries u_t − u_xx whole (the same hand-written and DeepXDE
     candidates, timed again in the same rounds);
  c. ∂⁴u/∂x⁴ (fdlayers.input_partials with (0, 0, 0, 0)).

By hand: nested GradientTapes on TensorFlow, jax.grad of jax.grad on one
point, vmapped, on JAX, torch.autograd.grad(create_graph=True) on PyTorch;
also DeepXDE's jacobian and hessian (its PyTorch backend: its TensorFlow
backend needs tensorflow_probability) where it is installed. Each runs as
training runs it: in a tf.function on TensorFlow, under jax.jit on JAX,
eagerly on PyTorch (torch.compile cannot differentiate twice; one thread,
see below).

12b: each candidate's first call, tracing and compiling included, in a
fresh process of its own: what a first training step pays.

    python benchmarks/bench.py --only 12
    python benchmarks/derivatives.py [--quick] [--backends jax torch]
    python benchmarks/derivatives.py --first-calls [--backends tensorflow]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

BACKENDS = ["tensorflow", "jax", "torch"]
TASKS = {"a": "u_xx + u_tt", "b": "u_t - u_xx, weight gradients",
         "b2": "b by input_operator", "c": "d4u/dx4"}

_WORKER = r'''
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras, numpy as np
import fdlayers

points, rounds, *only = json.loads(sys.argv[1])
backend = keras.backend.backend()
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((2,))]
                         + [keras.layers.Dense(50, "tanh") for _ in range(5)]
                         + [keras.layers.Dense(1)])
data = np.random.default_rng(0).uniform(-1, 1, (points, 2)).astype("float32")
X = keras.ops.convert_to_tensor(data)
weights = model.trainable_variables
candidates = {}  # (task, who) -> function returning something to wait on
HEAT = {(1,): 1.0, (0, 0): -1.0}  # u_t − u_xx for fdlayers.input_operator

def finish(value):
    for leaf in (value if isinstance(value, (list, tuple)) else [value]):
        if leaf is None:  # the output bias: no part in any derivative
            continue
        keras.ops.convert_to_numpy(leaf[0] if backend != "torch"
                                   else leaf.detach()[0])

if backend == "tensorflow":
    import tensorflow as tf

    def laplacian_by_hand(x):
        with tf.GradientTape(persistent=True) as second:
            second.watch(x)
            with tf.GradientTape() as first:
                first.watch(x)
                u = model(x)
            u_x, u_t = tf.split(first.gradient(u, x), 2, axis=1)
        return second.gradient(u_x, x)[:, :1] + second.gradient(u_t, x)[:, 1:]

    def residual_by_hand(x):
        with tf.GradientTape(persistent=True) as second:
            second.watch(x)
            with tf.GradientTape() as first:
                first.watch(x)
                u = model(x)
            u_x, u_t = tf.split(first.gradient(u, x), 2, axis=1)
        return u_t - second.gradient(u_x, x)[:, :1]

    def fourth_by_hand(x):
        tapes = [tf.GradientTape(persistent=True) for _ in range(4)]
        for tape in reversed(tapes):
            tape.__enter__()
            tape.watch(x)
        y = model(x)
        for tape in tapes:
            tape.__exit__(None, None, None)
            y = tape.gradient(y, x)[:, :1]
        return y

    def with_weights(residual):
        def run(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(residual(x) ** 2)
            return tape.gradient(loss, weights)
        return run

    def ours_residual(x):
        u_t, u_xx = fdlayers.input_partials(model, x, [(1,), (0, 0)])
        return u_t - u_xx

    def ours_operator(x):
        return fdlayers.input_operator(model, x, HEAT)

    functions = {
        ("a", "fdlayers"): lambda x: fdlayers.input_laplacian(model, x),
        ("a", "by hand"): laplacian_by_hand,
        ("b", "fdlayers"): with_weights(ours_residual),
        ("b", "by hand"): with_weights(residual_by_hand),
        ("b2", "fdlayers"): with_weights(ours_operator),
        ("b2", "by hand"): with_weights(residual_by_hand),
        ("c", "fdlayers"): lambda x: fdlayers.input_partials(
            model, x, [(0, 0, 0, 0)])[0],
        ("c", "by hand"): fourth_by_hand,
    }
    for key, fn in functions.items():
        compiled = tf.function(fn)
        candidates[key] = lambda compiled=compiled: compiled(X)

elif backend == "jax":
    import jax

    trainable = [v.value for v in weights]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def u(tv, point):
        return model.stateless_call(tv, non_trainable, point[None])[0][0, 0]

    def partial(f, j):
        return lambda tv, point: jax.grad(f, argnums=1)(tv, point)[j]

    def by_hand(f):
        return jax.vmap(f, in_axes=(None, 0))

    u_x, u_t = partial(u, 0), partial(u, 1)
    u_xx, u_tt = partial(u_x, 0), partial(u_t, 1)
    u_xxxx = partial(partial(u_xx, 0), 0)

    def scoped(fn):  # fdlayers on the model, its weights traced
        def run(tv, x):
            with keras.StatelessScope(state_mapping=list(zip(weights, tv))):
                return fn(x)
        return run

    def ours_residual(x):
        u_t, u_xx = fdlayers.input_partials(model, x, [(1,), (0, 0)])
        return u_t - u_xx

    def ours_operator(x):
        return fdlayers.input_operator(model, x, HEAT)

    def with_weights(residual):
        return jax.grad(lambda tv, x: jax.numpy.mean(residual(tv, x) ** 2))

    functions = {
        ("a", "fdlayers"): scoped(lambda x: fdlayers.input_laplacian(model, x)),
        ("a", "by hand"): lambda tv, x: (by_hand(u_xx)(tv, x)
                                         + by_hand(u_tt)(tv, x)),
        ("b", "fdlayers"): with_weights(scoped(ours_residual)),
        ("b", "by hand"): with_weights(lambda tv, x: by_hand(u_t)(tv, x)
                                       - by_hand(u_xx)(tv, x)),
        ("b2", "fdlayers"): with_weights(scoped(ours_operator)),
        ("b2", "by hand"): with_weights(lambda tv, x: by_hand(u_t)(tv, x)
                                        - by_hand(u_xx)(tv, x)),
        ("c", "fdlayers"): scoped(lambda x: fdlayers.input_partials(
            model, x, [(0, 0, 0, 0)])[0]),
        ("c", "by hand"): by_hand(u_xxxx),
    }
    for key, fn in functions.items():
        compiled = jax.jit(fn)
        candidates[key] = lambda compiled=compiled: compiled(trainable, X)

else:
    import torch

    # One thread: with two, PyTorch's timings on a shared 2-core machine
    # swung by 10x from round to round (threads waiting for each other).
    torch.set_num_threads(1)
    params = [v.value for v in weights]

    def grad(y, x):
        return torch.autograd.grad(y.sum(), x, create_graph=True)[0]

    def leaf():
        return X.detach().requires_grad_(True)

    def laplacian_by_hand():
        x = leaf()
        u_x, u_t = grad(model(x), x).split(1, dim=1)
        return grad(u_x, x)[:, :1] + grad(u_t, x)[:, 1:]

    def residual_by_hand():
        x = leaf()
        u_x, u_t = grad(model(x), x).split(1, dim=1)
        return u_t - grad(u_x, x)[:, :1]

    def fourth_by_hand():
        x = leaf()
        y = model(x)
        for _ in range(4):
            y = grad(y, x)[:, :1]
        return y

    def ours_residual():
        u_t, u_xx = fdlayers.input_partials(model, X, [(1,), (0, 0)])
        return u_t - u_xx

    def ours_operator():
        return fdlayers.input_operator(model, X, HEAT)

    def with_weights(residual):
        return lambda: torch.autograd.grad(
            residual().pow(2).mean(), params, allow_unused=True)

    candidates = {
        ("a", "fdlayers"): lambda: fdlayers.input_laplacian(model, X),
        ("a", "by hand"): laplacian_by_hand,
        ("b", "fdlayers"): with_weights(ours_residual),
        ("b", "by hand"): with_weights(residual_by_hand),
        ("b2", "fdlayers"): with_weights(ours_operator),
        ("b2", "by hand"): with_weights(residual_by_hand),
        ("c", "fdlayers"): lambda: fdlayers.input_partials(
            model, X, [(0, 0, 0, 0)])[0],
        ("c", "by hand"): fourth_by_hand,
    }
    try:
        os.environ.setdefault("DDE_BACKEND", "pytorch")
        import contextlib, io
        with contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            import deepxde as dde
        if dde.backend.backend_name != "pytorch":
            raise ImportError(dde.backend.backend_name)
    except Exception:
        dde = None
    if dde is not None:
        def dde_laplacian():
            x = leaf()
            y = model(x)
            value = dde.grad.hessian(y, x, i=0, j=0) + dde.grad.hessian(
                y, x, i=1, j=1)
            dde.grad.clear()
            return value

        def dde_residual():
            x = leaf()
            y = model(x)
            value = dde.grad.jacobian(y, x, i=0, j=1) - dde.grad.hessian(
                y, x, i=0, j=0)
            dde.grad.clear()
            return value

        def dde_fourth():
            x = leaf()
            y = dde.grad.hessian(model(x), x, i=0, j=0)
            y = dde.grad.hessian(y, x, i=0, j=0)
            dde.grad.clear()
            return y

        candidates[("a", "DeepXDE")] = dde_laplacian
        candidates[("b", "DeepXDE")] = with_weights(dde_residual)
        candidates[("b2", "DeepXDE")] = with_weights(dde_residual)
        candidates[("c", "DeepXDE")] = dde_fourth

if only:  # 12b: the first call of one candidate, in this fresh process
    task, who = only[0]
    start = time.perf_counter()
    finish(candidates[(task, who)]())
    print(json.dumps([[task, who, time.perf_counter() - start]]))
    sys.exit(0)
for fn in candidates.values():
    finish(fn())  # trace, compile, allocate
times = {key: [] for key in candidates}
for _ in range(rounds):
    for key, fn in candidates.items():
        # An untimed call first: the call after another task's was measured
        # up to 6x slower on PyTorch, paying for memory laid out for that
        # task (and the next task's first call would pay for this one's).
        finish(fn())
        start = time.perf_counter()
        finish(fn())
        times[key].append(time.perf_counter() - start)
print(json.dumps([[task, who, min(t)]
                  for (task, who), t in times.items()]))
'''


def run_backend(backend, points, rounds, only=None):
    """`{(task, who): fastest seconds}` measured in a fresh process; with
    `only`, a `(task, who)` pair, that candidate's first call alone."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, env.get("PYTHONPATH")) if p)
    # From a file, not `python -c`: TensorFlow's AutoGraph converts only
    # functions whose source it can read, as a user's are.
    with tempfile.TemporaryDirectory() as directory:
        worker = os.path.join(directory, "derivatives_worker.py")
        with open(worker, "w") as f:
            f.write(_WORKER)
        result = subprocess.run(
            [sys.executable, worker,
             json.dumps([points, rounds] + ([list(only)] if only else []))],
            env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"{backend}: failed\n{result.stderr[-2000:]}")
        return {}
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    return {(task, who): seconds for task, who, seconds in rows}


def main(quick=False, backends=None):
    points, rounds = (2000, 3) if quick else (10000, 9)
    print(f"\n12. Derivatives of a 5 x 50 tanh MLP on {points} points of 2 "
          "features, float32: fdlayers against nested autodiff by hand "
          "(and DeepXDE)")
    print(f"{'backend':<11} {'task':<31} {'fdlayers ms':>11} {'by hand ms':>10} "
          f"{'hand / ours':>11} {'DeepXDE ms':>10} {'DeepXDE / ours':>14}")
    results = {}
    for backend in backends or BACKENDS:
        measured = run_backend(backend, points, rounds)
        results[backend] = measured
        for task, name in TASKS.items():
            if (task, "fdlayers") not in measured:
                continue
            ours = measured[(task, "fdlayers")]
            hand = measured[(task, "by hand")]
            line = (f"{backend:<11} {task + '.':<3} {name:<27} {ours * 1e3:11.1f} "
                    f"{hand * 1e3:10.1f} {hand / ours:11.2f}")
            if (task, "DeepXDE") in measured:
                theirs = measured[(task, "DeepXDE")]
                line += f" {theirs * 1e3:10.1f} {theirs / ours:14.2f}"
            print(line)
    first_calls(backends, points, 1 if quick else 2)
    return results


def first_calls(backends=None, points=10000, repeats=2):
    """12b: each candidate's first call (tracing and compiling included)
    in a fresh process of its own, the median of `repeats` processes."""
    print(f"\n12b. First call of each task, {points} points: a fresh process "
          f"per candidate (the model built, not yet called), median "
          f"of {repeats}")
    print(f"{'backend':<11} {'task':<31} {'fdlayers s':>10} {'by hand s':>9} "
          f"{'hand / ours':>11} {'DeepXDE s':>9}")
    for backend in backends or BACKENDS:
        for task, name in TASKS.items():
            row = {}
            for who in ("fdlayers", "by hand", "DeepXDE"):
                if who == "DeepXDE" and backend != "torch":
                    continue
                runs = [run_backend(backend, points, 0, (task, who))
                        for _ in range(repeats)]
                seconds = [r[(task, who)] for r in runs if (task, who) in r]
                if seconds:
                    row[who] = sorted(seconds)[len(seconds) // 2]
            if "fdlayers" not in row:
                continue
            line = (f"{backend:<11} {task + '.':<3} {name:<27} {row['fdlayers']:10.2f} "
                    f"{row['by hand']:9.2f} "
                    f"{row['by hand'] / row['fdlayers']:11.2f}")
            if "DeepXDE" in row:
                line += f" {row['DeepXDE']:9.2f}"
            print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2000 points, fewer rounds")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS)
    parser.add_argument("--first-calls", action="store_true",
                        help="only 12b: each candidate's first call")
    args = parser.parse_args()
    if args.first_calls:
        first_calls(args.backends, 2000 if args.quick else 10000)
    else:
        main(args.quick, args.backends)
