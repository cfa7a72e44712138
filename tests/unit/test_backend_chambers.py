"""Chambers for the full language: products, selector tables, None flags, conversions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import rasplang as rl
from rasplang.backend.chambers.categorical_mlp import map_categorical_mlp, product_mlp
from rasplang.backend.chambers.numerical_mlp import discretising_mlp
from rasplang.backend.chambers.selector import selector_terms
from rasplang.backend.craft.bases import VectorInBasis, join
from rasplang.backend.derived import Product
from rasplang.backend.encoders import OutputEncoder
from rasplang.backend.spaces import (
    ONE,
    BosState,
    bos_direction,
    categorical_space,
    numerical_space,
)

BOS = bos_direction("BOS")


def run_mlp(mlp, rows):
    """The MLP on a batch of residual rows given as {direction: value} dicts (``one`` = 1)."""
    space = join(mlp.residual_space)
    x = np.zeros((len(rows), space.dim))
    for r, row in enumerate(rows):
        x[r, space.index_of(ONE)] = 1.0
        for d, v in row.items():
            x[r, space.index_of(d)] = v
    return mlp(VectorInBasis(space, x))


def test_product_mlp_is_the_tuple_one_hot():
    """product_mlp writes the one-hot of every tuple of values, nothing for a None part,
    and nothing at BOS."""
    a = categorical_space("a", ("x", "y"))
    b = categorical_space("b", (0, 1, 2))
    values = tuple(itertools.product(a.values, b.values))
    out = categorical_space("ab", values)
    mlp = product_mlp("ab", [a, b], out, BosState(BOS))
    rows = [{a.directions[i]: 1.0, b.directions[j]: 1.0} for i in range(2) for j in range(3)]
    got = run_mlp(mlp, rows).project(out.space).magnitudes
    assert np.array_equal(got, np.eye(6))
    none_part = run_mlp(mlp, [{a.directions[0]: 1.0}, {BOS: 1.0}]).project(out.space)
    assert not none_part.magnitudes.any()


class _Ctx:
    """A SelectorContext over fixed categorical value sets."""

    def __init__(self, values):
        self.values = values

    def resolve(self, sop):
        return sop

    def size(self, sop):
        if isinstance(sop, Product):
            return int(np.prod([self.size(p) for p in sop.parts]))
        return len(self.values[sop])

    def table(self, select, keys, queries):
        return np.array([[bool(select.predicate(k, q)) for k in self.values[keys]]
                         for q in self.values[queries]])

    def product(self, parts):
        return Product(parts)

    def unbuilt(self, sop):
        return False

    def label(self, node):
        return node.label


def test_product_selector_table_matches_the_predicate():
    """A nested `|`/`~` selector's product table equals the boolean formula on every
    (query tuple, key tuple)."""
    t, i = rl.tokens, rl.indices
    lt, eq = rl.select(t, t, "<"), rl.select(t, t, "==")
    before = rl.select(i, i, "<")
    sel = ~(lt | (eq & before))
    ctx = _Ctx({t: ("a", "b", "c"), i: (0, 1, 2, 3)})
    [term] = selector_terms(sel, ctx)
    assert isinstance(term.keys, Product) and term.keys.parts == (t, i)
    pairs = list(itertools.product(ctx.values[t], ctx.values[i]))
    expected = [[not (kt < qt or (kt == qt and ki < qi)) for kt, ki in pairs]
                for qt, qi in pairs]
    assert np.array_equal(term.table, np.array(expected, dtype=float))


def test_and_across_sops_stays_a_sum_of_terms():
    """An `and` of selectors on different SOps needs no product: one term per SOp pair."""
    t, i = rl.tokens, rl.indices
    ctx = _Ctx({t: ("a", "b"), i: (0, 1, 2)})
    terms = selector_terms(rl.select(t, t, "==") & rl.select(i, i, "<"), ctx)
    assert [(x.keys, x.queries) for x in terms] == [(t, t), (i, i)]


def test_discretising_mlp_keeps_none():
    """A nullable numerical input: exact values, and None (flag 1, value 0) switches every
    unit off and writes the output's None flag."""
    inp = numerical_space("x", (None, 0.5, 1.0, 2.0))
    out = numerical_space("y", (None, 1.0, 4.0))
    xs = [0.5, 1.0, 2.0]
    ys = [None, 1.0, 4.0]  # f(0.5) is None too
    mlp = discretising_mlp("y", inp, xs, ys, out, 100.0, BosState(BOS))
    value, flag = inp.directions
    rows = [{value: x} for x in xs] + [{flag: 1.0}, {BOS: 1.0}]
    got = run_mlp(mlp, rows).project(out.space).magnitudes
    assert np.allclose(got, [[0, 1], [1, 0], [4, 0], [0, 1], [0, 0]])


def test_categorical_map_writes_a_numerical_none_flag():
    """A categorical None input (the zero vector) gives the numerical output's None flag."""
    inp = categorical_space("c", (None, "a", "b"))
    out = numerical_space("n", (None, 2.0, 3.0))
    mlp = map_categorical_mlp("n", inp, out, lambda v: {"a": 2.0, "b": 3.0}[v], BosState(BOS))
    rows = [{inp.directions[0]: 1.0}, {inp.directions[1]: 1.0}, {}]
    got = run_mlp(mlp, rows).project(out.space).magnitudes
    assert np.allclose(got, [[2, 0], [3, 0], [0, 1]])


def test_output_encoder_decodes_the_none_flag():
    """A nullable numerical output decodes None where its flag logit is above 1/2."""
    enc = OutputEncoder(True, (None,))
    assert enc.decode(np.array([[2.5, 0.0], [0.0, 1.0]])).tolist() == [2.5, None]
    assert OutputEncoder(True).decode(np.array([[2.5]])).tolist() == [2.5]


@pytest.mark.parametrize("causal", [False, True])
def test_inserted_blocks_appear_in_the_layer_map(causal):
    """Conversions and products have circuit steps (layer, MLP units, residual writes)."""
    frac = rl.numerical(rl.Aggregate(rl.select(rl.indices, rl.indices, "<="),
                                     rl.numerical(rl.tokens == "a"), default=0)).named("frac")
    sel = rl.select(frac, frac, "==") | rl.select(rl.indices, rl.indices, "<")
    model = rl.compile(rl.selector_width(sel), "ab", 4, causal=causal)
    for label in ("frac:categorical", "(frac:categorical, indices)"):
        [step] = model.circuit[label]
        assert step.sublayer == "mlp" and step.hidden and step.writes
        assert all(model.residual_labels[i].startswith(label) for i in step.writes)
