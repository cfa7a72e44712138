"""tracr's library programs, with tracr's names, signatures, defaults, semantics and
node labels (``tracr/compiler/lib.py``, Lindner et al. 2023): code written against
tracr's library runs unchanged. `rasplang.lib` re-exports every name here and adds the
programs tracr refuses, the RASP paper's programs and the `PROGRAMS` registry.

Unlike tracr, ``numerical``/``named`` return new nodes, so every step below uses the
node they return.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rasplang import rasp

__all__ = [
    "detect_pattern",
    "length",
    "make_count",
    "make_count_less_freq",
    "make_frac_prevs",
    "make_hist",
    "make_length",
    "make_nary_sequencemap",
    "make_pair_balance",
    "make_reverse",
    "make_shuffle_dyck",
    "make_shuffle_dyck2",
    "make_sort",
    "make_sort_freq",
    "make_sort_unique",
    "shift_by",
]

# ------------------------------------------- programs for non-causal evaluation


def make_length() -> rasp.SOp:
    """The input length at every position, computed with a selector width.

    Unlike the primitive `rasplang.length`, this is built from attention, so a causal
    model computes it too (as the length of the prefix).

    >>> make_length()("abcdefg")
    [7, 7, 7, 7, 7, 7, 7]
    """
    all_true_selector = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE).named(
        "all_true_selector"
    )
    return rasp.SelectorWidth(all_true_selector).named("length")


#: tracr's module-level ``length``: `make_length()` built once and shared.
length = make_length()


def make_reverse(sop: rasp.SOp) -> rasp.SOp:
    """``sop`` reversed, by selecting position ``length - index - 1``.

    >>> make_reverse(rasp.tokens)("Hello")
    ['o', 'l', 'l', 'e', 'H']
    """
    opp_idx = (length - rasp.indices).named("opp_idx")
    opp_idx = (opp_idx - 1).named("opp_idx-1")
    reverse_selector = rasp.Select(rasp.indices, opp_idx, rasp.Comparison.EQ).named(
        "reverse_selector"
    )
    return rasp.Aggregate(reverse_selector, sop).named("reverse")


def make_pair_balance(sop: rasp.SOp, open_token: str, close_token: str) -> rasp.SOp:
    """The fraction of positions so far holding ``open_token`` minus those holding
    ``close_token`` (as in the RASP paper).

    The brackets are balanced when no value is negative and the last one is 0.

    >>> pair_balance = make_pair_balance(rasp.tokens, "(", ")")
    >>> [round(v, 4) for v in pair_balance("a()b(c))")]
    [0, 0.5, 0.0, 0.0, 0.2, 0.1667, 0.0, -0.125]
    """
    bools_open = rasp.numerical(sop == open_token).named("bools_open")
    opens = rasp.numerical(make_frac_prevs(bools_open)).named("opens")

    bools_close = rasp.numerical(sop == close_token).named("bools_close")
    closes = rasp.numerical(make_frac_prevs(bools_close)).named("closes")

    pair_balance = rasp.numerical(rasp.LinearSequenceMap(opens, closes, 1, -1))
    return pair_balance.named("pair_balance")


def make_shuffle_dyck(pairs: list[str]) -> rasp.SOp:
    """1 (True) at every position if each kind of bracket is balanced on its own, else
    0 (False) (shuffle-Dyck, as in the RASP paper).

    Each kind is checked independently, so ``"({)}"`` is balanced.

    >>> shuffle_dyck2 = make_shuffle_dyck(pairs=["()", "{}"])
    >>> shuffle_dyck2("({)}")
    [True, True, True, True]
    >>> shuffle_dyck2("(){)}")
    [False, False, False, False, False]

    Args:
        pairs: two-character strings, an open and a close token each, e.g. ``["()"]``.
    """
    if len(pairs) < 1:
        raise ValueError("make_shuffle_dyck needs at least one pair of brackets")
    # The running balance of each kind of bracket.
    balances = []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"each pair must be an open and a close token, got {pair!r}")
        open_token, close_token = pair
        balance = make_pair_balance(
            rasp.tokens, open_token=open_token, close_token=close_token
        ).named(f"balance_{pair}")
        balances.append(balance)

    # A negative balance anywhere means a bracket closed before it opened.
    any_negative = balances[0] < 0
    for balance in balances[1:]:
        any_negative = any_negative | (balance < 0)
    any_negative = rasp.numerical(rasp.Map(lambda x: x, any_negative)).named("any_negative")
    select_all = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.TRUE).named(
        "select_all"
    )
    has_neg = rasp.numerical(rasp.Aggregate(select_all, any_negative, default=0)).named(
        "has_neg"
    )

    # Every balance must be 0 at the last position.
    all_zero = balances[0] == 0
    for balance in balances[1:]:
        all_zero = all_zero & (balance == 0)
    select_last = rasp.Select(rasp.indices, length - 1, rasp.Comparison.EQ).named("select_last")
    last_zero = rasp.Aggregate(select_last, all_zero).named("last_zero")

    not_has_neg = (~has_neg).named("not_has_neg")
    return (last_zero & not_has_neg).named("shuffle_dyck")


def make_shuffle_dyck2() -> rasp.SOp:
    """`make_shuffle_dyck` for ``()`` and ``{}``.

    >>> make_shuffle_dyck2()("({)}")
    [True, True, True, True]
    """
    return make_shuffle_dyck(pairs=["()", "{}"]).named("shuffle_dyck2")


def make_hist() -> rasp.SOp:
    """How many times each position's token occurs in the input (as in the RASP paper).

    >>> make_hist()("abac")
    [2, 1, 2, 1]
    """
    same_tok = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ).named("same_tok")
    return rasp.SelectorWidth(same_tok).named("hist")


def make_sort_unique(vals: rasp.SOp, keys: rasp.SOp) -> rasp.SOp:
    """``vals`` sorted by the ``<`` order of ``keys``; the keys must be unique.

    Each position moves to the number of keys smaller than its own. With repeated keys
    some positions get no value (None) and others several (averaged).

    >>> make_sort_unique(rasp.tokens, rasp.tokens)([2, 4, 3, 1])
    [1, 2, 3, 4]
    """
    smaller = rasp.Select(keys, keys, rasp.Comparison.LT).named("smaller")
    target_pos = rasp.SelectorWidth(smaller).named("target_pos")
    sel_new = rasp.Select(target_pos, rasp.indices, rasp.Comparison.EQ)
    return rasp.Aggregate(sel_new, vals).named("sort")


def make_sort(
    vals: rasp.SOp, keys: rasp.SOp, *, max_seq_len: int, min_key: float
) -> rasp.SOp:
    """``vals`` sorted by numerical ``keys``, which need not be unique; ties keep their
    input order.

    Unlike the RASP paper (see `make_sort_stable`), ties are broken without composing
    selectors: the key at index i becomes ``key + min_key * i / max_seq_len``, which is
    unique as long as different keys differ by at least ``min_key`` and inputs are at
    most ``max_seq_len`` long.

    >>> sort = make_sort(rasp.tokens, rasp.tokens, max_seq_len=5, min_key=1)
    >>> sort([2, 4, 3, 1])
    [1, 2, 3, 4]
    >>> sort([2, 4, 1, 2])
    [1, 2, 2, 4]
    """
    keys = rasp.SequenceMap(lambda x, i: x + min_key * i / max_seq_len, keys, rasp.indices)
    return make_sort_unique(vals, keys)


def make_sort_freq(max_seq_len: int) -> rasp.SOp:
    """The tokens sorted by how often they occur, most frequent first; tokens that occur
    equally often keep their input order.

    >>> make_sort_freq(max_seq_len=5)([2, 4, 2, 1])
    [2, 2, 4, 1]
    """
    hist = -1 * make_hist().named("hist")
    return make_sort(rasp.tokens, hist, max_seq_len=max_seq_len, min_key=1).named("sort_freq")


# ----------------------------------- programs for causal and non-causal evaluation


def make_frac_prevs(bools: rasp.SOp) -> rasp.SOp:
    """The fraction of positions up to and including this one where ``bools`` is true
    (as in the RASP paper).

    A position that selects only itself returns its own value unaveraged, so position 0
    gives the bool itself (``False == 0``).

    >>> make_frac_prevs(rasp.tokens == "l")("hello")
    [False, 0.0, 0.3333333333333333, 0.5, 0.4]
    """
    bools = rasp.numerical(bools)
    prevs = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)
    return rasp.numerical(rasp.Aggregate(prevs, bools, default=0)).named("frac_prevs")


def shift_by(offset: int, /, sop: rasp.SOp) -> rasp.SOp:
    """``sop`` shifted right by ``offset`` positions; the first ``offset`` are None.

    >>> shift_by(2, rasp.tokens)("abcd")
    [None, None, 'a', 'b']
    """
    select_off_by_offset = rasp.Select(
        rasp.indices, rasp.indices, lambda k, q: q == k + offset
    )
    out = rasp.Aggregate(select_off_by_offset, sop, default=None)
    return out.named(f"shift_by({offset})")


def detect_pattern(sop: rasp.SOp, pattern: Sequence[rasp.Value]) -> rasp.SOp:
    """True at the last position of each occurrence of ``pattern`` in ``sop``.

    The first ``len(pattern) - 1`` positions are None.

    >>> detect_pattern(rasp.tokens, "abc")("abcabc")
    [None, None, True, False, False, True]
    """
    if len(pattern) < 1:
        raise ValueError(f"Length of `pattern` must be at least 1. Got {pattern}")

    # detectors[i] is true at position j iff the i-th element of the pattern, counted
    # from the end, occurs at position j - i.
    detectors = []
    for i, element in enumerate(reversed(pattern)):
        detector = sop == element
        if i != 0:
            detector = shift_by(i, detector)
        detectors.append(detector)

    # The pattern is there where every detector fires.
    pattern_detected = detectors.pop()
    while detectors:
        pattern_detected = pattern_detected & detectors.pop()

    return pattern_detected.named(f"detect_pattern({pattern})")


def make_count_less_freq(n: int) -> rasp.SOp:
    """How many positions hold a token that occurs at most ``n`` times, at every position.

    (tracr's docstring says "fewer than n"; its code, kept here, compares with ``<=``.)

    >>> count_less_freq = make_count_less_freq(2)
    >>> count_less_freq(["a", "a", "a", "b", "b", "c"])
    [3, 3, 3, 3, 3, 3]
    >>> count_less_freq(["a", "a", "c", "b", "b", "c"])
    [6, 6, 6, 6, 6, 6]
    """
    hist = make_hist().named("hist")
    select_less = rasp.Select(hist, hist, lambda x, y: x <= n).named("select_less")
    return rasp.SelectorWidth(select_less).named("count_less_freq")


def make_count(sop: rasp.SOp, token: rasp.Value) -> rasp.SOp:
    """How many times ``token`` occurs in ``sop``, at every position.

    >>> count = make_count(rasp.tokens, "a")
    >>> count(["a", "a", "a", "b", "b", "c"])
    [3, 3, 3, 3, 3, 3]
    >>> count(["c", "a", "b", "c"])
    [1, 1, 1, 1]
    """
    return rasp.SelectorWidth(rasp.Select(sop, sop, lambda k, q: k == token)).named(
        f"count_{token}"
    )


def make_nary_sequencemap(f: Callable[..., rasp.Value], *sops: rasp.SOp) -> rasp.SOp:
    """``f(x1, ..., xn)`` position by position, from binary SequenceMaps.

    The SOps are zipped into tuples by a chain of SequenceMaps, then one Map applies
    ``f``. The tuples are encoded categorically and can make large compiled models.
    Unlike tracr's, this works for a single SOp and for SOps whose values are tuples.

    >>> nary = make_nary_sequencemap(lambda x, y, z: x + y - z,
    ...                              rasp.tokens, rasp.tokens, rasp.indices)
    >>> nary([1, 2, 3])
    [2, 3, 4]
    """
    if not sops:
        raise ValueError("make_nary_sequencemap needs at least one SOp")
    first, *rest = sops
    if not rest:
        return rasp.Map(f, first)
    values = rasp.SequenceMap(lambda x, y: (x, y), first, rest[0])
    for sop in rest[1:]:
        values = rasp.SequenceMap(lambda xs, y: (*xs, y), values, sop)
    return rasp.Map(lambda args: f(*args), values)
