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

import numbers
from typing import TYPE_CHECKING

import attrs

from rasplang.nodes import (
    Aggregate,
    Encoding,
    LinearSequenceMap,
    RASPExpr,
    Select,
    SelectorWidth,
    SequenceMap,
    SOp,
)

if TYPE_CHECKING:
    from rasplang.analysis import Analysis
    from rasplang.backend.fusion import Fusion


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


# ------------------------------------------------ what the build converts, from the analysis


def conversions(analysis: Analysis, fusion: Fusion) -> dict[SOp, RASPExpr]:
    """Every numerical SOp the build pass re-encodes as an `AsCategorical` with
    ``fusion``'s decisions (``Fusion()``: ``optimize=False``), and the first node that
    reads it so (the build charges the conversion to that reader), from the analysis
    alone: the SOps `build._Builder.categorical` is called on, in the order it is.

    - a SequenceMap built as a lookup table (not affine, not a per-index table, not
      reading a virtual input, not read directly on a numerical input): both inputs;
    - the keys and queries of each Select of a head's selector (not a squared-distance
      fold), unless virtual (the head then reads their bases);
    - the value of a categorical Aggregate, unless virtual (folded into the OV matrix).
    """
    numerical = {x for x, e in analysis.encodings.items() if e is Encoding.NUMERICAL}
    out: dict[SOp, RASPExpr] = {}

    def read(sop: SOp, reader: RASPExpr) -> None:
        if sop in numerical and sop not in fusion.virtual:
            out.setdefault(sop, reader)

    for node in analysis.nodes:
        if isinstance(node, (SequenceMap, LinearSequenceMap)):
            if _affine(analysis, node) or node in fusion.lattice or node in fusion.direct \
                    or any(fusion.inline(x, node) for x in (node.fst, node.snd)):
                continue
            read(node.fst, node)
            read(node.snd, node)
        elif isinstance(node, (Aggregate, SelectorWidth)):
            if not (isinstance(node, Aggregate) and node.selector in fusion.distance):
                for select in selects(node.selector):
                    read(select.keys, node)
                    read(select.queries, node)
            if isinstance(node, Aggregate) and node not in numerical:
                read(node.sop, node)
    return out


def _affine(analysis: Analysis, node: SOp) -> bool:
    """Whether the build reads a LinearSequenceMap linearly (`build._Builder.sequence_map`:
    a numerical output of numerical or number-valued inputs)."""
    return isinstance(node, LinearSequenceMap) \
        and analysis.encodings[node] is Encoding.NUMERICAL \
        and all(analysis.encodings[x] is Encoding.NUMERICAL
                or all(isinstance(v, numbers.Real) for v in analysis.value_sets[x]
                       if v is not None) for x in (node.fst, node.snd))


def selects(selector: RASPExpr) -> list[Select]:
    """The Selects of a selector tree, in the order `selector_terms` resolves them."""
    out, stack = [], [selector]
    while stack:
        node = stack.pop()
        if isinstance(node, Select):
            out.append(node)
        else:
            stack.extend(reversed(node.children))
    return out


def conversion_problems(analysis: Analysis, fusion: Fusion,
                        mlp_exactness: float) -> list[tuple[str, str]]:
    """``(reader's label, reason)`` for each of `conversions` whose values are too close
    for any discretisation (two roundings of one mean an ulp apart), before any block is
    built. Checked with no input error and the steepest slope, ``mlp_exactness``, by
    `numerical_mlp.discretisation_problem`: the build checks the same values with the
    input's error bound and a slope no steeper (`Margins.slope`), so it refuses them too."""
    from rasplang.backend.chambers.numerical_mlp import discretisation_problem

    problems = []
    for sop, reader in conversions(analysis, fusion).items():
        raw = [v for v in analysis.value_sets[sop] if v is not None]
        problem = discretisation_problem([float(v) for v in raw], raw, 0.0, mlp_exactness)
        if problem:
            problems.append((analysis.labels[reader],
                             f"input {analysis.labels[sop]!r}: {problem}"))
    return problems
