"""A memo bounded by the bytes its entries hold, not only by their count.

`functools.lru_cache` bounds entries by number, which suits functions whose
results are small. A function built for a static coordinate grid holds
weights proportional to the grid (`fdlayers.ops._static_fn`): 32 such entries
for grids of millions of points would keep gigabytes alive after their
layers are gone. `bytes_cache` evicts the least recently used entries once
their estimated sizes exceed a budget, but always keeps the newest, so a
single grid larger than the budget is still computed once, not per call.
"""

import collections
import functools
import threading


CacheInfo = collections.namedtuple("CacheInfo", "hits misses currsize")


def bytes_cache(max_bytes, cost, max_entries=32):
    """Memoize a function of hashable arguments within `max_bytes`.

    Args:
        max_bytes: the budget for the sum of the entries' costs, or a
            function of no arguments giving it (read at every call).
        cost: a function of the same arguments giving an entry's size in
            bytes (an estimate of what the result keeps alive).
        max_entries: the most entries kept, whatever their sizes.

    The wrapped function gets `cache_clear()`, `cache_bytes()` and
    `cache_info()` (hits, misses, current size, as functools' caches).
    """
    budget = max_bytes if callable(max_bytes) else (lambda: max_bytes)

    def decorate(fn):
        entries = collections.OrderedDict()  # key -> (result, bytes)
        lock = threading.Lock()
        held = [0]
        counts = {"hits": 0, "misses": 0}

        @functools.wraps(fn)
        def wrapper(*args):
            with lock:
                if args in entries:
                    counts["hits"] += 1
                    entries.move_to_end(args)
                    return entries[args][0]
                counts["misses"] += 1
            result = fn(*args)
            size = cost(*args)
            with lock:
                if args not in entries:
                    entries[args] = (result, size)
                    held[0] += size
                while len(entries) > 1 and (
                        held[0] > budget() or len(entries) > max_entries):
                    _, (_, dropped) = entries.popitem(last=False)
                    held[0] -= dropped
                return entries[args][0]

        def cache_clear():
            with lock:
                entries.clear()
                held[0] = 0

        wrapper.cache_clear = cache_clear
        wrapper.cache_bytes = lambda: held[0]
        wrapper.cache_info = lambda: CacheInfo(
            counts["hits"], counts["misses"], len(entries))
        return wrapper
    return decorate
