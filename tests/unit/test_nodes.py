"""The DSL: node construction, identity, naming, annotations, operators."""

import operator
import re

import attrs
import pytest

import rasplang as rl
from rasplang import (
    Aggregate,
    Comparison,
    Full,
    LinearSequenceMap,
    Map,
    Select,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    evaluate,
    indices,
    length,
    tokens,
)


def test_nodes_are_frozen():
    """Assigning to a node's field raises."""
    m = Map(lambda x: x, tokens)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        m.inner = indices  # type: ignore[misc]


def test_unique_ids_and_identity_hashing():
    """Every node has its own id and hashes by identity."""
    a, b = Map(abs, tokens), Map(abs, tokens)
    assert a.unique_id != b.unique_id
    assert len({a, b}) == 2
    assert {a: 1}[a] == 1


def test_default_labels():
    """Unnamed nodes are labelled kind_id; primitives by their name."""
    m = Map(abs, tokens)
    assert m.label == f"map_{m.unique_id}"
    assert tokens.label == "tokens" and indices.label == "indices" and length.label == "length"
    sel = Select(tokens, tokens, Comparison.EQ)
    assert sel.label == f"select_{sel.unique_id}"
    assert Aggregate(sel, tokens).label.startswith("aggregate_")
    assert SelectorWidth(sel).label.startswith("selector_width_")
    assert LinearSequenceMap(tokens, indices, 1, 2).label.startswith("linear_sequence_map_")


def test_named_returns_evolved_copy():
    """named() gives a new node with a new id; the original keeps its label."""
    m = Map(abs, tokens)
    n = m.named("absolute")
    assert n is not m and n.unique_id != m.unique_id
    assert n.label == "absolute" and m.label.startswith("map_")
    assert n.f is m.f and n.inner is m.inner


def test_named_rejects_empty():
    """A node name must be a non-empty string."""
    with pytest.raises(TypeError, match="non-empty str"):
        tokens.named("")


def test_annotated_and_encodings():
    """numerical/categorical annotate a copy; the default encoding is categorical."""
    m = Map(abs, tokens)
    num = rl.numerical(m)
    assert rl.is_categorical(m) and not rl.is_numerical(m)
    assert rl.is_numerical(num) and rl.get_encoding(num) is rl.Encoding.NUMERICAL
    assert rl.is_categorical(rl.categorical(num))
    tagged = m.annotated(colour="red")
    assert tagged.annotations["colour"] == "red" and "colour" not in m.annotations
    with pytest.raises(TypeError):
        tagged.annotations["colour"] = "blue"  # type: ignore[index]


def test_encoding_helpers_reject_selectors():
    """Encodings exist only for SOps."""
    with pytest.raises(TypeError, match="must be an SOp"):
        rl.numerical(Select(tokens, tokens, Comparison.EQ))  # type: ignore[arg-type]


def test_map_simplify_fuses_maps():
    """A Map of a Map is fused (tracr's simplify=True); simplify=False keeps both."""
    inner = Map(lambda x: x + 1, tokens)
    fused = Map(lambda x: x * 2, inner)
    assert fused.inner is tokens
    assert evaluate(fused, [1, 2]) == [4, 6]
    kept = Map(lambda x: x * 2, inner, simplify=False)
    assert kept.inner is inner
    assert evaluate(kept, [1, 2]) == [4, 6]
    # evolving a fused map must not fuse again
    assert fused.named("f").inner is tokens


@pytest.mark.parametrize(
    ("build", "xs", "expected"),
    [
        (lambda s: s + 1, [1, 2], [2, 3]),
        (lambda s: 1 + s, [1, 2], [2, 3]),
        (lambda s: s - 1, [1, 2], [0, 1]),
        (lambda s: 10 - s, [1, 2], [9, 8]),
        (lambda s: s * 3, [1, 2], [3, 6]),
        (lambda s: 3 * s, [1, 2], [3, 6]),
        (lambda s: s / 2, [1, 2], [0.5, 1.0]),
        (lambda s: 2 / s, [1, 2], [2.0, 1.0]),
        (lambda s: s // 2, [3, 4], [1, 2]),
        (lambda s: 7 // s, [3, 4], [2, 1]),
        (lambda s: s % 2, [3, 4], [1, 0]),
        (lambda s: 7 % s, [3, 4], [1, 3]),
        (lambda s: s**2, [3, 4], [9, 16]),
        (lambda s: 2**s, [3, 4], [8, 16]),
        (lambda s: -s, [3, -4], [-3, 4]),
        (lambda s: s == 3, [3, 4], [True, False]),
        (lambda s: s != 3, [3, 4], [False, True]),
        (lambda s: s < 4, [3, 4], [True, False]),
        (lambda s: s <= 3, [3, 4], [True, False]),
        (lambda s: s > 3, [3, 4], [False, True]),
        (lambda s: s >= 4, [3, 4], [False, True]),
        (lambda s: 3 < s, [3, 4], [False, True]),
        (lambda s: 3 >= s, [3, 4], [True, False]),
        (lambda s: (s > 1) & (s < 4), [1, 2, 4], [False, True, False]),
        (lambda s: (s < 2) | (s > 3), [1, 2, 4], [True, False, True]),
        (lambda s: ~(s > 1), [1, 2], [True, False]),
        (lambda s: (s > 1) & True, [1, 2], [False, True]),
        (lambda s: False | (s > 1), [1, 2], [False, True]),
    ],
)
def test_operators_with_constants(build, xs, expected):
    """Every operator, with a constant on either side or combined, gives the right values."""
    node = build(tokens)
    assert isinstance(node, (Map, SequenceMap))
    assert evaluate(node, xs) == expected


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        (operator.add, [4, 6]),
        (operator.sub, [2, 2]),
        (operator.mul, [3, 8]),
        (operator.truediv, [3.0, 2.0]),
        (operator.floordiv, [3, 2]),
        (operator.mod, [0, 0]),
        (operator.pow, [3, 16]),
        (operator.eq, [False, False]),
        (operator.ne, [True, True]),
        (operator.lt, [False, False]),
        (operator.gt, [True, True]),
        (operator.le, [False, False]),
        (operator.ge, [True, True]),
    ],
)
def test_operators_between_sops(op, expected):
    """An operator between two SOps builds a SequenceMap (tokens OP indices+1)."""
    node = op(tokens, indices + 1)
    assert isinstance(node, SequenceMap)
    assert evaluate(node, [3, 4]) == expected


def test_operator_string_constants():
    """String constants work: tokens == "a", "x" + tokens."""
    assert evaluate(tokens == "a", list("aba")) == [True, False, True]
    assert evaluate("x" + tokens, list("ab")) == ["xa", "xb"]


def test_operator_foreign_types_are_rejected():
    """An operand that is neither an SOp nor a constant raises TypeError."""
    with pytest.raises(TypeError):
        tokens + [1, 2]  # type: ignore[operator]
    with pytest.raises(TypeError):
        tokens + Select(tokens, tokens, Comparison.EQ)  # type: ignore[operator]


def test_repr_reads_like_the_program():
    """repr shows the label, the kind and the operator-built function."""
    m = (tokens + 1).named("succ")
    assert repr(m) == "succ = Map(x + 1, tokens)"
    assert repr(1 - tokens).endswith("Map(1 - x, tokens)")
    assert repr(3 < tokens).endswith("Map(x > 3, tokens)")
    s = SequenceMap(lambda x, y: x, tokens, indices)
    assert "SequenceMap(" in repr(s) and "tokens, indices" in repr(s)
    sel = Select(tokens, indices, Comparison.LT).named("sel")
    assert repr(sel) == "sel = Select(tokens, indices, Comparison.LT)"
    agg = Aggregate(sel, tokens, default=0).named("agg")
    assert repr(agg) == "agg = Aggregate(sel, tokens, default=0)"
    assert repr(tokens) == "tokens"


@pytest.mark.parametrize("node", [tokens, Select(tokens, tokens, Comparison.EQ)])
def test_bool_raises_with_explanation(node):
    """bool() on a node raises a TypeError that explains and/or/if/chained comparisons."""
    with pytest.raises(TypeError, match="chained comparisons"):
        bool(node)
    with pytest.raises(TypeError, match=re.escape("use `&`, `|`, `~`")):
        if node:
            pass


def test_chained_comparison_raises():
    """0 < tokens < 3 is a chained comparison and raises the explanatory TypeError."""
    with pytest.raises(TypeError, match="no truth value"):
        0 < tokens < 3  # noqa: B015


def test_selector_operators():
    """&, |, ~ on selectors build SelectorAnd/Or/Not."""
    a = Select(tokens, tokens, Comparison.EQ)
    b = Select(indices, indices, Comparison.LT)
    assert isinstance(a & b, SelectorAnd)
    assert isinstance(a | b, SelectorOr)
    assert isinstance(~a, SelectorNot)
    with pytest.raises(TypeError):
        a & tokens  # type: ignore[operator]


@pytest.mark.parametrize(
    ("spec", "comparison"),
    [("==", Comparison.EQ), ("<", Comparison.LT), ("<=", Comparison.LEQ),
     (">", Comparison.GT), (">=", Comparison.GEQ), ("!=", Comparison.NEQ),
     ("true", Comparison.TRUE), ("false", Comparison.FALSE), ("TRUE", Comparison.TRUE)],
)
def test_select_accepts_comparison_strings(spec, comparison):
    """select() parses comparison strings."""
    assert rl.select(tokens, tokens, spec).predicate is comparison


def test_select_rejects_unknown_comparison():
    """An unknown comparison string names the accepted ones."""
    with pytest.raises(ValueError, match="unknown comparison '=~'"):
        rl.select(tokens, tokens, "=~")


@pytest.mark.parametrize(
    ("comparison", "expected"),
    [(Comparison.EQ, [False, True, False]), (Comparison.LT, [True, False, False]),
     (Comparison.LEQ, [True, True, False]), (Comparison.GT, [False, False, True]),
     (Comparison.GEQ, [False, True, True]), (Comparison.NEQ, [True, False, True]),
     (Comparison.TRUE, [True, True, True]), (Comparison.FALSE, [False, False, False])],
)
def test_comparison_is_key_op_query(comparison, expected):
    """Comparison(key, query) applies key OP query, for keys 1, 2, 3 and query 2."""
    assert [comparison(key, 2) for key in (1, 2, 3)] == expected


def test_comparison_rejects_none():
    """A None key or query is an error."""
    with pytest.raises(ValueError, match="key is None"):
        Comparison.EQ(None, 1)
    with pytest.raises(ValueError, match="query is None"):
        Comparison.EQ(1, None)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Map(tokens, tokens), "Map's f must be a function"),
        (lambda: Map(abs, 3), "Map's inner must be an SOp"),
        (lambda: SequenceMap(abs, tokens, 3), "SequenceMap's snd must be an SOp"),
        (lambda: Select(tokens, 3, Comparison.EQ), "Select's queries must be an SOp"),
        (lambda: Aggregate(tokens, tokens), "Aggregate's selector must be a Selector"),
        (lambda: Aggregate(Select(tokens, tokens, Comparison.EQ), tokens, default=[1]),
         "default must be None, a number or a str"),
        (lambda: SelectorWidth(tokens), "SelectorWidth's selector must be a Selector"),
        (lambda: LinearSequenceMap(tokens, indices, "a", 1), "fst_fac must be a number"),
        (lambda: SelectorNot(tokens), "SelectorNot's inner must be a Selector"),
    ],
)
def test_constructor_type_errors(build, match):
    """Constructors reject wrong argument types with a message naming the argument."""
    with pytest.raises(TypeError, match=match):
        build()


def test_lowercase_constructors():
    """aggregate/selector_width build the same nodes as the classes."""
    sel = rl.select(tokens, tokens, "==")
    assert isinstance(rl.aggregate(sel, tokens, default=0), Aggregate)
    assert rl.aggregate(sel, tokens, default=0).default == 0
    assert isinstance(rl.selector_width(sel), SelectorWidth)
    assert evaluate(Full(7), [1, 2]) == [7, 7]
