"""The covering subsets of cross products that the default run takes
(covering.py): every value, or every pair of values, in some case taken."""

import itertools
import types

import pytest

import covering


def _cases(name, marker=None, **values):
    """Fake pytest items: the cross product of `values`, one per case."""
    names = list(values)
    items = []
    for combination in itertools.product(*values.values()):
        params = dict(zip(names, combination))
        items.append(types.SimpleNamespace(
            nodeid=f"tests/test_x.py::{name}[{'-'.join(map(str, combination))}]",
            callspec=types.SimpleNamespace(params=params),
            get_closest_marker=lambda m, marker=marker: m == marker or None))
    return items


def _covered(items, names, strength):
    return {tuple((n, repr(item.callspec.params[n])) for n in group)
            for item in items
            for group in itertools.combinations(names, strength)}


PRODUCT = dict(path=["eager", "graph", "XLA", "any length"],
               order=[1, 2, 3], accuracy=[2, 4, 6],
               padding=["same", "valid", "periodic", "causal"],
               config=[{"a": 1}, {"a": 2}])


@pytest.mark.parametrize("strength", [1, 2])
def test_every_value_or_pair_is_in_a_case_taken(strength):
    items = _cases("test_f", {1: None, 2: "pairwise"}[strength], **PRODUCT)
    kept, dropped = covering.thin(items)
    assert _covered(kept, PRODUCT, strength) == _covered(items, PRODUCT,
                                                         strength)
    assert len(kept) + len(dropped) == len(items) == 288
    # Far fewer cases: at least the largest set (pair) of values, and
    # a greedy cover stays within a small factor of it.
    assert {1: 4, 2: 16}[strength] <= len(kept) <= {1: 6, 2: 30}[strength]
    # In collection order, and the first case is always taken.
    assert kept[0] is items[0]
    assert kept == sorted(kept, key=items.index)


def test_functions_are_thinned_apart_and_marked_ones_whole():
    f = _cases("test_f", a=[1, 2, 3], b=[1, 2, 3])
    g = _cases("test_g", "every_case", a=[1, 2, 3], b=[1, 2, 3])
    single = _cases("test_h", a=[1, 2, 3, 4, 5])
    plain = [types.SimpleNamespace(nodeid="tests/test_x.py::test_plain",
                                   get_closest_marker=lambda m: None)]
    items = f + g + single + plain
    kept, dropped = covering.thin(items)
    assert [item for item in kept if item in f] == f[0::4]
    assert g[0] in kept and all(item in kept for item in g + single + plain)
    assert dropped == [item for item in f if item not in f[0::4]]
    # Pairs of two arguments are the whole product.
    f = _cases("test_f", "pairwise", a=[1, 2, 3], b=[1, 2, 3])
    assert covering.thin(f + g) == (f + g, [])


def test_unhashable_values_are_told_apart_by_their_text():
    items = _cases("test_f", shape=[[2, 3], [4]], padding=["same", "valid"])
    kept, _ = covering.thin(items)
    assert len(kept) == 2
    assert {tuple(i.callspec.params["shape"]) for i in kept} == {(2, 3), (4,)}


def test_cases_and_functions_named_are_kept():
    f = _cases("test_f", a=[1, 2, 3], b=[1, 2, 3])
    g = _cases("test_g", a=[1, 2, 3], b=[1, 2, 3])
    named = {f[1].nodeid, "tests/test_x.py::test_g"}
    kept, dropped = covering.thin(f + g, named)
    assert kept == [f[0], f[1], f[4], f[8]] + g
    assert dropped == [item for item in f if item not in kept]
