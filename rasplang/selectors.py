"""Selectors: the [query, key] boolean matrices that Aggregate and SelectorWidth read,
the analogue of attention patterns (see `rasplang.nodes` for the SOps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from rasplang.nodes import (
    RASPExpr,
    SOp,
    Value,
    _check_fn,
    _check_selector,
    _check_sop,
    _fn_repr,
)
from rasplang.operators import BOOL_ERROR, Comparison


@attrs.define(frozen=True, eq=False, repr=False)
class Selector(RASPExpr):
    """A [query, key] boolean matrix, the analogue of an attention pattern (abstract)."""

    _default_name = "selector"

    def __bool__(self) -> bool:
        raise TypeError(BOOL_ERROR.format(kind="Selector"))

    def __and__(self, other: Any) -> Selector:
        return SelectorAnd(self, other) if isinstance(other, Selector) else NotImplemented

    def __rand__(self, other: Any) -> Selector:
        return SelectorAnd(other, self) if isinstance(other, Selector) else NotImplemented

    def __or__(self, other: Any) -> Selector:
        return SelectorOr(self, other) if isinstance(other, Selector) else NotImplemented

    def __ror__(self, other: Any) -> Selector:
        return SelectorOr(other, self) if isinstance(other, Selector) else NotImplemented

    def __invert__(self) -> Selector:
        return SelectorNot(self)


Predicate = Callable[[Value, Value], bool]


@attrs.define(frozen=True, eq=False, repr=False)
class Select(Selector):
    """``M[q][k] = predicate(keys[k], queries[q])``."""

    keys: SOp
    queries: SOp
    predicate: Predicate

    _default_name = "select"

    def __attrs_post_init__(self) -> None:
        _check_sop(self.keys, "Select's keys")
        _check_sop(self.queries, "Select's queries")
        _check_fn(self.predicate, "Select's predicate")

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.keys, self.queries)

    def _args_repr(self) -> str:
        return f"{self.keys.label}, {self.queries.label}, {_fn_repr(self.predicate)}"


@attrs.define(frozen=True, eq=False, repr=False)
class ConstantSelector(Selector):
    """A fixed [query, key] matrix (for tests); its size must match the input's."""

    value: tuple[tuple[bool, ...], ...] = attrs.field(
        converter=lambda rows: tuple(tuple(bool(v) for v in row) for row in rows)
    )
    check_length: bool = True

    _default_name = "constant_selector"

    def _args_repr(self) -> str:
        return repr([list(row) for row in self.value])


@attrs.define(frozen=True, eq=False, repr=False)
class _SelectorPair(Selector):
    """Two selectors combined elementwise (abstract)."""

    fst: Selector
    snd: Selector

    def __attrs_post_init__(self) -> None:
        _check_selector(self.fst, f"{type(self).__name__}'s fst")
        _check_selector(self.snd, f"{type(self).__name__}'s snd")

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.fst, self.snd)

    def _args_repr(self) -> str:
        return f"{self.fst.label}, {self.snd.label}"


@attrs.define(frozen=True, eq=False, repr=False)
class SelectorAnd(_SelectorPair):
    """Elementwise ``fst and snd`` of two selectors."""

    _default_name = "selector_and"


@attrs.define(frozen=True, eq=False, repr=False)
class SelectorOr(_SelectorPair):
    """Elementwise ``fst or snd`` of two selectors."""

    _default_name = "selector_or"


@attrs.define(frozen=True, eq=False, repr=False)
class SelectorNot(Selector):
    """Elementwise ``not inner`` of a selector."""

    inner: Selector

    _default_name = "selector_not"

    def __attrs_post_init__(self) -> None:
        _check_selector(self.inner, "SelectorNot's inner")

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.inner,)

    def _args_repr(self) -> str:
        return self.inner.label


def select(keys: SOp, queries: SOp, predicate: str | Comparison | Predicate) -> Select:
    """``select(keys, queries, "<")``: a Select with a comparison string or callable."""
    if isinstance(predicate, (str, Comparison)):
        predicate = Comparison.parse(predicate)
    return Select(keys, queries, predicate)
