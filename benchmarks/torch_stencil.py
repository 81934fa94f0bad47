"""Section 16 of bench.py: the stencil on the PyTorch backend (CPU), written
into one output tensor in place, against the same stencil op by op.

On PyTorch fdlayers writes the stencil into one output tensor: the first
term multiplied into it, each further term added in place (`y += w·x`,
one pass), the edge rows written into their ends; where a gradient is
recorded, through an autograd function whose gradient is the transposed
stencil written the same way (`fdlayers.kernels.LinearStencil`). "op by op"
is the formulation it replaced, every product and sum a new tensor, then
the edges joined on, run in the same process (fdlayers' in-place path
switched off). "masked" is `FiniteDifference1D(2, 0.01, 4)` with a
mask of a padded batch (each series ends 0-25 % before the last step):
in place, the interior everywhere and the runs' edge rows gathered where
they apply, against every step's window gathered; its gradient is op by
op either way. On coordinates and time stamps the interior is written in
place, and where a gradient is recorded the stencil and its transpose go
through an autograd function (`fdlayers.kernels._windows_transpose`).
`Laplacian` and `Curl` of fields (their own inputs, float32) take each
axis's stencil in place, and sum the terms into the first one in place
where no gradient is recorded (`fdlayers.fields._composed`). All against an elementwise `x * 2.0`, which reads and
writes the tensor once, and with the gradient against a backward pass of
`x * 2.0` through autograd. Float32 `(64, 65536, 4)`, interleaved rounds,
medians; the worker runs in a process of its own with KERAS_BACKEND=torch.

    python benchmarks/bench.py --only 16
    python benchmarks/torch_stencil.py [--quick]
"""

import argparse
import os
import subprocess
import sys

CASES = [("FiniteDifference1D", (1, 0.01, 2)), ("FiniteDifference1D", (2, 0.01, 4)),
         ("FiniteDifference1D", (1, 0.01, 6)), ("FiniteDifference1D", (4, 0.01, 8)),
         ("SavitzkyGolay1D", (1, 11, 3)), ("SavitzkyGolay1D", (2, 21, 4)),
         ("masked", (2, 0.01, 4)), ("coordinates", (2, 4)),
         ("time stamps", (2, 4)), ("Laplacian", (16, 512, 512, 1)),
         ("Laplacian", (4, 128, 128, 128, 1)), ("Curl", (4, 128, 128, 128, 3))]


def worker(quick):
    import statistics
    import time

    import torch

    import fdlayers
    from fdlayers import kernels

    steps, rounds = (4096, 3) if quick else (65536, 9)
    x = torch.randn(64, steps, 4)
    # A padded batch: each series ends 0-25 % before the last step.
    lengths = torch.linspace(0.75, 1.0, 64) * steps
    mask = torch.arange(steps)[None, :] < lengths[:, None]
    in_place = kernels._torch_mode

    def timed(fn, op_by_op):
        kernels._torch_mode = (lambda x: None) if op_by_op else in_place
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    print(f"fdlayers {fdlayers.__version__}, PyTorch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, input {tuple(x.shape)} float32, "
          f"{rounds} rounds, medians")
    print(f"{'layer':<38} {'pass':<8} {'in place ms':>11} {'op by op ms':>11} "
          f"{'floor ms':>8} {'in place':>8} {'op by op':>8}")
    grid = torch.cumsum(torch.rand(steps, dtype=torch.float64) + 0.5, 0).numpy()
    stamps = torch.cumsum(torch.rand(64, steps) + 0.5, 1)
    for name, args in CASES:
        inp = x
        if name in ("Laplacian", "Curl"):
            inp = torch.randn(*args)
            layer = getattr(fdlayers, name)()
        elif name == "masked":
            stencil = fdlayers.FiniteDifference1D(*args)
            layer = lambda v: stencil(v, mask=mask)  # noqa: E731
        elif name == "coordinates":
            layer = lambda v: fdlayers.derivative(  # noqa: E731
                v, args[0], grid, args[1])
        elif name == "time stamps":
            layer = lambda v: fdlayers.derivative(  # noqa: E731
                v, args[0], stamps, args[1])
        else:
            layer = getattr(fdlayers, name)(*args)

        def forward():
            with torch.no_grad():
                return layer(inp)

        def backward():
            v = inp.detach().requires_grad_()
            y = layer(v)
            return torch.autograd.grad(y, v, torch.ones_like(y))

        def floor_forward():
            with torch.no_grad():
                return inp * 2.0

        def floor_backward():
            v = inp.detach().requires_grad_()
            return torch.autograd.grad(v * 2.0, v, torch.ones_like(inp))

        for label, fn, floor in (("forward", forward, floor_forward),
                                 ("+ grad", backward, floor_backward)):
            times = {"in place": [], "op by op": [], "floor": []}
            for who in times:  # warm-up
                timed(floor if who == "floor" else fn, who == "op by op")
            for _ in range(rounds):
                for who in times:
                    times[who].append(timed(floor if who == "floor" else fn,
                                            who == "op by op"))
            ms = {who: statistics.median(t) * 1e3 for who, t in times.items()}
            title = {"masked": f"FiniteDifference1D{args}, masked",
                     "coordinates": "derivative(x, 2, grid, 4)",
                     "time stamps": "derivative(x, 2, t, 4)",
                     "Laplacian": f"Laplacian() {args}",
                     "Curl": f"Curl() {args}"}.get(name, name + str(args))
            print(f"{title:<38} {label:<8} {ms['in place']:11.1f} "
                  f"{ms['op by op']:11.1f} {ms['floor']:8.1f} "
                  f"{ms['in place'] / ms['floor']:8.2f} "
                  f"{ms['op by op'] / ms['floor']:8.2f}")
    kernels._torch_mode = in_place


def main(quick=False):
    print("\n16. The stencil on PyTorch (CPU), in place against op by op, "
          "ratios to x * 2.0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p))
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker"]
        + (["--quick"] if quick else []),
        env=env, capture_output=True, text=True, check=False)
    print(result.stdout.rstrip() if result.returncode == 0
          else f"PyTorch worker failed:\n{result.stderr[-2000:]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        worker(options.quick)
    else:
        main(options.quick)
