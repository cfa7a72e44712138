"""The MLP chambers, checked on the blocks they build: gated_mlp, numerical_mlp,
categorical_mlp, separable_mlp and none_flags (backend/chambers/).

Each MLP is run with the craft IR on rows given as {direction: value} (``one`` is 1 at
every position; the BOS row also has the BOS direction and the BOS state it was built
for), and compared with ``f`` applied directly or with the formula its docstring states.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

import rasplang as rl
from rasplang.backend.chambers import categorical_mlp, none_flags, numerical_mlp, separable_mlp
from rasplang.backend.chambers.gated_mlp import gated_mlp
from rasplang.backend.craft.bases import BasisDirection, VectorInBasis, VectorSpace, join
from rasplang.backend.spaces import ONE, BosState, bos_direction, categorical_space, numerical_space

BOS = bos_direction("BOS")
M = 100.0  # mlp_exactness


def at_bos(coords=None):
    """The chambers' BosState: ``one`` and BOS are 1, ``coords`` as given, others 0."""
    return BosState(BOS, dict(coords or {}))


def run(mlp, rows, out_dirs=None, hidden=False):
    """The MLP's output on rows ({direction: value}, ``one`` = 1) projected on
    ``out_dirs`` (default: what it writes), as a [rows, dims] array; with ``hidden``, the
    hidden units' pre-activations instead."""
    written = dict.fromkeys(d for row in rows for d in row)
    space = join(mlp.residual_space, VectorSpace(dict.fromkeys([ONE, *written])))
    x = np.zeros((len(rows), space.dim))
    for r, row in enumerate(rows):
        x[r, space.index_of(ONE)] = 1.0
        for d, v in row.items():
            x[r, space.index_of(d)] = v
    if hidden:
        return mlp.first(VectorInBasis(space, x)).magnitudes
    target = mlp.second.output_space if out_dirs is None else VectorSpace(out_dirs)
    return mlp(VectorInBasis(space, x)).project(target).magnitudes


def one_hot(values, value):
    """The one-hot of ``value`` over ``values`` (zeros for None), built by hand."""
    return np.array([float(value is not None and v == value) for v in values])


def onehots(space, values):
    """Rows setting one categorical direction of ``space`` per value (None: no row)."""
    return [{} if v is None else {BasisDirection(space.label, v): 1.0} for v in values]


# ------------------------------------------------------------------------- gated_mlp

A, B, C = (BasisDirection(n) for n in "abc")
O1, O2 = BasisDirection("o", 1), BasisDirection("o", 2)


def gated_example():
    """A gated MLP with a repeated input row, integer weights and a BOS state on a, b, c;
    returns it with its summed weights over (a, b, c, one), w_out and the BOS state."""
    rng = np.random.default_rng(0)
    in_dirs = [A, B, C, A, ONE]
    w_in = rng.integers(-3, 4, size=(5, 8)).astype(float)
    w_out = rng.integers(-2, 3, size=(8, 2)).astype(float)
    state = {A: 2.0, B: -1.0, C: 0.5}
    mlp = gated_mlp("g", in_dirs, w_in, [O1, O2], w_out, at_bos(state))
    summed = np.stack([w_in[0] + w_in[3], w_in[1], w_in[2], w_in[4]])  # a, b, c, one
    return mlp, summed, w_out, state


def test_gated_mlp_is_unchanged_at_real_positions():
    """Away from BOS the gated MLP is relu(x @ w_in) @ w_out, repeated rows summed."""
    mlp, w, w_out, _ = gated_example()
    xs = np.random.default_rng(1).integers(-4, 5, size=(30, 3)).astype(float)
    got = run(mlp, [{A: a, B: b, C: c} for a, b, c in xs], [O1, O2])
    full = np.hstack([xs, np.ones((len(xs), 1))])
    assert np.array_equal(got, np.maximum(full @ w, 0) @ w_out)


def test_gated_mlp_is_zero_at_bos_with_margin_one():
    """At BOS every unit is min(p, 0) - 1, or p where p <= -1 already (no gate), so 0
    under input moves below 1."""
    # p: the unit's ungated pre-activation at BOS. Moves that shift any pre-activation by
    # less than 1 keep the output exactly 0; a move of 3/2 on a margin-1 unit fires it.
    mlp, w, w_out, state = gated_example()
    bos_row = {BOS: 1.0, **state}
    p = np.array([state[A], state[B], state[C], 1.0]) @ w
    assert (p >= 0).any() and (p <= -1).any()  # B_h = max(0, p_h) + 1, and no gate
    space = join(mlp.residual_space)
    x = np.zeros(space.dim)
    for d, v in {ONE: 1.0, **bos_row}.items():
        x[space.index_of(d)] = v
    want = np.where(p > -1, np.minimum(p, 0) - 1, p)
    assert np.array_equal(mlp.first(VectorInBasis(space, x)).magnitudes, want)
    gate = mlp.first.matrix[space.index_of(BOS)]
    assert np.array_equal(gate == 0, p <= -1)  # ungated exactly where already off
    assert not run(mlp, [bos_row], [O1, O2]).any()
    l1 = np.abs(w[:3]).sum(axis=0)  # how far a unit moves per unit of input error
    rng = np.random.default_rng(2)
    moves = [rng.uniform(-1, 1, 3) * 0.99 / l1.max() for _ in range(50)]
    moves += [np.sign(w[:3, h]) * 0.99 / l1.max() for h in range(w.shape[1])]
    rows = [{BOS: 1.0, **{d: state[d] + e for d, e in zip((A, B, C), move)}}
            for move in moves]
    assert not run(mlp, rows, [O1, O2]).any()
    h = next(h for h in range(w.shape[1]) if p[h] >= 0 and w_out[h].any() and l1[h])
    push = np.sign(w[:3, h]) * 1.5 / l1[h]
    row = {BOS: 1.0, **{d: state[d] + e for d, e in zip((A, B, C), push)}}
    assert run(mlp, [row], [O1, O2]).any()


# ------------------------------------------------------------------- numerical_mlp

XS = [-3.0, -1.25, 0.0, 0.1, 0.7, 2.0, 5.5, 40.0]


def parity_of_square(x):
    return round(x * x) % 3  # 0, 2, 0, 0, 0, 1, 0, 1 on XS: changes in some gaps only


def step_tolerance(xs, f):
    """g / 2 * (1 - 1/M) for the closest pair of adjacent values where f changes."""
    gaps = [b - a for a, b in itertools.pairwise(xs) if f(a) != f(b)]
    return min(gaps) / 2 * (1 - 1 / M)


@pytest.mark.parametrize("numerical_out", [False, True])
def test_discretising_mlp_is_exact_at_values_and_within_tolerance(numerical_out):
    """Discretisation gives enc(f(x_j)) at x_j and x_j +- 0.99 tolerance; 0 at BOS."""
    # Exact up to float rounding (1e-9).
    inp = numerical_space("x", tuple(XS))
    ys = [parity_of_square(x) for x in XS]
    outs = (0, 1, 2)
    out = numerical_space("y", outs) if numerical_out else categorical_space("y", outs)
    mlp = numerical_mlp.discretising_mlp("y", inp, XS, parity_of_square, out, M, at_bos())
    want = np.array([[y] if numerical_out else one_hot(outs, y) for y in ys])
    tol = step_tolerance(XS, parity_of_square)
    for shift in (0.0, 0.99 * tol, -0.99 * tol):
        got = run(mlp, [{inp.directions[0]: x + shift} for x in XS])
        assert np.allclose(got, want, rtol=0, atol=1e-9)
    assert not run(mlp, [{BOS: 1.0}]).any()


def test_discretising_mlp_resets_input_error():
    """Inputs closer than the tolerance give the same output: error does not pass."""
    inp = numerical_space("x", tuple(XS))
    out = categorical_space("y", (0, 1, 2))
    mlp = numerical_mlp.discretising_mlp("y", inp, XS, parity_of_square, out, M, at_bos())
    tol = step_tolerance(XS, parity_of_square)
    rng = np.random.default_rng(3)
    noisy = [{inp.directions[0]: x + e} for x in XS for e in rng.uniform(-tol, tol, 5) * 0.99]
    got = run(mlp, noisy)
    assert np.allclose(got, np.repeat(run(mlp, [{inp.directions[0]: x} for x in XS]), 5, 0),
                       rtol=0, atol=1e-9)


def _float32_outputs(xs, ys):
    """The discretising MLP for ``f(xs) = ys`` run in float32 on ``xs`` (one-hot rows)."""
    inp = numerical_space("x", tuple(xs))
    out = categorical_space("y", tuple(ys))
    mlp = numerical_mlp.discretising_mlp("y", inp, xs, ys, out, M, at_bos())
    space = join(mlp.residual_space)
    w_in = mlp.first.embedded(space).astype(np.float32)  # (dim, hidden)
    w_out = mlp.second.matrix.astype(np.float32)  # (hidden, len(ys))
    cols = mlp.second.output_space.indices(out.space)
    v = np.zeros((len(xs), space.dim), dtype=np.float32)
    v[:, space.index_of(ONE)] = 1
    v[:, space.index_of(inp.directions[0])] = xs
    return (np.maximum(v @ w_in, 0) @ w_out)[:, cols]  # (len(xs), len(ys))


def test_discretising_mlp_is_exact_in_float32_where_accepted_for_float32():
    """What discretisation_problem accepts with float32's rounding is exact in float32."""
    xs, ys = [0.0, 1.0, 2.5, 7.0], [0, 1, 2, 3]
    assert numerical_mlp.discretisation_problem(
        xs, ys, 0.0, M, rounding=numerical_mlp.ROUNDING32) is None
    assert np.allclose(_float32_outputs(xs, ys), np.eye(4), rtol=0, atol=1e-3)


def test_float32_rounding_is_flagged_where_float32_is_not_exact():
    """0, 10^4 and 10^4 + 10^-3: fine in float64, wrong in float32; the float32 check
    says so, and a compiled model refuses to run in float32 (naming the node)."""
    xs, ys = [0.0, 10000.0, 10000.001], [0, 1, 2]
    assert numerical_mlp.discretisation_problem(xs, ys, 0.0, M) is None
    assert not np.allclose(_float32_outputs(xs, ys), np.eye(3), rtol=0, atol=1e-3)
    assert numerical_mlp.discretisation_problem(
        xs, ys, 0.0, M, rounding=numerical_mlp.ROUNDING32) is not None
    vals = {"a": 0.0, "b": 10000.0, "c": 10000.001}
    x = rl.numerical(rl.Map(lambda t: vals[t], rl.tokens, simplify=False))
    y = rl.Map(lambda v: 0 if v < 1 else (1 if v < 10000.0005 else 2), x,
               simplify=False).named("step")
    model = rl.compile(y, "abc", 4, optimize=False)
    assert model.run([["a", "b", "c"]]) == [[0, 1, 2]]
    with pytest.raises(ValueError, match=r"exact in float64 only \(step: "):
        model.run([["a", "b", "c"]], dtype=np.float32)
    # fused, the step reads the tokens themselves: no threshold, exact in float32 too
    fused = rl.compile(y, "abc", 4)
    assert fused.run([["a", "b", "c"]], dtype=np.float32) == [[0, 1, 2]]


def test_discretising_mlp_with_an_always_none_input():
    """An always-None input gives the None flag where it is None, and 0 at BOS."""
    inp = numerical_space("x", (None,))
    out = numerical_space("y", (None,))
    mlp = numerical_mlp.discretising_mlp("y", inp, [], [], out, M, at_bos())
    got = run(mlp, [{inp.directions[1]: 1.0}, {BOS: 1.0}], out.directions)
    assert got.tolist() == [[0.0, 1.0], [0.0, 0.0]]


def test_affine_mlp_is_exact():
    """The affine MLP is sum_j a_j value_j + const, with the documented units."""
    # A numerical and a categorical input, on every value pair and between values; one
    # unit per fixed-sign input, two otherwise, one for const.
    x = numerical_space("x", (-3.0, -0.5, 2.0, 5.0))
    c = categorical_space("c", (1, 2, 4))
    terms = [(x, 2.5, (-3.0, 5.0)), (c, -1.0, (1.0, 4.0))]
    out = numerical_space("y", ())
    mlp = numerical_mlp.affine_mlp("y", terms, 0.75, out, at_bos())
    assert mlp.hidden_dim == 2 + 1 + 1
    grid = [(xv, cv) for xv in (*x.values, -2.9, 0.3, 4.99) for cv in c.values]
    rows = [{x.directions[0]: xv, BasisDirection("c", cv): 1.0} for xv, cv in grid]
    got = run(mlp, rows, out.directions)[:, 0]
    assert np.allclose(got, [2.5 * xv - cv + 0.75 for xv, cv in grid], rtol=1e-14, atol=1e-14)
    assert not run(mlp, [{BOS: 1.0}], out.directions).any()


def test_affine_mlp_none_input():
    """A None input switches the affine units off and writes the None flag."""
    x = numerical_space("x", (None, -2.0, 3.0))
    out = numerical_space("y", (None, -3.0, 7.0))
    mlp = numerical_mlp.affine_mlp("y", [(x, 2.0, (-2.0, 3.0))], 1.0, out, at_bos())
    value, flag = x.directions
    got = run(mlp, [{value: -2.0}, {value: 3.0}, {flag: 1.0}, {BOS: 1.0}], out.directions)
    assert np.allclose(got, [[-3, 0], [7, 0], [0, 1], [0, 0]], rtol=0, atol=1e-14)


def test_affine_mlp_always_none_input():
    """An always-None input (no values, factor 0) gives only the None flag."""
    x = numerical_space("x", (None,))
    out = numerical_space("y", (None,))
    mlp = numerical_mlp.affine_mlp("y", [(x, 0.0, (0.0, 0.0))], 0.0, out, at_bos())
    got = run(mlp, [{x.directions[1]: 1.0}, {BOS: 1.0}], out.directions)
    assert got.tolist() == [[0.0, 1.0], [0.0, 0.0]]


def test_affine_fit_finds_a_and_c_or_refuses():
    """affine_fit returns (a, c) for affine values, and None for others, bools or None."""
    xs = [-1.0, 0.0, 2.0, 3.5]
    assert numerical_mlp.affine_fit(xs, [-3 * x + 0.5 for x in xs]) == pytest.approx((-3, 0.5))
    assert numerical_mlp.affine_fit(xs, [x * x for x in xs]) is None
    assert numerical_mlp.affine_fit([0.0, 1.0], [False, True]) is None
    assert numerical_mlp.affine_fit(xs, [1.0, None, 2.0, 3.0]) is None
    assert numerical_mlp.affine_fit([], []) == (0.0, 0.0)
    assert numerical_mlp.affine_fit([4.0], [9]) == (0.0, 9.0)


def test_discretisation_problem_refuses_values_an_ulp_apart():
    """discretisation_problem refuses values an ulp apart where f changes."""
    # Accepted: the same pair where f does not change, and values far apart.
    lo = 0.6
    hi = math.nextafter(lo, 1.0)
    assert "cannot discretise" in numerical_mlp.discretisation_problem([lo, hi], [0, 1], 0.0, M)
    assert numerical_mlp.discretisation_problem([lo, hi], [5, 5], 0.0, M) is None
    assert numerical_mlp.discretisation_problem([0.0, lo, 1.0], [0, 0, 1], 0.0, M) is None


def test_discretisation_problem_threshold_is_half_the_tolerance():
    """An input error is accepted below half the tolerance and refused above."""
    # Gap 1 at M = 100: the tolerance is 0.495.
    assert numerical_mlp.discretisation_problem([0.0, 1.0], [0, 1], 0.24, M) is None
    assert numerical_mlp.discretisation_problem([0.0, 1.0], [0, 1], 0.25, M) is not None


# ----------------------------------------------------------------- categorical_mlp

LETTERS = ("a", "b", "c", "d")


@pytest.mark.parametrize("numerical_out", [False, True])
def test_map_lookup_table(numerical_out):
    """A categorical Map writes enc(f(x)); a None input or BOS writes nothing."""
    # f gives None for 'd' (zero one-hot, or the flag); one unit per distinct output.
    table = {"a": 1, "b": 2, "c": 1, "d": None}
    inp = categorical_space("x", (None, *LETTERS))
    if numerical_out:  # None output: the flag
        out = numerical_space("y", (None, 1, 2))
        want = [[1, 0], [2, 0], [1, 0], [0, 1], [0, 1], [0, 0]]
    else:
        out = categorical_space("y", (None, 1, 2))
        want = [one_hot((1, 2), table[v]) for v in LETTERS] + [[0, 0], [0, 0]]
    mlp = categorical_mlp.map_categorical_mlp("y", inp, out, table.get, at_bos())
    rows = [*onehots(inp, LETTERS), {}, {BOS: 1.0}]
    assert np.array_equal(run(mlp, rows, out.directions), np.array(want, dtype=float))
    # one unit per distinct output (None's too when its encoding is the flag), and the
    # unit writing the flag for a None input
    assert mlp.hidden_dim == (4 if numerical_out else 2)


FST, SND = (0, 1, 2), ("p", "q")


def layouts(f):
    """The three layouts of the module docstring for f on FST x SND, built by hand."""
    pairs = [(i, (j,), f(a, b)) for i, a in enumerate(FST) for j, b in enumerate(SND)]
    by_fst = [(i, tuple(j for j, b in enumerate(SND) if f(a, b) == y), y)
              for i, a in enumerate(FST) for y in dict.fromkeys(f(a, b) for b in SND)]
    by_snd = [(j, tuple(i for i, a in enumerate(FST) if f(a, b) == y), y)
              for j, b in enumerate(SND) for y in dict.fromkeys(f(a, b) for a in FST)]
    return {"pairs": pairs, "by_fst": by_fst, "by_snd": by_snd}


def sequence_map_rows():
    """Every (fst, snd) pair, then pairs with a None input, then BOS."""
    pairs = [{BasisDirection("f", a): 1.0, BasisDirection("s", b): 1.0}
             for a in FST for b in SND]
    return pairs + [{BasisDirection("f", 1): 1.0}, {BasisDirection("s", "q"): 1.0}, {},
                    {BOS: 1.0}]


def test_sequence_map_layouts_give_the_same_table():
    """All three SequenceMap layouts write enc(f(x, y)); None or BOS: nothing."""
    def f(a, b):
        return (a + (b == "q")) % 3

    fst = categorical_space("f", (None, *FST))
    snd = categorical_space("s", (None, *SND))
    out = categorical_space("y", (0, 1, 2))
    want = [one_hot((0, 1, 2), f(a, b)) for a in FST for b in SND] + [[0, 0, 0]] * 4
    for name, units in layouts(f).items():
        layout = categorical_mlp.TableLayout(name, units)
        mlp = categorical_mlp.sequence_map_categorical_mlp("y", fst, snd, out, layout,
                                                           at_bos())
        got = run(mlp, sequence_map_rows(), out.directions)
        assert np.array_equal(got, np.array(want)), name


@pytest.mark.parametrize(("f", "name", "units"), [
    (lambda a, b: a, "by_fst", 3),
    (lambda a, b: b, "by_snd", 2),
    (lambda a, b: f"{a}{b}", "pairs", 6),
])
def test_table_layout_takes_the_fewest_units(f, name, units):
    """table_layout picks the layout with the fewest units."""
    fst, snd = categorical_space("f", FST), categorical_space("s", SND)
    values = tuple(dict.fromkeys(f(a, b) for a in FST for b in SND))
    layout = categorical_mlp.table_layout(fst, snd, categorical_space("y", values), f)
    assert (layout.name, len(layout.units)) == (name, units)


def test_sequence_map_numerical_output_and_none():
    """A numerical SequenceMap gives f, or the None flag where f or an input is None."""
    def f(a, b):
        return None if (a, b) == (2, "p") else 10 * a + (b == "q")

    fst = categorical_space("f", (None, *FST))
    snd = categorical_space("s", (None, *SND))
    values = tuple(f(a, b) for a in FST for b in SND)
    out = numerical_space("y", values)
    want = [[0, 1] if y is None else [y, 0] for y in values] + [[0, 1]] * 3 + [[0, 0]]
    layout = categorical_mlp.table_layout(fst, snd, out, f)
    mlp = categorical_mlp.sequence_map_categorical_mlp("y", fst, snd, out, layout, at_bos())
    assert np.array_equal(run(mlp, sequence_map_rows(), out.directions), np.array(want, float))


def test_product_mlp_three_parts():
    """product_mlp writes the tuple's one-hot; a None part or BOS writes nothing."""
    # C order over three parts; the BOS row holds a nonzero state on two parts.
    parts = [categorical_space("p", ("x", "y")), categorical_space("q", (0, 1, 2)),
             categorical_space("r", ("u", "v"))]
    tuples = tuple(itertools.product(*(p.values for p in parts)))
    out = categorical_space("t", tuples)
    state = {BasisDirection("p", "y"): 1.0, BasisDirection("q", 2): 1.0}
    mlp = categorical_mlp.product_mlp("t", parts, out, at_bos(state))
    rows = [{BasisDirection(p.label, v): 1.0 for p, v in zip(parts, t)} for t in tuples]
    assert np.array_equal(run(mlp, rows, out.directions), np.eye(len(tuples)))
    partial = [{BasisDirection("p", "x"): 1.0, BasisDirection("q", 1): 1.0},
               {BOS: 1.0, **state}]
    assert not run(mlp, partial, out.directions).any()


# ------------------------------------------------------------------- separable_mlp

def exact(value):
    return Fraction(value)


def test_split_finds_u_and_v_exactly():
    """split finds u, v with u[i] + v[j] == f(x_i, y_j) as rationals."""
    # For ints, and for floats that add exactly.
    cases = [((1, 2, 5), (0, 3, 4), lambda x, y: x - 2 * y),
             ((0.5, 1.25, -3.0), (0.0, 0.75), lambda x, y: 2 * x + y)]
    for xs, ys, f in cases:
        s = separable_mlp.split(xs, ys, f)
        assert s is not None
        for (i, x), (j, y) in itertools.product(enumerate(xs), enumerate(ys)):
            assert s.u[i] + s.v[j] == exact(f(x, y))
        assert set(s.outputs) == {exact(f(x, y)) for x in xs for y in ys}


@pytest.mark.parametrize(("xs", "ys", "f"), [
    ((1, 2, 3), (1, 2), lambda x, y: x * y),  # not a sum
    ((1, 2), (1, 2), lambda x, y: x < y),  # bools
    ((1, 2), (0, 1), lambda x, y: x + y if y else float(x)),  # int and float outputs
    ((1, 2), (0, 1), lambda x, y: None if x == y else x + y),  # None
    ((1, 2), (0, 1), lambda x, y: str(x + y)),  # not numbers
    ((1.0, 2.0), (0.0, 1.0), lambda x, y: x + y if x < 2 else math.inf),  # inf
    ((1.0, 2.0), (0.0, 1.0), lambda x, y: x + y if x < 2 else math.nan),  # nan
    ((), (0, 1), lambda x, y: x + y),  # no values
])
def test_split_refuses_non_sums(xs, ys, f):
    """split returns None for every documented non-case."""
    assert separable_mlp.split(xs, ys, f) is None


def test_split_refuses_float_sums_that_round():
    """x + y on floats whose sums round is not a sum in exact rational arithmetic."""
    xs, ys = (0.1, 0.2), (0.0, 0.7)
    residual = (exact(0.2 + 0.7) - exact(0.2 + 0.0) - exact(0.1 + 0.7) + exact(0.1 + 0.0))
    assert residual != 0
    assert separable_mlp.split(xs, ys, lambda x, y: x + y) is None


@pytest.mark.parametrize("numerical_out", [False, True])
def test_separable_mlp_is_f_on_every_pair(numerical_out):
    """The separable MLP writes enc(f(x, y)); None where an input is; 0 at BOS."""
    xs, ys = (1, 2, 3, 4, 5), (0, 1, 2, 3)

    def f(x, y):
        return x - y

    fst = categorical_space("f", (None, *xs))
    snd = categorical_space("s", ys)
    values = tuple(sorted({f(x, y) for x in xs for y in ys}))
    s = separable_mlp.split(fst.values, snd.values, f)
    assert separable_mlp.margin_problem(s, fst, snd, M, not numerical_out) is None
    if numerical_out:
        out = numerical_space("y", (None, *values))
        want = [[f(x, y), 0] for x in xs for y in ys] + [[0, 1], [0, 0]]
    else:
        out = categorical_space("y", (None, *values))
        want = [one_hot(values, f(x, y)) for x in xs for y in ys]
        want += [one_hot(values, None)] * 2
    mlp = separable_mlp.separable_mlp("y", fst, snd, s, out, M, at_bos())
    rows = [{BasisDirection("f", x): 1.0, BasisDirection("s", y): 1.0} for x in xs for y in ys]
    rows += [{BasisDirection("s", 2): 1.0}, {BOS: 1.0}]
    got = run(mlp, rows, out.directions)
    assert np.allclose(got, np.array(want, float), rtol=0, atol=1e-9)
    if not numerical_out:
        assert mlp.hidden_dim == 2 * len(values) - 1  # categorical None: no flag unit


def margin(xs, ys, error=0.0, numerical_out=False):
    """margin_problem for x + y on xs x ys, the first input off by ``error``."""
    s = separable_mlp.split(xs, ys, lambda x, y: x + y)
    fst, snd = categorical_space("f", xs, error=error), categorical_space("s", ys)
    return separable_mlp.margin_problem(s, fst, snd, M, not numerical_out)


def test_margin_problem_refuses_what_it_should():
    """margin_problem refuses input error, float32 range and terms past 2**53."""
    # Input error: sum|u| (e + 2^-20) + sum|v| 2^-20 against g (M - 1) / (4M) = 0.2475
    # for gap 1; float32 at range 1e4 with gap 1; a numerical output is never refused.
    small = ((0, 1, 2), (0, 1))  # sum|u| = 3, sum|v| = 1
    assert margin(*small, error=0.08) is None
    assert "off by" in margin(*small, error=0.085)
    assert margin((0, 10**2), (0, 1)) is None
    assert "float32" in margin((0, 10**4), (0, 1))  # saturated steps' rounding
    assert "float32" in margin((0, 10**5), (0, 1))
    assert "2**53" in margin((0, 2**60), (0, 1))
    assert margin(*small, error=0.5, numerical_out=True) is None


def test_what_margin_problem_accepts_is_exact():
    """What margin_problem accepts is exact: steps 0 or 1 at its edge (to float32's
    rounding of a saturated step, at most FLOAT32_STEP_ERROR); terms of 10^4 with gap 1
    are refused in float32, where a saturated step kept 0.01 of rounding."""
    from rasplang.backend.chambers.numerical_mlp import FLOAT32_STEP_ERROR

    big = separable_mlp.split((0, 10**4), (0, 1), lambda x, y: x + y)
    assert "rounded by up to" in separable_mlp.margin_problem(
        big, categorical_space("f", (0, 10**4)), categorical_space("s", (0, 1)), M, True)
    # Inputs off by 0.08 per coordinate (every sign pattern) in float64; terms up to
    # 10^2 with gap 1 in float32.
    for xs, error, dtype in (((0, 1, 2), 0.08, np.float64), ((0, 10**2), 0.0, np.float32)):
        ys = (0, 1)
        fst, snd = categorical_space("f", xs, error=error), categorical_space("s", ys)
        s = separable_mlp.split(xs, ys, lambda x, y: x + y)
        assert separable_mlp.margin_problem(s, fst, snd, M, True) is None
        values = tuple(sorted({x + y for x in xs for y in ys}))
        out = categorical_space("y", values)
        mlp = separable_mlp.separable_mlp("y", fst, snd, s, out, M, at_bos())
        space = join(mlp.residual_space)
        w_in = mlp.first.embedded(space).astype(dtype)  # (dim, hidden)
        w_out = mlp.second.matrix.astype(dtype)  # (hidden, out dim)
        cols = mlp.second.output_space.indices(out.space)
        for x, y in itertools.product(xs, ys):
            for signs in itertools.product((-1.0, 1.0), repeat=len(xs)):
                v = np.zeros(space.dim, dtype=dtype)
                v[space.index_of(ONE)] = 1
                v[space.index_of(BasisDirection("s", y))] = 1
                for value, sign in zip(xs, signs):
                    v[space.index_of(BasisDirection("f", value))] = (value == x) + sign * error
                got = (np.maximum(v @ w_in, 0) @ w_out)[cols]
                assert got.dtype == dtype
                assert np.abs(got - one_hot(values, x + y)).max() <= (
                    0 if dtype == np.float64 else FLOAT32_STEP_ERROR), (x, y, signs)


# ---------------------------------------------------------------------- none_flags

NUM = numerical_space("n", (None, -2.0, 3.0))
CAT = categorical_space("c", (None, "p", "q"))
FIXED = categorical_space("k", ("p", "q"))
# Rows for every combination of (n, c): None or a value.
NONE_CASES = [(n, c) for n in (None, -2.0, 3.0) for c in (None, "p", "q")]


def none_rows():
    rows = []
    for n, c in NONE_CASES:
        row = {NUM.directions[1]: 1.0} if n is None else {NUM.directions[0]: n}
        if c is not None:
            row[BasisDirection("c", c)] = 1.0
        rows.append(row)
    return rows


def test_indicators_count_the_none_inputs():
    """The indicator rows sum to the number of None inputs."""
    # A non-nullable input and a repeated space add nothing.
    dirs, weights = none_flags.indicators([NUM, CAT, FIXED, NUM])
    out = BasisDirection("count")
    mlp = gated_mlp("i", dirs, np.hstack([weights, -weights]), [out], np.array([[1.0], [-1.0]]),
                    at_bos())
    got = run(mlp, none_rows(), [out])[:, 0]
    assert got.tolist() == [float((n is None) + (c is None)) for n, c in NONE_CASES]


def test_gate_switches_units_off_where_an_input_is_none():
    """Gated units are exactly 0 where an input is None and unchanged elsewhere."""
    # units: relu(n + 2), relu(2 [c = p] - n), relu(3 - n + [c = q]); pre-activations
    # where n or c is None are at most 5, 2 and 5 (n reads 0 when None, else -2..3).
    in_dirs = [NUM.directions[0], BasisDirection("c", "p"), BasisDirection("c", "q"), ONE]
    w_in = np.array([[1.0, -1.0, -1.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [2.0, 0.0, 3.0]])
    dirs, gated = none_flags.gate(in_dirs, w_in, [NUM, CAT], np.array([5.0, 2.0, 5.0]))
    outs = [BasisDirection("u", i) for i in range(3)]
    mlp = gated_mlp("u", dirs, gated, outs, np.eye(3), at_bos())
    got = run(mlp, none_rows(), outs)
    pre = run(mlp, none_rows(), hidden=True)
    for row, units, (n, c) in zip(got, pre, NONE_CASES):
        if n is None or c is None:
            assert not row.any() and units.max() <= -1  # margin 1
        else:
            want = [max(n + 2, 0), max(2 * (c == "p") - n, 0), max(3 - n + (c == "q"), 0)]
            assert row.tolist() == want


def test_none_units_write_the_flag_where_any_input_is_none():
    """The None units write the numerical output's flag, exactly [some input is None]."""
    out = numerical_space("y", (None, 1.0))
    dirs, w_in, w_out = none_flags.none_units([NUM, CAT], out)
    mlp = gated_mlp("y", dirs, w_in, out.directions, w_out, at_bos())
    got = run(mlp, none_rows() + [{BOS: 1.0}], out.directions)
    want = [[0.0, float(n is None or c is None)] for n, c in NONE_CASES] + [[0.0, 0.0]]
    assert got.tolist() == want


def test_none_unit_count():
    """none_unit_count: 2 for two nullable inputs, 1 for one, else 0."""
    # 0 for a categorical output (its None is the zero vector).
    num_out = numerical_space("y", (None, 1.0))
    assert none_flags.none_unit_count([NUM, CAT], num_out) == 2
    assert none_flags.none_unit_count([NUM, FIXED], num_out) == 1
    assert none_flags.none_unit_count([FIXED], num_out) == 0
    assert none_flags.none_unit_count([NUM, CAT], categorical_space("y", (None, 1))) == 0


@pytest.mark.parametrize("seed", range(4))
def test_step_rounding_bounds_the_float64_error(seed):
    """A discretisation over values near 1,000 with a few gaps of 1e-6 to 1e-4 among wide
    ones, and numerical steps of 0 to 35: its float64 output at every value is within
    `step_rounding`, which sizes each step by its own slope."""
    rng = np.random.default_rng(seed)
    wide = 1000.0 + np.cumsum(rng.uniform(1, 3, 60)) * 37.0
    xs = sorted({*wide.tolist(), *(wide[[5, 20, 40]] + rng.uniform(1e-6, 1e-4, 3)).tolist()})
    ys = [float(np.floor(x * 7.3) % 11) * 3.5 for x in xs]
    inp, out = numerical_space("x", tuple(xs)), numerical_space("y", tuple(sorted(set(ys))))
    mlp = numerical_mlp.discretising_mlp("y", inp, xs, ys, out, M, at_bos())
    got = run(mlp, [{inp.directions[0]: x} for x in xs])[:, 0]
    assert np.abs(got - np.array(ys)).max() <= numerical_mlp.step_rounding(xs, [ys], 0.0, M)
