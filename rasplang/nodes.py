"""RASP expression nodes: frozen attrs classes with identity hashing.

Every node is immutable. ``node.named(name)`` and ``node.annotated(**kw)`` return an
evolved copy with a fresh ``unique_id``; the original is untouched. Because ``==`` on
an SOp builds a new expression (``tokens == "a"`` is a ``Map``), nodes hash and compare
by identity: use them as dict keys and set members, never with ``in`` on a list.

Concrete node classes are final: ``LinearSequenceMap`` is not a ``SequenceMap``
subclass, so dispatch tables keyed by ``type(node)`` need no ordering tricks.
"""

from __future__ import annotations

import enum
import itertools
import numbers
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from rasplang.operators import BOOL_ERROR, MIRRORED, Comparison, Elementwise, Value

ExprT = TypeVar("ExprT", bound="RASPExpr")

_ids = itertools.count(1)


def _freeze(annotations: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(annotations))


class Encoding(str, enum.Enum):
    """How the compiler encodes an SOp in the residual stream (a str: equal to its value,
    and written as it in JSON)."""

    CATEGORICAL = "categorical"
    NUMERICAL = "numerical"

    def __str__(self) -> str:
        return self.value


@attrs.define(frozen=True, eq=False, repr=False)
class RASPExpr:
    """Base of every RASP expression (abstract)."""

    name: str | None = attrs.field(default=None, kw_only=True)
    annotations: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_freeze, kw_only=True
    )
    unique_id: int = attrs.field(init=False, factory=lambda: next(_ids))

    _default_name = "expr"

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        """Direct dependencies of this expression, in a fixed order."""
        return ()

    @property
    def label(self) -> str:
        """The node's name if it was named, else ``<kind>_<unique_id>``."""
        if self.name is not None:
            return self.name
        return f"{self._default_name}_{self.unique_id}"

    def named(self: ExprT, name: str) -> ExprT:
        """Return a copy of this node with the given name (and a new id)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a node name must be a non-empty str, got {name!r}")
        return attrs.evolve(self, name=name)

    def annotated(self: ExprT, **annotations: Any) -> ExprT:
        """Return a copy of this node with these annotations added (and a new id)."""
        if "name" in annotations:
            name = annotations.pop("name")
            return attrs.evolve(self, name=name, annotations={**self.annotations, **annotations})
        return attrs.evolve(self, annotations={**self.annotations, **annotations})

    def __call__(self, xs: Sequence[Value]) -> Any:
        """Evaluate this expression on one input with the reference evaluator."""
        from rasplang.evaluator import evaluate

        return evaluate(self, xs)

    def _args_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{self.label} = {type(self).__name__}({self._args_repr()})"


def _fn_repr(f: Callable[..., Any]) -> str:
    if isinstance(f, (Elementwise, Comparison)):
        return repr(f)
    return getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or repr(f)


def _is_constant(value: Any) -> bool:
    return value is None or isinstance(value, (str, numbers.Number))


# --------------------------------------------------------------------------- SOps


@attrs.define(frozen=True, eq=False, repr=False)
class SOp(RASPExpr):
    """A sequence operation: a function from an input sequence to a sequence (abstract).

    Arithmetic, comparison and logical operators build ``Map`` (with a constant) or
    ``SequenceMap`` (with another SOp) nodes.
    """

    __hash__ = object.__hash__

    _default_name = "sop"

    def __bool__(self) -> bool:
        raise TypeError(BOOL_ERROR.format(kind="SOp"))

    # One-line dunders that delegate to `_elementwise`.
    def __add__(self, other: Any) -> SOp: return _elementwise("+", self, other)
    def __radd__(self, other: Any) -> SOp: return _elementwise("+", self, other, reverse=True)
    def __sub__(self, other: Any) -> SOp: return _elementwise("-", self, other)
    def __rsub__(self, other: Any) -> SOp: return _elementwise("-", self, other, reverse=True)
    def __mul__(self, other: Any) -> SOp: return _elementwise("*", self, other)
    def __rmul__(self, other: Any) -> SOp: return _elementwise("*", self, other, reverse=True)
    def __truediv__(self, other: Any) -> SOp: return _elementwise("/", self, other)
    def __rtruediv__(self, other: Any) -> SOp: return _elementwise("/", self, other, reverse=True)
    def __floordiv__(self, other: Any) -> SOp: return _elementwise("//", self, other)
    def __rfloordiv__(self, other: Any) -> SOp: return _elementwise("//", self, other, reverse=True)
    def __mod__(self, other: Any) -> SOp: return _elementwise("%", self, other)
    def __rmod__(self, other: Any) -> SOp: return _elementwise("%", self, other, reverse=True)
    def __pow__(self, other: Any) -> SOp: return _elementwise("**", self, other)
    def __rpow__(self, other: Any) -> SOp: return _elementwise("**", self, other, reverse=True)
    def __and__(self, other: Any) -> SOp: return _elementwise("and", self, other)
    def __rand__(self, other: Any) -> SOp: return _elementwise("and", self, other, reverse=True)
    def __or__(self, other: Any) -> SOp: return _elementwise("or", self, other)
    def __ror__(self, other: Any) -> SOp: return _elementwise("or", self, other, reverse=True)
    def __eq__(self, other: Any) -> SOp: return _elementwise("==", self, other)  # type: ignore[override]
    def __ne__(self, other: Any) -> SOp: return _elementwise("!=", self, other)  # type: ignore[override]
    def __lt__(self, other: Any) -> SOp: return _elementwise("<", self, other)
    def __le__(self, other: Any) -> SOp: return _elementwise("<=", self, other)
    def __gt__(self, other: Any) -> SOp: return _elementwise(">", self, other)
    def __ge__(self, other: Any) -> SOp: return _elementwise(">=", self, other)
    def __neg__(self) -> SOp: return Map(Elementwise("neg"), self)
    def __invert__(self) -> SOp: return Map(Elementwise("not"), self)



def _elementwise(op: str, sop: SOp, other: Any, *, reverse: bool = False) -> SOp:
    """Build the node for ``sop OP other`` (or ``other OP sop`` when ``reverse``)."""
    if isinstance(other, SOp):
        fst, snd = (other, sop) if reverse else (sop, other)
        return SequenceMap(Elementwise(op), fst, snd)
    if not _is_constant(other):
        return NotImplemented
    if reverse and op in MIRRORED:  # Python swaps comparisons itself; keep them readable
        op, reverse = MIRRORED[op], False
    return Map(Elementwise(op, other, reverse, has_const=True), sop)


@attrs.define(frozen=True, eq=False, repr=False)
class _Primitive(SOp):
    """A primitive SOp (abstract): labelled and shown by its name, with no children."""

    @property
    def label(self) -> str:
        return self.name or self._default_name

    def __repr__(self) -> str:
        return self.label


@attrs.define(frozen=True, eq=False, repr=False)
class TokensType(_Primitive):
    """The input tokens (primitive)."""

    _default_name = "tokens"


@attrs.define(frozen=True, eq=False, repr=False)
class IndicesType(_Primitive):
    """The position of each token, 0..n-1 (primitive)."""

    _default_name = "indices"


@attrs.define(frozen=True, eq=False, repr=False)
class LengthType(_Primitive):
    """The input length n at every position (primitive)."""

    _default_name = "length"


tokens = TokensType()
indices = IndicesType()
length = LengthType()


def _check_sop(value: Any, what: str) -> None:
    if not isinstance(value, SOp):
        raise TypeError(f"{what} must be an SOp, got {type(value).__name__}: {value!r}")


def _check_selector(value: Any, what: str) -> None:
    from rasplang.selectors import Selector  # selectors.py builds on this module

    if not isinstance(value, Selector):
        raise TypeError(f"{what} must be a Selector, got {type(value).__name__}: {value!r}")


def _check_fn(value: Any, what: str) -> None:
    if not callable(value) or isinstance(value, RASPExpr):
        raise TypeError(f"{what} must be a function, got {type(value).__name__}: {value!r}")


@attrs.define(frozen=True, eq=False, repr=False)
class Map(SOp):
    """Apply ``f`` to every element of ``inner``; a None element stays None.

    With ``simplify=True`` (tracr's default) a Map of a Map is fused into one Map.
    """

    f: Callable[[Value], Value]
    inner: SOp
    simplify: bool = True

    _default_name = "map"

    def __attrs_post_init__(self) -> None:
        _check_fn(self.f, "Map's f")
        _check_sop(self.inner, "Map's inner")
        if self.simplify and isinstance(self.inner, Map):
            outer_f, inner = self.f, self.inner
            object.__setattr__(self, "f", _Composed(outer_f, inner.f))
            object.__setattr__(self, "inner", inner.inner)
        # Simplified once; evolved copies (named, annotated) must not fuse again.
        object.__setattr__(self, "simplify", False)

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.inner,)

    def _args_repr(self) -> str:
        return f"{_fn_repr(self.f)}, {self.inner.label}"


@attrs.frozen(repr=False)
class _Composed:
    """``outer(inner(x))``: the function of two fused Maps."""

    outer: Callable[[Value], Value]
    inner: Callable[[Value], Value]

    def __call__(self, x: Value) -> Value:
        return self.outer(self.inner(x))

    def __repr__(self) -> str:
        return f"{_fn_repr(self.outer)} . {_fn_repr(self.inner)}"


@attrs.define(frozen=True, eq=False, repr=False)
class SequenceMap(SOp):
    """Apply ``f(x, y)`` to ``fst`` and ``snd`` position by position; None gives None."""

    f: Callable[[Value, Value], Value]
    fst: SOp
    snd: SOp

    _default_name = "sequence_map"

    def __attrs_post_init__(self) -> None:
        _check_fn(self.f, "SequenceMap's f")
        _check_sop(self.fst, "SequenceMap's fst")
        _check_sop(self.snd, "SequenceMap's snd")

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.fst, self.snd)

    def _args_repr(self) -> str:
        return f"{_fn_repr(self.f)}, {self.fst.label}, {self.snd.label}"


@attrs.define(frozen=True, eq=False, repr=False)
class LinearSequenceMap(SOp):
    """``fst_fac * fst + snd_fac * snd`` elementwise; compiles to a linear layer."""

    fst: SOp
    snd: SOp
    fst_fac: float
    snd_fac: float

    _default_name = "linear_sequence_map"

    def __attrs_post_init__(self) -> None:
        _check_sop(self.fst, "LinearSequenceMap's fst")
        _check_sop(self.snd, "LinearSequenceMap's snd")
        for what in ("fst_fac", "snd_fac"):
            if not isinstance(getattr(self, what), numbers.Real):
                raise TypeError(f"LinearSequenceMap's {what} must be a number")

    def f(self, x: Value, y: Value) -> Value:
        """The elementwise function, as for a SequenceMap."""
        return self.fst_fac * x + self.snd_fac * y

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.fst, self.snd)

    def _args_repr(self) -> str:
        return f"{self.fst.label}, {self.snd.label}, {self.fst_fac!r}, {self.snd_fac!r}"


@attrs.define(frozen=True, eq=False, repr=False)
class Full(SOp):
    """The constant ``fill`` at every position."""

    fill: Value

    _default_name = "full"

    def _args_repr(self) -> str:
        return repr(self.fill)


@attrs.define(frozen=True, eq=False, repr=False)
class ConstantSOp(SOp):
    """A fixed sequence of values (for tests); its length must match the input's."""

    value: tuple[Value, ...] = attrs.field(converter=tuple)
    check_length: bool = True

    _default_name = "constant_sop"

    def _args_repr(self) -> str:
        return repr(list(self.value))


@attrs.define(frozen=True, eq=False, repr=False)
class Aggregate(SOp):
    """Per query, the selected values of ``sop``: none -> ``default``; one -> it;
    several numbers -> their mean; several equal values -> that value; several
    different non-numbers -> ValueError."""

    selector: Selector
    sop: SOp
    default: Value = None

    _default_name = "aggregate"

    def __attrs_post_init__(self) -> None:
        _check_selector(self.selector, "Aggregate's selector")
        _check_sop(self.sop, "Aggregate's sop")
        if not _is_constant(self.default):
            raise TypeError(
                f"Aggregate's default must be None, a number or a str, got {self.default!r}"
            )

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.selector, self.sop)

    def _args_repr(self) -> str:
        return f"{self.selector.label}, {self.sop.label}, default={self.default!r}"


@attrs.define(frozen=True, eq=False, repr=False)
class SelectorWidth(SOp):
    """The number of keys the selector selects for each query."""

    selector: Selector

    _default_name = "selector_width"

    def __attrs_post_init__(self) -> None:
        _check_selector(self.selector, "SelectorWidth's selector")

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.selector,)

    def _args_repr(self) -> str:
        return self.selector.label




# ---------------------------------------------------------------------- encodings

_ENCODING = "encoding"


def numerical(sop: SOp) -> SOp:
    """Return a copy of ``sop`` annotated to be encoded numerically (one dimension)."""
    _check_sop(sop, "numerical()'s argument")
    return sop.annotated(encoding=Encoding.NUMERICAL)


def categorical(sop: SOp) -> SOp:
    """Return a copy of ``sop`` annotated to be encoded categorically (one-hot)."""
    _check_sop(sop, "categorical()'s argument")
    return sop.annotated(encoding=Encoding.CATEGORICAL)


def get_encoding(sop: SOp) -> Encoding:
    """The encoding of an SOp; categorical unless annotated otherwise."""
    _check_sop(sop, "get_encoding()'s argument")
    return Encoding(sop.annotations.get(_ENCODING, Encoding.CATEGORICAL))


def is_numerical(sop: SOp) -> bool:
    """Whether ``sop`` is numerically encoded."""
    return get_encoding(sop) is Encoding.NUMERICAL


def is_categorical(sop: SOp) -> bool:
    """Whether ``sop`` is categorically encoded."""
    return get_encoding(sop) is Encoding.CATEGORICAL


# --------------------------------------------------- lower-case, paper-style API



def aggregate(selector: Selector, sop: SOp, default: Value = None) -> Aggregate:
    """``aggregate(sel, sop, default=None)``."""
    return Aggregate(selector, sop, default)


def selector_width(selector: Selector) -> SelectorWidth:
    """``selector_width(sel)``: the number of selected keys per query."""
    return SelectorWidth(selector)


# Selectors live in selectors.py and build on the SOps above; re-exported here, where
# every node kind has always been importable from.
from rasplang.selectors import (  # noqa: E402, F401
    ConstantSelector,
    Predicate,
    Select,
    Selector,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    select,
)
