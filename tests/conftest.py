"""Test configuration: quiet TensorFlow, float64 references, fixed seeds.

The backend is TensorFlow unless `KERAS_BACKEND` says otherwise; on another
backend the tests marked `tensorflow_only` are deselected (and counted as
such in pytest's summary). test_backends.py runs the backend-neutral modules
on JAX and PyTorch this way.

Tests marked `slow` are deselected too unless `FDLAYERS_SLOW=1`: the rest
of a cross product of configurations and execution paths whose costly
paths (a graph traced for any length, with its second derivative: seconds
each) the default run reaches with fewer configurations, each branch and
padding of them still included. Unless `FDLAYERS_SLOW=1`, the cases of
each parametrized test are thinned to a covering subset too (covering.py):
every value of every argument, or every pair of values for tests marked
`pairwise`.
"""

import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# One thread for each library's operators, here and in every process the
# tests start (they inherit the environment). The suite runs three test
# processes at once (this one, and the JAX and PyTorch runs of
# test_backends.py), besides the programs that tests/background.py runs:
# on a machine of a few cores, each library's own pool of threads only
# added contention. On 2 cores the whole run took 10 min 37 s with one
# thread each, against 11 min 35 s with the libraries' defaults.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1")
# The references are float64, and JAX computes in float32 unless 64-bit
# types are enabled before it is imported.
if os.environ["KERAS_BACKEND"] == "jax":
    os.environ.setdefault("JAX_ENABLE_X64", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(20261127)


@pytest.fixture
def fails_fast(request):
    """Fail a test that hangs rather than wait for it: after the module's
    `ALARM_S` seconds (60 if it sets none)."""
    seconds = getattr(request.module, "ALARM_S", 60)

    def hang(signum, frame):
        raise TimeoutError(f"not done within {seconds} s")
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(params=["by row", "by offset"])
def masked_rows(request, monkeypatch):
    """Each of the two ways a masked uniform-grid derivative is computed
    (fdlayers.masking.masked_forward), forced."""
    import per_backend
    from fdlayers import masking

    if request.param == "by offset":
        monkeypatch.setattr(masking, "_ROWS_BY_SELECTION", 0)
    # Compiled masked functions are cached with the way they were traced.
    per_backend.clear_caches()
    yield request.param
    per_backend.clear_caches()


def _starts_backend_runs(item):
    return getattr(getattr(item, "module", None), "start_backend_runs", None)


def _starts_background_runs(item):
    return getattr(getattr(item, "module", None), "start_background_runs",
                   None)


def pytest_collection_modifyitems(config, items):
    # test_backends.py waits for runs on the other backends: last, so that
    # they go on alongside every other test (see pytest_collection_finish);
    # before it, the modules that wait for runs in the background
    # (tests/background.py), for the same reason.
    items.sort(key=lambda item: (_starts_backend_runs(item) is not None,
                                 _starts_background_runs(item) is not None))
    markers = []
    if os.environ["KERAS_BACKEND"] != "tensorflow":
        markers.append("tensorflow_only")
    if os.environ.get("FDLAYERS_SLOW") != "1":
        markers.append("slow")
    deselected = [item for item in items
                  if any(item.get_closest_marker(m) for m in markers)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not any(
            item.get_closest_marker(m) for m in markers)]
    if os.environ.get("FDLAYERS_SLOW") != "1":
        import covering
        items[:], dropped = covering.thin(items, set(config.args))
        if dropped:
            config.hook.pytest_deselected(items=dropped)


def pytest_collection_finish(session):
    """Start the other backends' runs now if test_backends.py is selected,
    and the background runs of the selected modules that have them, so
    that they use the cores while the TensorFlow tests run."""
    if session.config.option.collectonly:
        return
    for item in session.items:
        start = _starts_backend_runs(item)
        if start is not None:
            start(session.config)
            break
    by_module = {}
    for item in session.items:
        start = _starts_background_runs(item)
        if start is not None:
            by_module.setdefault(start, []).append(item)
    for start, items in by_module.items():
        start(session.config, items)


def pytest_terminal_summary(terminalreporter):
    """The summary line of each other backend's run (test_backends.py)."""
    lines = [value
             for outcome in ("passed", "failed")
             for report in terminalreporter.stats.get(outcome, [])
             for name, value in getattr(report, "user_properties", ())
             if name == "backend run"]
    if lines:
        terminalreporter.section("other backends")
        for line in lines:
            terminalreporter.write_line(line)
