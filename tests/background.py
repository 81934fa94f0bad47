"""Subprocesses that tests wait on, run by one worker alongside the tests.

Some tests run a program in a fresh Python process (the examples, the
README's programs). Each such process imports TensorFlow and runs on one
core while the test that started it waits. A module that defines
`start_background_runs(config, items)` has its runs submitted here as soon
as collection ends (conftest.py), and its tests placed after every other
module's, so that the runs use a core while the other tests run. One
worker: one such process at a time, beside the test process and the other
backends' runs (test_backends.py).
"""

import concurrent.futures
import shutil
import tempfile

import pytest

_FUTURES = pytest.StashKey[dict]()
_WORKER = pytest.StashKey[concurrent.futures.ThreadPoolExecutor]()
_DIRECTORIES = pytest.StashKey[list]()


def submit(config, key, fn):
    """The future of `fn(directory)`, run once per `key` by the worker in a
    temporary directory of its own (removed when the session ends)."""
    futures = config.stash.setdefault(_FUTURES, {})
    if key in futures:
        return futures[key]
    if _WORKER not in config.stash:
        worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="background-runs")
        directories = config.stash[_DIRECTORIES] = []
        config.stash[_WORKER] = worker

        def stop():
            # Queued runs are dropped; a running one finishes (each has a
            # timeout of its own).
            worker.shutdown(wait=True, cancel_futures=True)
            for directory in directories:
                shutil.rmtree(directory, ignore_errors=True)
        config.add_cleanup(stop)
    directory = tempfile.mkdtemp(prefix="fdlayers-background-")
    config.stash[_DIRECTORIES].append(directory)
    futures[key] = config.stash[_WORKER].submit(fn, directory)
    return futures[key]
