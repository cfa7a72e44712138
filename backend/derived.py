"""SOps the compiler inserts between program nodes: encoding conversions and products.

These never appear in a program or in `rasplang.analysis`; the build pass creates them
on demand, gives each its own residual subspace and an MLP, and the schedule and the
model's circuit (`CompiledModel.circuit`, keyed by their labels) show where they went.

- `AsCategorical`: a numerical SOp re-encoded one-hot over its exact value set (a
  discretising MLP, see ``chambers/numerical_mlp.py``). Used where a categorical
  reader needs a table over values: a SequenceMap, a Select (keys or queries), a
  categorical Aggregate of a numerical SOp.
- `Scratch`, `Linear`: what fused MLPs read in place of a SelectorWidth's count and a
  LinearSequenceMap (``fusion.py``); they take no residual directions of their own.
- `Product`: the tuple of several categorical SOps, one-hot over the cartesian product
  of their values (``chambers/categorical_mlp.product_mlp``). Used as the keys or
  queries of a selector that combines Selects on different SOps with ``|`` or ``~``.
"""

from __future__ import annotations

import attrs

from rasplang.nodes import RASPExpr, SOp


@attrs.define(frozen=True, eq=False, repr=False)
class _OfOne(SOp):
    """An inserted SOp computed from one SOp, ``inner``."""

    inner: SOp

    __hash__ = object.__hash__

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.inner,)


class AsCategorical(_OfOne):
    """``inner`` (numerical) encoded categorically; the same values."""

    _default_name = "as_categorical"


class Scratch(_OfOne):
    """A SelectorWidth's (or length's) scratch coordinate ``-1 / (width + 1)``, as a
    numerical SOp (``optimize=True`` decodes the count inside its readers)."""

    _default_name = "scratch"


class Linear(_OfOne):
    """A numerical LinearSequenceMap ``a x + b y`` (``inner``) read by the MLPs after it
    as that combination of its inputs' coordinates, with no direction of its own."""

    _default_name = "linear"


@attrs.define(frozen=True, eq=False, repr=False)
class Product(SOp):
    """The tuple ``(parts[0], ..., parts[-1])`` at every position (categorical)."""

    parts: tuple[SOp, ...]

    __hash__ = object.__hash__
    _default_name = "product"

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return self.parts
