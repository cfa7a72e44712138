"""The attention chamber (backend/chambers/attention.py), checked on the heads it builds.

Each test builds a head from small hand-made spaces and selector tables, runs it with the
craft IR on residual streams whose position 0 is BOS (``one``, the BOS direction and the
known BOS state of every SOp), and compares with the exact means, widths and logit
levels the module docstring derives.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import rasplang as rl
from rasplang.backend.chambers import attention
from rasplang.backend.chambers.selector import Term
from rasplang.backend.craft.bases import BasisDirection, VectorInBasis, VectorSpace, join
from rasplang.backend.spaces import ONE, BosState, bos_direction, categorical_space, numerical_space

BOS = bos_direction("BOS")
N = 5  # max_seq_len
TOKENS = ("a", "b", "c")
TOKS, IDXS = rl.tokens, rl.indices
# Stand-ins for computed SOps: only their identity matters (keys of the spaces dict).
X = rl.numerical(rl.Map(lambda t: t, rl.tokens))
K = rl.categorical(rl.Map(lambda t: t, rl.tokens))
TOK = categorical_space("tokens", TOKENS)
IDX = categorical_space("indices", tuple(range(N)))


def at_bos(coords=None):
    """The chambers' BosState: ``one`` and BOS are 1, ``coords`` as given, others 0."""
    return BosState(BOS, dict(coords or {}))


def table(pred, queries, keys):
    """``T[a, b] = pred(key b, query a)`` as a float 0/1 array."""
    return np.array([[float(bool(pred(k, q))) for k in keys] for q in queries])


def stream(head, bos_coords, rows):
    """A [B, T, dim] residual for ``head``: BOS (``one``, BOS, ``bos_coords``) at position
    0, then each sequence's rows ({direction: value}, ``one`` added)."""
    written = dict.fromkeys(d for seq in rows for row in seq for d in row)
    space = join(head.residual_space, VectorSpace(dict.fromkeys([ONE, BOS, *bos_coords, *written])))
    length = 1 + max(len(seq) for seq in rows)
    x = np.zeros((len(rows), length, space.dim))
    for b, seq in enumerate(rows):
        assert len(seq) == length - 1, "sequences of one batch share a length"
        for p, row in enumerate([{BOS: 1.0, **bos_coords}, *seq]):
            x[b, p, space.index_of(ONE)] = 1.0
            for d, v in row.items():
                x[b, p, space.index_of(d)] = v
    return VectorInBasis(space, x)


def token_rows(tokens, values, value_space):
    """Real-position rows: a token one-hot, an index one-hot, a value coordinate."""
    return [{BasisDirection("tokens", t): 1.0, BasisDirection("indices", i): 1.0,
             value_space.directions[0]: v} for i, (t, v) in enumerate(zip(tokens, values))]


def mean_or_default(selected, default):
    """What Aggregate evaluates to on one query: the mean of the selected, else default."""
    return sum(selected) / len(selected) if selected else default


def random_batch(rng, batch, length, values):
    toks = [[str(t) for t in rng.choice(TOKENS, length)] for _ in range(batch)]
    vals = [[float(v) for v in rng.choice(values, length)] for _ in range(batch)]
    return toks, vals


def numerical_aggregate(scale, causal=False, default=-1.5, value_bos=3.0):
    """An Aggregate of numerical X over ``select(tokens, tokens, ==)``; X holds
    ``value_bos`` at BOS (as an Aggregate holding its default would)."""
    value = numerical_space("x", (-2.0, 0.5, 3.0))
    out = numerical_space("out", (-2.0, 0.5, 3.0, default), bos_value=default)
    terms = [Term(TOKS, TOKS, table(lambda k, q: k == q, TOKENS, TOKENS))]
    coords = {value.directions[0]: value_bos}
    head = attention.aggregate_head("out", terms, {TOKS: TOK, X: value}, value, out, default,
                                    scale, causal, at_bos(coords))
    return head, value, out, coords


def builder_scale(values, default):
    """The coldness build.py picks for a numerical Aggregate with these values."""
    vmax = max([1.0, *(abs(v) for v in (*values, default))])
    return attention.coldness(N, 2 * vmax, 0.5), vmax


def test_logits_have_the_documented_levels():
    """Logits are C m (selected), <= C (m - 1) (not) and C (m - 1/2) (BOS key)."""
    # m = 2 terms; the key SOp K has a nonzero BOS state, which the BOS column cancels;
    # the BOS query prefers BOS by at least C/2.
    k_space = categorical_space("k", ("p", "q"), bos_value="q")
    t2 = table(lambda k, q: (k == "p") == (q != "c"), TOKENS, ("p", "q"))
    terms = [Term(TOKS, TOKS, table(lambda k, q: k == q, TOKENS, TOKENS)), Term(K, TOKS, t2)]
    value = numerical_space("x", (1.0,))
    out = numerical_space("out", (0.0, 1.0))
    scale = 7.0
    coords = {BasisDirection("k", "q"): 1.0}
    head = attention.aggregate_head("out", terms, {TOKS: TOK, K: k_space, X: value}, value, out,
                                    0.0, scale, False, at_bos(coords))
    toks, ks = ["a", "b", "c", "a", "c"], ["p", "q", "q", "p", "p"]
    seq = [{BasisDirection("tokens", t): 1.0, BasisDirection("k", k): 1.0}
           for t, k in zip(toks, ks)]
    logits = head.w_qk(*[stream(head, coords, [seq])] * 2)[0]  # (T, T)
    for qp, qt in enumerate(toks, start=1):
        assert logits[qp, 0] == pytest.approx(scale * 1.5, rel=1e-12)
        for kp, (kt, kk) in enumerate(zip(toks, ks), start=1):
            hits = (kt == qt) + ((kk == "p") == (qt != "c"))
            assert logits[qp, kp] == pytest.approx(scale * hits, rel=1e-12, abs=1e-12)
    assert logits[0, 0] - logits[0, 1:].max() >= scale / 2 - 1e-12


def test_selector_width_bos_logit_ties_the_selected_keys():
    """A SelectorWidth head puts the BOS key exactly at the selected keys' level C m."""
    terms = [Term(TOKS, TOKS, table(lambda k, q: k <= q, TOKENS, TOKENS))]
    scale = 5.0
    head = attention.selector_width_head("w", terms, {TOKS: TOK}, BasisDirection("w", "scratch"),
                                         scale, False, at_bos())
    toks = ["c", "a", "b"]
    seq = [{BasisDirection("tokens", t): 1.0} for t in toks]
    logits = head.w_qk(*[stream(head, {}, [seq])] * 2)[0]
    assert np.allclose(logits[1:, 0], scale, rtol=1e-12)
    expected = [[scale * (k <= q) for k in toks] for q in toks]
    assert np.allclose(logits[1:, 1:], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_numerical_aggregate_is_the_mean_or_the_default(causal):
    """A numerical Aggregate gives the selected mean or the default, within 1e-12."""
    # At the builder's coldness; keys after the query are masked when causal; the BOS
    # position holds the default.
    default = -1.5
    scale, _ = builder_scale((-2.0, 0.5, 3.0), default)
    head, value, out, coords = numerical_aggregate(scale, causal, default)
    rng = np.random.default_rng(0)
    toks, vals = random_batch(rng, 40, N, value.values)
    toks[0] = ["a", "b", "a", "c", "a"]  # position 2 (b) selects only itself, etc.
    x = stream(head, coords, [token_rows(t, v, value) for t, v in zip(toks, vals)])
    got = head(x).project(out.space).magnitudes[..., 0]  # (B, T)
    for b, (tok, val) in enumerate(zip(toks, vals)):
        assert got[b, 0] == pytest.approx(default, abs=1e-12)
        for p, q in enumerate(tok):
            seen = range(p + 1) if causal else range(len(tok))
            want = mean_or_default([val[j] for j in seen if tok[j] == q], default)
            assert got[b, p + 1] == pytest.approx(want, abs=attention.LEAKAGE_TARGET)


def test_aggregate_default_where_nothing_is_selected():
    """A query whose token no key holds gets the default (BOS weight >= 1 - n e^{-C/2})."""
    default = -1.5
    scale, _ = builder_scale((-2.0, 0.5, 3.0), default)
    value = numerical_space("x", (-2.0, 0.5, 3.0))
    out = numerical_space("out", (-2.0, 0.5, 3.0, default), bos_value=default)
    never = [Term(TOKS, TOKS, np.zeros((3, 3)))]
    head = attention.aggregate_head("out", never, {TOKS: TOK, X: value}, value, out, default,
                                    scale, False, at_bos({value.directions[0]: 3.0}))
    x = stream(head, {value.directions[0]: 3.0},
               [token_rows("abcab", [3.0, -2.0, 0.5, 3.0, 3.0], value)])
    got = head(x).project(out.space).magnitudes[0, :, 0]
    assert np.allclose(got, default, rtol=0, atol=attention.LEAKAGE_TARGET)
    assert np.all(head.pattern(x)[0, :, 0] >= 1 - N * math.exp(-scale / 2))


def test_leakage_stays_within_the_documented_bound_at_low_coldness():
    """At a low coldness the error is nonzero but at most 2 V (n + 1) e^{-C/2}."""
    # The pattern gives BOS at most e^{-C/2}/w and each unselected key at most e^{-C}/w.
    scale = 8.0
    head, value, out, coords = numerical_aggregate(scale, default=-1.5)
    rng = np.random.default_rng(1)
    toks, vals = random_batch(rng, 30, N, value.values)
    x = stream(head, coords, [token_rows(t, v, value) for t, v in zip(toks, vals)])
    got = head(x).project(out.space).magnitudes[..., 0]
    pattern = head.pattern(x)  # (B, T, T)
    vmax = 3.0
    bound = 2 * vmax * (N + 1) * math.exp(-scale / 2)
    worst = 0.0
    for b, (tok, val) in enumerate(zip(toks, vals)):
        for p, q in enumerate(tok):
            selected = [j for j in range(N) if tok[j] == q]
            want = mean_or_default([val[j] for j in selected], -1.5)
            worst = max(worst, abs(got[b, p + 1] - want))
            w = len(selected)
            assert pattern[b, p + 1, 0] <= math.exp(-scale / 2) / w * (1 + 1e-9)
            others = [pattern[b, p + 1, j + 1] for j in range(N) if j not in selected]
            assert all(o <= math.exp(-scale) / w * (1 + 1e-9) for o in others)
    assert 0 < worst <= bound


def test_categorical_aggregate_copies_the_selected_value():
    """A categorical Aggregate copies the selected one-hot, else the default's."""
    # A None default is the zero vector.
    prev = table(lambda k, q: k == q - 1, range(N), range(N))  # the previous position
    for default in ("b", None):
        out = categorical_space("prev", (None, *TOKENS), bos_value=default)
        scale = attention.coldness(N, 2.0, 0.5)
        bos_coords = {} if default is None else {BasisDirection("prev", default): 1.0}
        head = attention.aggregate_head("prev", [Term(IDXS, IDXS, prev)],
                                        {IDXS: IDX, TOKS: TOK}, TOK, out, default, scale,
                                        False, at_bos(bos_coords))
        toks = ["c", "a", "a", "b", "c"]
        seq = [{BasisDirection("tokens", t): 1.0, BasisDirection("indices", i): 1.0}
               for i, t in enumerate(toks)]
        x = stream(head, {}, [seq])
        got = head(x).project(out.space).magnitudes[0]  # (T, 3)
        want = [default, default, *toks[:-1]]  # BOS, position 1, then the previous token
        one_hot = np.array([[float(v == t) for t in TOKENS] for v in want])
        assert np.allclose(got, one_hot, rtol=0, atol=1e-12)


@pytest.mark.parametrize("categorical_source", [False, True])
def test_nullable_numerical_aggregate_writes_the_mean_none_flag(categorical_source):
    """A nullable numerical Aggregate writes the mean None flag; None reads as 0."""
    # The flag is 1 where every selected value is None, or nothing is selected and the
    # default is None. The source's None is its flag, or 1 - sum_v e_v if categorical.
    make = categorical_space if categorical_source else numerical_space
    value = make("x", (None, 2.0, 4.0))
    out = numerical_space("out", (None, 2.0, 3.0, 4.0))  # default None: zeros at BOS
    scale = attention.coldness(N, 8.0, 0.5)
    eq = [Term(TOKS, TOKS, table(lambda k, q: k == q, TOKENS, TOKENS))]
    head = attention.aggregate_head("out", eq, {TOKS: TOK, X: value}, value, out, None, scale,
                                    False, at_bos())
    toks = ["a", "b", "a", "c", "b"]
    vals = [2.0, None, 4.0, None, None]
    seq = [{BasisDirection("tokens", t): 1.0} for t in toks]
    for row, v in zip(seq, vals):
        if categorical_source and v is not None:
            row[BasisDirection("x", v)] = 1.0
        elif not categorical_source:
            row.update({BasisDirection("x"): v or 0.0, value.directions[1]: float(v is None)})
    got = head(stream(head, {}, [seq])).project(out.space).magnitudes[0]  # (T, 2)
    # a: mean(2, 4) = 3; b: only None values; c: only None
    want = [[0, 1], [3, 0], [0, 1], [3, 0], [0, 1], [0, 1]]
    assert np.allclose(got, want, rtol=0, atol=1e-11)


def test_bos_query_attends_bos_whatever_its_state_selects():
    """The BOS query attends BOS by C/2 even if its BOS state selects real keys."""
    # The query SOp holds 'a' at BOS (as an Aggregate holding its default would), which
    # selects every real key; the BOS position must still hold the default.
    q_space = categorical_space("q", TOKENS, bos_value="a")
    state = {BasisDirection("q", "a"): 1.0}
    value = numerical_space("x", (1.0, 2.0))
    out = numerical_space("out", (1.0, 2.0, 5.0), bos_value=5.0)
    scale = attention.coldness(N, 10.0, 0.5)
    head = attention.aggregate_head(
        "out", [Term(TOKS, K, table(lambda k, q: k == q, TOKENS, TOKENS))],
        {TOKS: TOK, K: q_space, X: value}, value, out, 5.0, scale, False, at_bos(state))
    seq = [{BasisDirection("tokens", "a"): 1.0, BasisDirection("q", "a"): 1.0,
            BasisDirection("x"): 1.0 + (i % 2)} for i in range(N)]
    x = stream(head, state, [seq])
    logits = head.w_qk(x, x)[0]
    assert logits[0, 0] - logits[0, 1:].max() >= scale / 2 - 1e-9
    got = head(x).project(out.space).magnitudes[0, :, 0]
    assert got[0] == pytest.approx(5.0, abs=attention.LEAKAGE_TARGET)
    assert np.allclose(got[1:], np.mean([1.0 + (i % 2) for i in range(N)]), rtol=0,
                       atol=attention.LEAKAGE_TARGET)


@pytest.mark.parametrize("causal", [False, True])
def test_selector_width_head_writes_minus_one_over_width_plus_one(causal):
    """The SelectorWidth head writes -1/(w + 1) to its scratch, within n e^{-C}, and -1
    at BOS."""
    # w counts the visible keys; at the builder's coldness and at a low one.
    terms = [Term(TOKS, TOKS, table(lambda k, q: k <= q, TOKENS, TOKENS))]
    scratch = BasisDirection("w", "scratch")
    rng = np.random.default_rng(2)
    toks = [[str(t) for t in rng.choice(TOKENS, N)] for _ in range(30)]
    for scale in (attention.coldness(N, 4.0 * (N + 1) * (N + 2), 1.0), 6.0):
        head = attention.selector_width_head("w", terms, {TOKS: TOK}, scratch, scale, causal,
                                             at_bos())
        rows = [[{BasisDirection("tokens", t): 1.0} for t in tok] for tok in toks]
        got = head(stream(head, {}, rows)).project(VectorSpace([scratch])).magnitudes[..., 0]
        for b, tok in enumerate(toks):
            assert got[b, 0] == pytest.approx(-1.0, abs=N * math.exp(-scale))
            for p, q in enumerate(tok):
                seen = tok[: p + 1] if causal else tok
                width = sum(k <= q for k in seen)
                assert got[b, p + 1] == pytest.approx(-1 / (width + 1),
                                                      abs=N * math.exp(-scale))
