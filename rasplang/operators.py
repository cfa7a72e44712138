"""The functions that operators and comparison strings stand for.

``sop + 1`` and ``x < y`` build Map and SequenceMap nodes whose function is an
`Elementwise`; ``select(k, q, "<")`` builds a Select whose predicate is a `Comparison`.
Both are plain values (frozen attrs class, enum): they print as the expression they
stand for, compare by value, and know nothing of nodes.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable
from typing import Any

import attrs

Value = Any  # None, int, float, bool, str or any hashable value

# What `bool()` of an SOp or a Selector raises ({kind}: "SOp" or "Selector").
BOOL_ERROR = (
    "a RASP {kind} has no truth value: it stands for a whole sequence, not one value. "
    "`and`, `or`, `not`, `if sop:` and chained comparisons such as `0 < sop < 3` do not "
    "work on sequences; use `&`, `|`, `~` (elementwise and, or, not) and write chained "
    "comparisons as `(0 < sop) & (sop < 3)`."
)


BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod, "**": operator.pow,
    "and": lambda x, y: x and y, "or": lambda x, y: x or y,
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}
UNARY: dict[str, Callable[[Any], Any]] = {"neg": operator.neg, "not": operator.not_}
MIRRORED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


@attrs.frozen(repr=False)
class Elementwise:
    """The function of an operator-built Map or SequenceMap, e.g. ``x + 1`` or ``x < y``.

    ``op`` is the operator; ``const`` the constant operand of a Map when ``has_const``
    (unary operators and SequenceMaps have none); ``reverse`` puts the constant on the
    left.
    """

    op: str
    const: Any = None
    reverse: bool = False
    has_const: bool = False

    def __call__(self, x: Any, y: Any = None) -> Any:
        if self.op in UNARY:
            return UNARY[self.op](x)
        fn = BINARY[self.op]
        if self.has_const:
            return fn(self.const, x) if self.reverse else fn(x, self.const)
        return fn(x, y)

    def __repr__(self) -> str:
        if self.op == "neg":
            return "-x"
        if self.op == "not":
            return "not x"
        if not self.has_const:
            return f"x {self.op} y"
        if self.reverse:
            return f"{self.const!r} {self.op} x"
        return f"x {self.op} {self.const!r}"


class Comparison(enum.Enum):
    """A predicate for Select, applied as ``key OP query``."""

    EQ = "=="
    LT = "<"
    LEQ = "<="
    GT = ">"
    GEQ = ">="
    NEQ = "!="
    TRUE = "True"
    FALSE = "False"

    def __call__(self, key: Value, query: Value) -> bool:
        if key is None:
            raise ValueError("key is None!")
        if query is None:
            raise ValueError("query is None!")
        return bool(_COMPARISONS[self](key, query))

    def __repr__(self) -> str:
        return f"Comparison.{self.name}"

    @classmethod
    def parse(cls, spec: str | Comparison) -> Comparison:
        """``"<"``, ``"=="``, ``"true"``, ... (or a Comparison) -> Comparison."""
        if isinstance(spec, Comparison):
            return spec
        key = spec.strip().lower() if isinstance(spec, str) else spec
        if key not in _COMPARISON_NAMES:
            raise ValueError(
                f"unknown comparison {spec!r}; expected one of {sorted(_COMPARISON_NAMES)}"
            )
        return _COMPARISON_NAMES[key]


_COMPARISONS: dict[Comparison, Callable[[Any, Any], Any]] = {
    Comparison.EQ: operator.eq,
    Comparison.LT: operator.lt,
    Comparison.LEQ: operator.le,
    Comparison.GT: operator.gt,
    Comparison.GEQ: operator.ge,
    Comparison.NEQ: operator.ne,
    Comparison.TRUE: lambda key, query: True,
    Comparison.FALSE: lambda key, query: False,
}
_COMPARISON_NAMES = {c.value.lower(): c for c in Comparison} | {
    c.name.lower(): c for c in Comparison
}
