"""Which cases of a parametrized test the default run takes.

A test parametrized over several arguments is a cross product of their
values, and most of its cost is per case (a graph traced, a program
compiled). The bugs such a product finds need one value of an argument
(this padding, this path) far more often than a pair of them, and a pair
far more often than three. So the default run takes a covering subset of
each test's cases (conftest.py), and `FDLAYERS_SLOW=1` takes them all:

- every value of every argument in some case taken (strength 1);
- tests marked `pairwise`: every pair of values of any two arguments in
  some case taken (strength 2): where each execution path must meet each
  padding, order and shape;
- tests marked `every_case` keep all their cases: scenarios of their own
  (the widest windows, a backend's own route) rather than a product.
"""

import itertools


def _value_key(value):
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _features(item, strength):
    """The argument values (strength 1) or pairs of them (strength 2) of
    one case."""
    values = sorted(((name, _value_key(value))
                     for name, value in item.callspec.params.items()),
                    key=repr)
    if strength == 1 or len(values) < 2:
        return {(value,) for value in values}
    return set(itertools.combinations(values, 2))


def covering_cases(items, strength):
    """The items of one test function's cases that cover every value
    (strength 1) or pair of values (strength 2) of its arguments, chosen
    greedily: each next case is the one that covers the most of what is
    left, the first in collection order among equals. Returned in
    collection order."""
    features = [_features(item, strength) for item in items]
    left = set().union(*features) if features else set()
    chosen = set()
    while left:
        best = max(range(len(items)),
                   key=lambda i: (len(features[i] & left), -i))
        chosen.add(best)
        left -= features[best]
    return [item for i, item in enumerate(items) if i in chosen]


def thin(items, named=()):
    """`(kept, dropped)`: each parametrized test function's covering cases
    (see `covering_cases`; strength 2 if it is marked `pairwise`, else 1),
    the unparametrized tests and those marked `every_case` whole. A test
    function or case whose node id is in `named` (the command line's, say:
    a case run again by hand) keeps every case named."""
    by_function = {}
    for item in items:
        # The node id without its parameters names the test function.
        function = item.nodeid.split("[")[0]
        if (getattr(item, "callspec", None) is None
                or item.get_closest_marker("every_case")
                or item.nodeid in named or function in named):
            continue
        by_function.setdefault(function, []).append(item)
    kept_ids = {id(item) for item in items}
    for cases in by_function.values():
        strength = 2 if cases[0].get_closest_marker("pairwise") else 1
        covering = {id(item) for item in covering_cases(cases, strength)}
        kept_ids -= {id(item) for item in cases} - covering
    kept = [item for item in items if id(item) in kept_ids]
    dropped = [item for item in items if id(item) not in kept_ids]
    return kept, dropped
