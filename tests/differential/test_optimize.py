"""``optimize=True`` (fusion and folding) against ``optimize=False`` (one block per node):
both exact against the interpreter, the optimized model never deeper, its circuit
naming where every fused node went."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rasplang as rl
from rasplang import lib
from rasplang.backend import CompilerWarning
from tests.property.test_compiler_random import check_compilable
from tests.strategies import programs

NAMES = sorted(lib.PROGRAMS)


def _compile(program, vocab, n, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        return rl.compile(program, vocab, n, **kwargs)


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_library_exact_both_ways(name, optimize):
    """Every library program, exhaustively at max_seq_len 5, in float64 and float32."""
    entry = lib.PROGRAMS[name]
    program = entry.build(5)
    model = _compile(program, entry.vocab, 5, optimize=optimize)
    for dtype in (np.float64, np.float32):
        if dtype == np.float32 and model.config.float64_only:
            with pytest.raises(ValueError, match="float64 only"):
                rl.verify(program, entry.vocab, 5, model=model, dtype=dtype, progress=False)
            continue
        report = rl.verify(program, entry.vocab, 5, model=model, dtype=dtype, progress=False)
        assert report.ok and report.exhaustive, report


@pytest.mark.parametrize("name", NAMES)
def test_library_float32_at_16(name):
    """The optimized library in float32 at max_seq_len 16 (300 sampled inputs)."""
    entry = lib.PROGRAMS[name]
    program = entry.build(16)
    model = _compile(program, entry.vocab, 16)
    assert not model.config.float64_only, model.config.float64_only
    report = rl.verify(program, entry.vocab, 16, model=model, dtype=np.float32, samples=300,
                       exhaustive=False, progress=False)
    assert report.ok, report


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_library_float32_at_40(name):
    """The optimized library in float32 at max_seq_len 40 (200 sampled inputs)."""
    entry = lib.PROGRAMS[name]
    program = entry.build(40)
    model = _compile(program, entry.vocab, 40)
    if model.config.float64_only:  # refused in float32, with the reason
        with pytest.raises(ValueError, match="float64 only"):
            rl.verify(program, entry.vocab, 40, model=model, dtype=np.float32, samples=10,
                      exhaustive=False, progress=False)
        return
    report = rl.verify(program, entry.vocab, 40, model=model, dtype=np.float32, samples=200,
                       exhaustive=False, progress=False)
    assert report.ok, report


@pytest.mark.parametrize("n", [5, 16])
def test_never_deeper_and_never_wider_in_the_residual(n):
    """Fusion takes layers and residual dimensions away, never adds them."""
    for name in NAMES:
        entry = lib.PROGRAMS[name]
        program = entry.build(n)
        fused = _compile(program, entry.vocab, n)
        plain = _compile(program, entry.vocab, n, optimize=False)
        assert fused.config.n_layers <= plain.config.n_layers, name
        assert fused.config.d_model <= plain.config.d_model, name


def _rotate():
    """``tokens`` rotated by one: the query ``(i + 1) % length`` is not a sum of a
    function of the length and one of the index, so it is a fused MLP."""
    length = lib.make_length()
    rot = rl.SequenceMap(lambda n, i: (i + 1) % n, length, rl.indices).named("rot")
    return rl.Aggregate(rl.Select(rl.indices, rot, rl.Comparison.EQ), rl.tokens).named("rotate")


def test_fused_nodes_in_the_circuit(tmp_path):
    """A fused node names the block that computes it and writes nothing; the block names
    it back; residual_labels hold none of its directions; a saved model keeps this."""
    model = _compile(_rotate(), "abc", 6)
    plain = _compile(_rotate(), "abc", 6, optimize=False)
    assert model.config.n_layers < plain.config.n_layers
    fused = {label: [s for s in steps if s.fused and not s.writes]
             for label, steps in model.circuit.items()}
    fused = {label: steps for label, steps in fused.items() if steps}
    assert {"length"} <= set(fused)  # length keeps its head, not its decoding
    for label, steps in fused.items():
        for step in steps:
            owner = step.fused[0]
            assert any(label in s.fused and s.writes for s in model.circuit[owner]), label
    assert set(model.circuit["rot"][0].fused) == {"length"}
    assert not any(x.startswith("length:") and x != "length:scratch"
                   for x in model.residual_labels)
    assert any(x.startswith("length:") for x in plain.residual_labels)
    path = tmp_path / "rotate.safetensors"
    model.save(path)
    assert rl.load(path).circuit == model.circuit


def test_reverse_query_scored_by_distance():
    """reverse's query ``length - indices - 1`` is folded into its head (scored
    ``2 k q - k^2``): two layers, no MLP for the query, a head of rank at most 3, and the
    circuit names the head for both query nodes."""
    model = _compile(lib.make_reverse(rl.tokens), "abc", 6)
    reverse = model.circuit["reverse"]
    assert len(reverse) == 1 and set(reverse[0].fused) == {"opp_idx", "opp_idx-1"}
    for label in ("opp_idx", "opp_idx-1"):
        (step,) = model.circuit[label]
        assert step.layer == reverse[0].layer and step.head == reverse[0].head
        assert not step.writes
    assert not any(x.startswith("opp_idx") for x in model.residual_labels)
    assert [x for x in model.residual_labels if x.startswith("length:")] == \
        ["length:scratch", *(f"length:{n}" for n in range(1, 7))]
    assert model.config.n_layers == 2 and model.config.d_head <= 4


def test_numerical_query_in_the_head():
    """A numerical query, ``length - indices`` as a numerical LinearSequenceMap minus 1,
    compared with the positions in the head itself (``2 k q - k^2``): no conversion to
    one-hot, two layers where one block per node takes five, exact on every input."""
    length = lib.make_length()
    q = rl.numerical(rl.Map(lambda x: x - 1, rl.numerical(
        rl.LinearSequenceMap(length, rl.indices, 1, -1)))).named("q")
    program = rl.Aggregate(rl.Select(rl.indices, q, rl.Comparison.EQ), rl.tokens)
    model = _compile(program, "abc", 8)
    plain = _compile(program, "abc", 8, optimize=False)
    assert model.config.n_layers == 2 < plain.config.n_layers
    assert not any(":categorical" in x or x.startswith("q") for x in model.residual_labels)
    assert any(x.startswith("q:categorical") for x in plain.residual_labels)
    for dtype in (np.float64, np.float32):
        report = rl.verify(program, "abc", 8, model=model, dtype=dtype, progress=False)
        assert report.ok and report.exhaustive, report


def _shifted(offset):
    """``tokens`` read ``offset`` positions from the end: ``length - indices - offset``,
    which selects nothing where it is negative (and is then not folded)."""
    length = lib.make_length()
    opp = rl.SequenceMap(lambda n, i: n - i - offset, length, rl.indices).named("opp")
    return rl.numerical(rl.Aggregate(rl.Select(rl.indices, opp, rl.Comparison.EQ),
                                     rl.numerical(rl.Map(len, rl.tokens)), default=0))


def _mirror_prefix():
    """A causal mirror: position ``i`` reads position ``i - c(i)`` where ``c`` counts
    the positions before it: always ``0``... ``i``, present under causal masking."""
    count = rl.SelectorWidth(rl.Select(rl.tokens, rl.tokens, rl.Comparison.TRUE))
    back = rl.SequenceMap(lambda w, i: w - 1 - i + i // 2, count, rl.indices).named("back")
    return rl.Aggregate(rl.Select(rl.indices, back, rl.Comparison.EQ), rl.tokens)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("program", ["reverse", "shift1", "shift0", "mirror"])
def test_distance_folds_exact(program, causal):
    """Folded or not (a query that can miss every key is not folded), every model is
    exact against the interpreter on every input up to length 6, in float64 and float32,
    causal or not."""
    build = {"reverse": lambda: lib.make_reverse(rl.tokens), "shift1": lambda: _shifted(1),
             "shift0": lambda: _shifted(0), "mirror": _mirror_prefix}[program]
    query = {"reverse": "opp_idx-1", "mirror": "back"}.get(program, "opp")
    if causal and program == "reverse":
        build, query = _mirror_prefix, "back"  # a causal model refuses `length`
    for n in (1, 6):
        model = _compile(build(), ["ab", "c", "d"], n, causal=causal)
        in_residual = any(x.startswith(f"{query}:") for x in model.residual_labels)
        assert in_residual == (program == "shift0"), model.residual_labels
        for dtype in (np.float64, np.float32):
            report = rl.verify(build(), ["ab", "c", "d"], n, model=model, causal=causal,
                               dtype=dtype, progress=False)
            assert report.ok and report.exhaustive, report


def test_size_counts():
    """n_nonzero <= n_params_used <= n_params, and padding changes n_params but not
    n_params_used."""
    import attrs
    import numpy as np

    for name in ("sort", "dyck1", "shuffle_dyck"):
        entry = lib.PROGRAMS[name]
        model = _compile(entry.build(8), entry.vocab, 8)
        assert model.n_nonzero <= model.n_params_used <= model.n_params
        # pad every layer with a zero head dimension and an unused MLP unit
        padded = {}
        for key, w in model.weights.items():
            axis = {"W_Q": 2, "W_K": 2, "W_V": 2, "W_O": 1, "b_Q": 1, "b_K": 1,
                    "b_V": 1, "W_in": 1, "b_in": 0, "W_out": 0}.get(key.rsplit(".", 1)[-1])
            padded[key] = w if axis is None else np.concatenate(
                [w, np.zeros_like(w.take([0], axis=axis))], axis=axis)
        wider = attrs.evolve(model, weights=padded)
        assert wider.n_params > model.n_params
        assert wider.n_params_used == model.n_params_used


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=programs(compilable=True, max_depth=5), seed=st.integers(0, 2**32 - 1))
def test_random_programs_unoptimized(case, seed):
    """optimize=False on random programs (optimize=True runs in test_compiler_random)."""
    check_compilable(case, False, seed, n_inputs=30, optimize=False)


def test_folded_nodes_of_functions_that_raise():
    """A Map that raises on some values, folded into a Select and an OV matrix (a fuzz
    case): compiles, and agrees wherever evaluate does not raise."""
    n1 = rl.Map(lambda x: {"a": 0, 0: 1}[x], rl.indices)
    n2 = rl.numerical(rl.Map(lambda x: 0.3 if str(x) < "b" else 0, n1))
    n3 = rl.numerical(rl.Aggregate(rl.Select(n2, n2, rl.Comparison.GT), n2, default=0))
    program = rl.SequenceMap(lambda x, y: (x, y), n2, n3)
    model = _compile(program, [0, 1, 2], 5)
    assert model.config.n_layers < _compile(program, [0, 1, 2], 5, optimize=False).config.n_layers
    report = rl.verify(program, [0, 1, 2], 5, model=model, progress=False)
    assert report.ok and report.checked > 0 and report.skipped > 0, report


def test_products_of_parts_on_two_counts():
    """Selects under `|` whose fused parts read two SelectorWidth counts (a fuzz case):
    no one MLP reads both, so compile builds it unfused, exactly."""
    n1 = rl.SequenceMap(lambda x, y: x - y, rl.length, rl.length)
    n2 = rl.Map(lambda x: x == x, n1)
    n3 = rl.SelectorWidth(rl.Select(n2, n2, rl.Comparison.GT) | rl.Select(n2, n1,
                                                                        rl.Comparison.NEQ))
    n4 = rl.SequenceMap(lambda x, y: str(x) + str(y), rl.indices, n3)
    n5 = rl.numerical(rl.Map(lambda x: x < "m", n4))
    program = rl.SelectorWidth(rl.Select(n3, n5, rl.Comparison.LT)
                               | ~rl.Select(n2, n5, rl.Comparison.EQ))
    vocab = [i / 10 for i in range(6)]
    model = _compile(program, vocab, 3)
    assert rl.verify(program, vocab, 3, model=model, progress=False).ok


def test_rounding_of_a_fused_discretisation_is_not_amplified():
    """A count's decoding fused into a numerical Map rounds its output by ~1e-16; a
    factor 2**53 after it would make that 1.5 (a fuzz case): the optimized build is
    refused for it and compile builds the exact one-block-per-node model."""
    n1 = rl.numerical(rl.Map(lambda x: 0.3 if str(x)[-1] in "02468" else 0, rl.length))
    n2 = rl.numerical(rl.Aggregate(~rl.Select(n1, rl.indices, rl.Comparison.GEQ), n1,
                                   default=1))
    program = rl.numerical(rl.LinearSequenceMap(n1, n2, 2**53, 0.3))
    vocab = [10**400, 1, -(10**400)]
    model = _compile(program, vocab, 5)
    assert rl.verify(program, vocab, 5, model=model, progress=False).ok


def test_categorical_value_of_a_function_that_always_raises():
    """An Aggregate's categorical value folded from a Map that raises on every value (a
    fuzz case): the head writes nothing for those values, so compile succeeds, and the
    model agrees wherever evaluate does not raise."""
    n1 = rl.Map(lambda x: None if str(x) < "b" else x, rl.length)
    n2 = rl.numerical(rl.Map(lambda x: -x, n1))
    n4 = rl.Map(lambda x: {"a": 0, 0: 1}[x], n2)
    shift = rl.Select(rl.indices, rl.SequenceMap(lambda i, n: (i + 1) % n, rl.indices,
                                                 rl.length), rl.Comparison.EQ)
    n5 = rl.Aggregate(shift, n4, default=0.1)
    program = rl.numerical(rl.Aggregate(rl.Select(n5, rl.length, rl.Comparison.EQ), n2,
                                        default=0))
    for optimize in (True, False):
        model = _compile(program, [0, 1, 2], 3, optimize=optimize)
        report = rl.verify(program, [0, 1, 2], 3, model=model, progress=False)
        assert report.agrees and report.checked + report.skipped == report.total


def test_gated_discretisation_of_an_input_without_values():
    """A fused SequenceMap whose numerical input raises on every input (a fuzz case with
    factors past float range) compiles: the combination gets no units."""
    vocab = [1e300, -1e300, 1.0]
    n2 = rl.LinearSequenceMap(rl.indices, rl.length, 0.7, 1e308)
    n3 = rl.SequenceMap(lambda x, y: x + y, rl.length, n2)
    n4 = rl.LinearSequenceMap(rl.indices, n3, 0.5, 10**400)
    n5 = rl.numerical(rl.LinearSequenceMap(n4, n4, -1, 1 + 2**-52))
    program = rl.LinearSequenceMap(n5, n2, 1e-16, 10**400)
    model = _compile(program, vocab, 5)
    report = rl.verify(program, vocab, 5, model=model, progress=False)
    assert report.agrees and report.checked + report.skipped == report.total


_POSITION_FUNCTIONS = {
    "affine": lambda a, b, c: lambda x, y: a * x + b * y + c,
    "halve": lambda a, b, c: lambda x, y: (a * x + b * y + c) // 2,
    "clamp": lambda a, b, c: lambda x, y: max(0, a * x + b * y + c),
    "mod": lambda a, b, c: lambda x, y: (a * x + b * y + c) % 3,
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(_POSITION_FUNCTIONS)), a=st.integers(-2, 2),
       b=st.integers(-2, 2), c=st.integers(-3, 3), causal=st.booleans(),
       first=st.sampled_from(["count", "tokens", "indices"]),
       via_map=st.booleans(), numerical=st.booleans())
def test_computed_positions(kind, a, b, c, causal, first, via_map, numerical):
    """``Aggregate(Select(indices, f(x, indices), ==), tokens)`` for random position
    arithmetic ``f``: whether its query is scored by squared distance in the head or
    computed by an MLP, the model is exact on every input up to length 5, in float64
    and float32, causal or not."""
    count = rl.SelectorWidth(rl.Select(rl.tokens, rl.tokens, rl.Comparison.TRUE))
    x = {"count": count, "tokens": rl.Map(len, rl.tokens), "indices": rl.indices}[first]
    f = _POSITION_FUNCTIONS[kind](a, b, c)
    query = rl.SequenceMap(f, x, rl.indices)
    if via_map:
        query = rl.Map(lambda q: q - 1, rl.Map(lambda q: q + 1, query))
    if numerical:  # a numerical query compared with categorical keys
        query = rl.numerical(rl.Map(lambda q: q, query))
    program = rl.Aggregate(rl.Select(rl.indices, query, rl.Comparison.EQ), rl.tokens)
    vocab = ["ab", "c", "d"]
    model = _compile(program, vocab, 5, causal=causal)
    for dtype in (np.float64, np.float32):
        report = rl.verify(program, vocab, 5, model=model, causal=causal, dtype=dtype,
                           progress=False)
        assert report.ok and report.exhaustive, report


def test_no_layer_saved_no_parameters_added():
    """Where fusion saves no layer, compile keeps the model with fewer parameters: the
    frequency of each token over the length fuses the length's count into a wider MLP,
    so one block per node is returned; and no library program's optimized model has
    more parameters than its one-block-per-node model at the same depth."""
    normalized = rl.SequenceMap(lambda x, y: x / y if y > 0 else None, lib.make_hist(),
                                lib.make_length())
    fused = _compile(normalized, "abc", 8)
    plain = _compile(normalized, "abc", 8, optimize=False)
    assert fused.config.n_layers == plain.config.n_layers
    assert fused.n_params == plain.n_params
    assert rl.verify(normalized, "abc", 8, model=fused, progress=False).ok
    for name in NAMES:
        entry = lib.PROGRAMS[name]
        fused = _compile(entry.build(8), entry.vocab, 8)
        plain = _compile(entry.build(8), entry.vocab, 8, optimize=False)
        if fused.config.n_layers == plain.config.n_layers:
            assert fused.n_params <= plain.n_params, name


_COMBINE = {"and": lambda x, y: bool(x) and bool(y), "or": lambda x, y: bool(x) or bool(y),
            "xor": lambda x, y: bool(x) != bool(y), "lt": lambda x, y: x < y}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alpha=st.integers(-2, 2), beta=st.integers(-2, 2), cut=st.sampled_from([0, 0.25, 0.5]),
       combine=st.sampled_from(sorted(_COMBINE)), through=st.booleans(),
       causal=st.booleans(), mean=st.booleans())
def test_prefix_fraction_pairs(alpha, beta, cut, combine, through, causal, mean):
    """A SequenceMap of two running fractions (or integer combinations of them), read
    directly or through thresholds, optionally averaged afterwards: tabled per index or
    not, the model is exact on every input up to length 6, in float64 and float32."""
    opens = lib.make_frac_prevs(rl.tokens == "(")
    closes = lib.make_frac_prevs(rl.tokens == ")")
    x = rl.numerical(rl.LinearSequenceMap(opens, closes, alpha, beta)) if alpha or beta \
        else opens
    y = closes
    if through:
        x, y = rl.Map(lambda v: v < -cut, x), rl.Map(lambda v: v > cut, y)
    program = rl.SequenceMap(_COMBINE[combine], x, y)
    if mean:
        every = rl.Select(rl.indices, rl.indices, rl.Comparison.LEQ)
        program = rl.numerical(rl.Aggregate(every, rl.numerical(rl.Map(int, program)),
                                            default=0))
    vocab = ["(", ")", "a"]
    try:
        model = _compile(program, vocab, 6, causal=causal)
    except rl.UnsupportedProgramError:  # two roundings of one sum compare differently
        with pytest.raises(rl.UnsupportedProgramError):
            _compile(program, vocab, 6, causal=causal, optimize=False)
        return
    for dtype in (np.float64, np.float32):
        report = rl.verify(program, vocab, 6, model=model, causal=causal, dtype=dtype,
                           progress=False)
        assert report.ok and report.exhaustive, report


def test_shuffle_dyck2_tabled_per_index():
    """shuffle_dyck2's two `(balance < 0) | ...` and `(balance == 0) & ...` tables are
    computed per index from the two balances, in the first MLP: two layers at 16."""
    entry = lib.PROGRAMS["shuffle_dyck2"]
    model = _compile(entry.build(16), entry.vocab, 16)
    plain = _compile(entry.build(16), entry.vocab, 16, optimize=False)
    assert model.config.n_layers == 2 < plain.config.n_layers
    report = rl.verify(entry.build(16), entry.vocab, 16, model=model, samples=3000,
                       dtype=np.float32, progress=False)
    assert report.ok, report
