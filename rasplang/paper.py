"""Programs from the RASP paper (Weiss et al., "Thinking Like Transformers", ICML 2021).

Written as the paper (and its reference code, ``paper_examples.rasp`` in the RASP
repository) writes them, in rasplang's lower-case API: the paper's ``and``/``or`` on
selectors are ``&``/``|`` here, ``indicator(b)`` is a numerical 0/1 Map, and averages
that the paper multiplies back into counts are rounded, so the counts are exact
integers rather than floats one rounding error away from them.

The paper works without a beginning-of-sequence token; rasplang's ``selector_width``
already handles empty selections, so the ``_bos`` variants are not needed.

`rasplang.lib` re-exports everything here; import from there.
"""

from __future__ import annotations

from collections.abc import Sequence

from rasplang.nodes import (
    Map,
    Selector,
    SequenceMap,
    SOp,
    Value,
    aggregate,
    indices,
    numerical,
    select,
    selector_width,
    tokens,
)

__all__ = [
    "make_double_hist",
    "make_dyck",
    "make_dyck1",
    "make_dyck2",
    "make_sort_by_most_freq",
    "make_sort_stable",
]


def _indicator(bools: SOp) -> SOp:
    """The paper's ``indicator``: 1 where ``bools`` is true, else 0 (numerically encoded)."""
    return numerical(Map(int, bools))


def _has_earlier_copy(same_tok: Selector) -> SOp:
    """True where the same token already occurred at an earlier position."""
    earlier_copy = (same_tok & select(indices, indices, "<")).named("earlier_copy")
    return (selector_width(earlier_copy) > 0).named("has_earlier")


def _count_so_far(flags: SOp, up_to_self: Selector, name: str) -> SOp:
    """How many positions up to and including this one have ``flags`` true.

    The paper computes ``(indices + 1) * aggregate(up_to_self, indicator(flags))``; the
    mean is rounded to a float, so the product is rounded back to the exact integer.
    """
    frac = numerical(aggregate(up_to_self, _indicator(flags), default=0)).named(f"frac_{name}")
    return SequenceMap(lambda i, f: round((i + 1) * f), indices, frac).named(name)


def make_double_hist() -> SOp:
    """For each token, how many distinct tokens occur as often as it does.

    The paper's "double histogram" (``hist2``): the histogram of the histogram, counting
    each distinct token once (at its first occurrence).

    >>> make_double_hist()("aaabbccdef")
    [1, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    >>> make_double_hist()("abab")
    [2, 2, 2, 2]
    """
    same_tok = select(tokens, tokens, "==").named("same_tok")
    hist = selector_width(same_tok).named("hist")
    has_earlier = _has_earlier_copy(same_tok)
    same_count = select(hist, hist, "==").named("same_count")
    first_copy = select(has_earlier, has_earlier, lambda key, query: not key).named("first_copy")
    return selector_width(same_count & first_copy).named("double_hist")


def make_sort_stable(vals: SOp, keys: SOp) -> SOp:
    """``vals`` sorted by ``keys``; equal keys keep their input order (the paper's sort).

    Unlike `rasplang.lib.make_sort`, ties are broken by composing selectors, so keys can
    be any comparable values (strings too) and need no ``max_seq_len`` or ``min_key``.

    >>> make_sort_stable(tokens, tokens)([3, 1, 2, 1])
    [1, 1, 2, 3]
    >>> make_sort_stable(indices, tokens)("bab")
    [1, 0, 2]
    """
    earlier_in_sorted = (
        select(keys, keys, "<") | (select(keys, keys, "==") & select(indices, indices, "<"))
    ).named("smaller")
    target_pos = selector_width(earlier_in_sorted).named("target_pos")
    sel_new = select(target_pos, indices, "==").named("sel_new")
    return aggregate(sel_new, vals).named("sort")


def make_sort_by_most_freq(max_seq_len: int, non_token: Value = "§") -> SOp:
    """The distinct tokens, most frequent first, then ``non_token`` padding.

    Tokens that occur equally often keep the order of their first occurrence. Later
    copies of a token get a frequency lowered by ``max_seq_len`` (so they sort last) and
    are replaced by ``non_token``. ``max_seq_len`` must be at least the input length.

    >>> make_sort_by_most_freq(max_seq_len=6)("abbccc")
    ['c', 'b', 'a', '§', '§', '§']
    >>> make_sort_by_most_freq(max_seq_len=5)("xyyx")
    ['x', 'y', '§', '§']
    """
    if not isinstance(max_seq_len, int) or max_seq_len < 1:
        raise ValueError(f"max_seq_len must be a positive int, got {max_seq_len!r}")
    same_tok = select(tokens, tokens, "==").named("same_tok")
    hist = selector_width(same_tok).named("hist")
    has_earlier = _has_earlier_copy(same_tok)
    filtered_freq = SequenceMap(
        lambda h, earlier: h - max_seq_len if earlier else h, hist, has_earlier
    ).named("filtered_freq")
    filtered_tokens = SequenceMap(
        lambda earlier, t: non_token if earlier else t, has_earlier, tokens
    ).named("filtered_tokens")
    neg_freq = (-filtered_freq).named("neg_freq")
    return make_sort_stable(filtered_tokens, neg_freq).named("sort_by_most_freq")


def _ptf(has_failed: SOp, depth: SOp, name: str) -> SOp:
    """The paper's per-prefix verdict: "F" failed, "T" balanced, "P" still possible."""
    return SequenceMap(
        lambda failed, d: "F" if failed else ("T" if d == 0 else "P"), has_failed, depth
    ).named(name)


def make_dyck1(open_token: str = "(", close_token: str = ")") -> SOp:
    """Dyck-1 per prefix (the paper's ``dyck1_ptf``): "T", "P" or "F" at each position.

    At position i: "F" if the prefix up to i already closed more than it opened at some
    point (no continuation can balance it), "T" if the prefix is balanced, else "P".
    Other tokens are ignored.

    >>> make_dyck1()("(()))(")
    ['P', 'P', 'P', 'T', 'F', 'F']
    >>> make_dyck1()("(a)")
    ['P', 'P', 'T']
    """
    up_to_self = select(indices, indices, "<=").named("up_to_self")
    n_opens = _count_so_far(tokens == open_token, up_to_self, "n_opens")
    n_closes = _count_so_far(tokens == close_token, up_to_self, "n_closes")
    balance = (n_opens - n_closes).named("balance")
    prev_imbalances = numerical(
        aggregate(up_to_self, _indicator(balance < 0), default=0)
    ).named("prev_imbalances")
    has_failed = (prev_imbalances > 0).named("has_failed")
    return _ptf(has_failed, balance, "dyck1")


def make_dyck(pairs: Sequence[str]) -> SOp:
    """Dyck-k per prefix (the paper's ``dyckk_ptf``) for the bracket ``pairs``.

    ``pairs`` are two-character strings such as ``["()", "{}"]``. At position i: "F" if
    the prefix closed a bracket that was not open or closed it with the wrong kind, "T"
    if it is balanced, else "P".

    Each closer finds its opener as the paper does: the latest opener whose depth after
    opening equals the depth before the closer (``delay_closer``), located by counting
    earlier positions with the same depth (``depth_index``). As in the paper, the input
    may contain only the brackets of ``pairs``.

    >>> dyck2 = make_dyck(["()", "{}"])
    >>> dyck2("({})")
    ['P', 'P', 'P', 'T']
    >>> dyck2("({)}")
    ['P', 'P', 'F', 'F']
    """
    pairs = list(pairs)
    if not pairs or any(not isinstance(p, str) or len(p) != 2 for p in pairs):
        raise ValueError(f"pairs must be a non-empty list of 2-character strings, got {pairs!r}")
    openers = {p[0] for p in pairs}
    closers = {p[1] for p in pairs}
    pair_set = set(pairs)

    is_open = Map(lambda t: t in openers, tokens).named("is_open")
    is_close = Map(lambda t: t in closers, tokens).named("is_close")
    up_to_self = select(indices, indices, "<=").named("up_to_self")
    n_opens = _count_so_far(is_open, up_to_self, "n_opens")
    n_closes = _count_so_far(is_close, up_to_self, "n_closes")
    depth = (n_opens - n_closes).named("depth")
    delay_closer = SequenceMap(lambda d, c: d + int(c), depth, is_close).named("delay_closer")

    same_delay = select(delay_closer, delay_closer, "==").named("same_delay")
    depth_index = selector_width(same_delay & up_to_self).named("depth_index")
    opener_keys = select(is_open, is_open, lambda key, query: key).named("opener_keys")
    prev_depth_index = select(depth_index, depth_index - 1, "==").named("prev_depth_index")
    open_for_close = (opener_keys & same_delay & prev_depth_index).named("open_for_close")
    matched_opener = aggregate(open_for_close, tokens, default="-").named("matched_opener")
    opener_matches = SequenceMap(
        lambda opener, t: opener + t in pair_set, matched_opener, tokens
    ).named("opener_matches")
    mismatch = SequenceMap(
        lambda close, matches: close and not matches, is_close, opener_matches
    ).named("mismatch")
    problem = (mismatch | (depth < 0)).named("problem")
    had_problem = numerical(
        aggregate(up_to_self, _indicator(problem), default=0)
    ).named("frac_problems")
    has_failed = (had_problem > 0).named("has_failed")
    return _ptf(has_failed, depth, "dyck")


def make_dyck2() -> SOp:
    """Dyck-2 per prefix over ``()`` and ``{}`` (the paper's ``dyck2_ptf``).

    >>> make_dyck2()("({}){")
    ['P', 'P', 'P', 'T', 'P']
    >>> make_dyck2()("(}")
    ['P', 'F']
    """
    return make_dyck(["()", "{}"]).named("dyck2")
