"""Fusion and folding (``optimize=True``): nodes computed inside the blocks that read them.

A *virtual* node gets no residual directions and no block of its own. Each reader
computes it, composed with its own function, from the node's *bases*: the nearest SOps
(or a SelectorWidth's scratch coordinate, `Scratch`) that are in the residual stream.
Every value set is finite and known (`rasplang.analysis`), so the composition is a
table, a `View`: the node's value at every combination of its bases' values, read
from the analysis's tables (no program function is called again).

What may be virtual (`choose`), and which readers absorb it:

- a Map or a (non-linear) SequenceMap of any nodes, a SelectorWidth's count (its
  decoding MLP; the head and its scratch coordinate stay), and a numerical
  LinearSequenceMap of numerical SOps (its readers' MLPs read the combination
  ``a x + b y`` of the two coordinates directly, `Linear`);
- read by Maps and table SequenceMaps, which become one MLP over the union of the
  bases (a lookup table over categorical bases, or a discretisation of the one
  numerical base gated by the categorical ones, ``chambers/fused_mlp.py``);
- read as the keys or queries of a Select when it has one categorical base: the head's
  query-key table is the predicate composed with the node's function; under a ``|``
  or ``~`` of Selects on different SOps, the `Product` MLP those need reads its bases;
- read as the value of an Aggregate when it has one categorical base: the head's OV
  matrix writes the encoding of the node's value directly;
- read as the query of an equality with a position, as a sum of functions of two
  categorical bases: the head scores the keys by squared distance (``distance.py``);
- read by a SequenceMap of two running fractions, as a Map of one: the SequenceMap is
  one table per index over the fractions that index can hold (``lattice.py``).

Cost model. Folding removes the node's residual directions and its MLP, and takes
an MLP sublayer (a whole layer when it was between two MLPs) off every path through
it; it never adds a layer. Its price is table size: a reader's fused table has one
entry per combination of its bases' values (times the steps of a numerical base), and
a node stays in the residual stream when any reader's table would pass
`FUSED_TABLE_BUDGET` entries, or grow more than `FUSED_GROWTH` times over the reader's
unfused table. Every decision is made before any weight is built, in topological
order, so each reader's table is checked with its inputs' final bases. The squared-
distance folds are kept where the model is no deeper, the per-index tables only where
they make it shallower (they trade MLP width for a layer).
"""

from __future__ import annotations

import math
import weakref
from collections import defaultdict

import attrs

from rasplang.analysis import Analysis
from rasplang.backend.derived import Linear, Scratch, selects
from rasplang.backend.distance import Fold, folds
from rasplang.backend.lattice import lattice_pairs
from rasplang.nodes import (
    Aggregate,
    Encoding,
    LengthType,
    LinearSequenceMap,
    Map,
    RASPExpr,
    Select,
    SelectorNot,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    SOp,
)

#: Largest table (combinations of base values, times a numerical base's values) a reader
#: of a virtual node may have: its MLP has up to that many hidden units (twice per
#: step of a numerical base).
FUSED_TABLE_BUDGET = 4096
#: Largest factor by which folding may grow a reader's table over its unfused one.
FUSED_GROWTH = 8


class FusionInconsistent(Exception):
    """A fold's precondition, checked when `choose` took it, does not hold where its block
    is built (an internal error, never a user's): `compile` builds one block per node
    instead, and the message names the node."""


# ------------------------------------------------------------------ the decisions


@attrs.frozen
class _Base:
    """What `choose_virtual` knows of a base: its size and kind."""

    node: SOp
    size: int
    numerical: bool
    nullable: bool


def _readers(analysis: Analysis) -> dict[SOp, list[tuple[RASPExpr, str]]]:
    """Each SOp's readers and the role it plays for them."""
    out: dict[SOp, list[tuple[RASPExpr, str]]] = defaultdict(list)
    for node in analysis.nodes:
        if isinstance(node, Map):
            out[node.inner].append((node, "map"))
        elif isinstance(node, (SequenceMap, LinearSequenceMap)):
            for child in dict.fromkeys((node.fst, node.snd)):
                out[child].append((node, "pair"))
        elif isinstance(node, Select):
            for child in dict.fromkeys((node.keys, node.queries)):
                out[child].append((node, "select"))
        elif isinstance(node, Aggregate):
            out[node.sop].append((node, "value"))
    return out


def is_affine_read(analysis: Analysis, node: SOp) -> bool:
    """Whether a SequenceMap is built as a linear read of its inputs (not a table)."""
    return isinstance(node, LinearSequenceMap) and \
        analysis.encodings[node] is Encoding.NUMERICAL


def _under_or_not(analysis: Analysis) -> set[Select]:
    """The Selects under a ``|`` or ``~`` (whose SOps a head reads through a Product)."""
    out: set[Select] = set()
    for node in analysis.nodes:
        if not isinstance(node, (Aggregate, SelectorWidth)):
            continue
        stack = [(node.selector, False)]
        while stack:
            sel, under = stack.pop()
            if isinstance(sel, Select):
                if under:
                    out.add(sel)
                continue
            nested = under or isinstance(sel, (SelectorOr, SelectorNot))
            stack.extend((child, nested) for child in sel.children)
    return out


def _plain_numbers(analysis: Analysis, node: LinearSequenceMap) -> bool:
    """Whether a linear SequenceMap's inputs and output are numerical and never None."""
    return all(analysis.encodings[x] is Encoding.NUMERICAL
               and None not in analysis.value_sets[x] for x in (node, node.fst, node.snd))


@attrs.frozen
class Fusion:
    """What `choose` decided: the virtual nodes, and the SequenceMaps on a numerical
    input that read it directly (one gated discretisation instead of a one-hot
    conversion followed by a table)."""

    virtual: frozenset[SOp] = frozenset()
    direct: frozenset[SOp] = frozenset()
    #: Virtual nodes that are also built, and the readers that read them built.
    built_for: dict[SOp, frozenset[SOp]] = attrs.field(factory=dict)
    #: Selects scored by squared distance, and the query nodes folded into their heads
    #: (``distance.py``).
    distance: frozenset[Select] = frozenset()
    distance_chain: frozenset[SOp] = frozenset()
    #: SequenceMaps of two prefix fractions, one table per index (``lattice.py``).
    lattice: frozenset[SOp] = frozenset()

    def inline(self, node: SOp, reader: RASPExpr) -> bool:
        """Whether ``reader`` computes ``node`` inside itself."""
        return node in self.virtual and reader not in self.built_for.get(node, ())


def _next(slot: int, parity: int) -> int:
    """The first sublayer after ``slot`` of the given parity (0 attention, 1 MLP)."""
    s = slot + 1
    return s if s % 2 == parity else s + 1


def depth(analysis: Analysis, fusion: Fusion) -> int:
    """The sublayer where the output is ready, as the schedule places blocks (as soon as
    possible), with ``fusion``'s decisions: the cost model's measure of depth."""
    ready: dict[SOp, int] = {}  # where a node is ready as its readers compute it inside
    built: dict[SOp, int] = {}  # where its own block has written it

    def at(x: SOp, reader: RASPExpr) -> int:
        return ready[x] if fusion.inline(x, reader) else built[x]

    def table_read(x: SOp, reader: RASPExpr) -> int:  # a numerical SOp read as a table
        numerical = analysis.encodings[x] is Encoding.NUMERICAL and \
            not fusion.inline(x, reader)  # is converted first
        return _next(at(x, reader), 1) if numerical else at(x, reader)

    for node in analysis.nodes:
        if not isinstance(node, SOp):
            continue
        if isinstance(node, (Aggregate, SelectorWidth, LengthType)):
            terms = [] if isinstance(node, LengthType) else selects(node.selector)
            sides = [x for s in terms for x in (s.keys, s.queries)]
            start = max([-1, *(table_read(x, node) for x in sides)])
            if isinstance(node, Aggregate):
                value = node.sop
                numbers = analysis.encodings[node] is Encoding.NUMERICAL
                start = max(start, at(value, node) if numbers else table_read(value, node))
            slot = _next(start, 0)
            built[node] = slot if isinstance(node, Aggregate) else slot + 1
            ready[node] = slot if node in fusion.virtual else built[node]
            continue
        inputs = [c for c in node.children if isinstance(c, SOp)]
        if not inputs:
            ready[node] = built[node] = -1
            continue
        if isinstance(node, (SequenceMap, LinearSequenceMap)) and not is_affine_read(
                analysis, node) and node not in fusion.direct:
            built[node] = _next(max(table_read(x, node) for x in inputs), 1)
        else:
            built[node] = _next(max(at(x, node) for x in inputs), 1)
        ready[node] = max(at(x, node) for x in inputs) if node in fusion.virtual \
            else built[node]
    return built.get(analysis.program, -1)


#: `choose`'s decisions for each analysis (the size estimate and the build both ask).
_CHOSEN: weakref.WeakKeyDictionary[Analysis, Fusion] = weakref.WeakKeyDictionary()


def choose(analysis: Analysis) -> Fusion:
    """The nodes to compute inside their readers (see the module docstring)."""
    if analysis not in _CHOSEN:
        _CHOSEN[analysis] = _choose(analysis)
    return _CHOSEN[analysis]


def _choose(analysis: Analysis) -> Fusion:
    readers = _readers(analysis)
    in_product = _under_or_not(analysis)
    virtual: set[SOp] = set()
    built_for: dict[SOp, set[RASPExpr]] = {}

    def inline(x: SOp, reader: RASPExpr) -> bool:
        return x in virtual and reader not in built_for.get(x, ())
    bases: dict[SOp, tuple[_Base, ...]] = {}

    owned: dict[SOp, tuple[_Base, ...]] = {}

    def own(node: SOp) -> tuple[_Base, ...]:
        if node not in owned:
            values = analysis.value_sets[node]
            numerical = analysis.encodings[node] is Encoding.NUMERICAL
            size = sum(v is not None for v in values)
            owned[node] = (_Base(node, size, numerical, None in values),)
        return owned[node]

    def union(*groups: tuple[_Base, ...]) -> tuple[_Base, ...]:
        return tuple({id(b.node): b for g in groups for b in g}.values())

    def table_ok(group: tuple[_Base, ...], unfused: int, numerical_out: bool) -> int:
        """0: no; 1: within budget but grown past FUSED_GROWTH; 2: yes."""
        # one numerical base at most, never None; a categorical base that can be None only
        # where None comes out as the zero vector (a categorical output)
        numerical = [b for b in group if b.numerical]
        if len(numerical) > 1 or any(b.nullable for b in numerical) or (
                numerical and numerical_out and any(b.nullable for b in group)):
            return 0
        size = math.prod(max(1, b.size) for b in group)
        if size > FUSED_TABLE_BUDGET:
            return 0
        return 2 if size <= FUSED_GROWTH * max(1, unfused) else 1

    def reader_ok(node: SOp, mine: tuple[_Base, ...], reader: RASPExpr, role: str) -> int:
        if reader in distance or reader in distance_chain:
            # the head reads the chain's leaves as one-hots from the residual stream
            # (``distance.py``): only the chain itself is computed inside it
            return 2 if node in distance_chain else 0
        if reader in lattice or reader in lattice_maps:
            # the per-index table reads the two fractions, each in the residual stream or
            # as its combination (`Linear`), through the Maps folded into it
            return 2 if node in lattice_maps or node in linear else 0
        if role == "select":
            if len(mine) == 1 and not mine[0].numerical:
                return 2  # the head reads the base
            if reader in in_product:  # the Product MLP of its `|` or `~` reads the bases
                return table_ok(mine, own(node)[0].size, False)
            return 0
        if role == "value":
            if len(mine) != 1 or mine[0].numerical:
                return 0
            if analysis.encodings[reader] is not Encoding.NUMERICAL:
                return 2
            return 2 * all(isinstance(v, (int, float)) for v in analysis.value_sets[node])
        if role == "pair" and is_affine_read(analysis, reader):
            return 0
        inputs = (reader.inner,) if role == "map" else (reader.fst, reader.snd)
        group = union(*(mine if x is node else bases[x] if inline(x, reader) else own(x)
                        for x in inputs))
        unfused = math.prod(own(x)[0].size for x in dict.fromkeys(inputs))
        return table_ok(group, unfused, analysis.encodings[reader] is Encoding.NUMERICAL)

    def fusion() -> Fusion:
        return Fusion(frozenset(virtual), frozenset(direct),
                      {x: frozenset(r) for x, r in built_for.items() if r},
                      frozenset(distance), frozenset(distance_chain), frozenset(lattice))

    direct: set[SOp] = set()
    distance: set[Select] = set()
    distance_chain: set[SOp] = set()
    lattice: set[SOp] = set()
    lattice_maps: set[SOp] = set()  # the Maps folded into them

    scratch = {node: Scratch(node) for node in analysis.nodes
               if isinstance(node, (SelectorWidth, LengthType))}
    linear = {node: Linear(node) for node in analysis.nodes if isinstance(node, SOp)
              and is_affine_read(analysis, node) and _plain_numbers(analysis, node)}

    def mine_of(node: SOp) -> tuple[_Base, ...] | None:
        """The bases ``node`` would have as a virtual node (None: it cannot be one)."""
        if node in scratch:
            return (_Base(scratch[node], len(analysis.value_sets[node]), True, False),)
        if isinstance(node, Map):
            return bases[node.inner] if inline(node.inner, node) else own(node.inner)
        if isinstance(node, (SequenceMap, LinearSequenceMap)) and \
                not is_affine_read(analysis, node):
            return union(*(bases[x] if inline(x, node) else own(x)
                           for x in (node.fst, node.snd)))
        if node in linear:
            return (attrs.evolve(own(node)[0], node=linear[node], nullable=False),)
        return None

    def verdict_of(node: SOp, mine: tuple[_Base, ...]) -> int:
        inside = [(r, role) for r, role in readers[node] if inline(node, r) or
                  node not in virtual]
        return min((reader_ok(node, mine, r, role) for r, role in inside), default=2)

    def candidates() -> list[SOp]:
        return [node for node in analysis.nodes if isinstance(node, SOp)
                and node is not analysis.program and readers.get(node)
                and node not in lattice and mine_of(node) is not None]

    def greedy(skip: frozenset[SOp] = frozenset()) -> None:
        """Make virtual, in topological order, each node all of whose readers take it."""
        for node in candidates():
            if node in virtual or node in skip:
                continue
            mine = mine_of(node)
            verdict = verdict_of(node, mine)
            if verdict == 1:  # a larger table: only for a shallower model
                before = depth(analysis, fusion())
                virtual.add(node)
                shallower = depth(analysis, fusion()) < before
                virtual.discard(node)
                if not shallower:
                    continue
            if verdict:
                virtual.add(node)
                bases[node] = mine

    greedy()

    def rebase() -> bool:
        """Recompute every virtual node's bases; whether all its readers still take it."""
        bases.clear()
        for node in analysis.nodes:
            if node in virtual:
                bases[node] = mine_of(node)
        return all(verdict_of(node, bases[node]) for node in virtual)

    # A node whose reader's table is too large may fit once one of the reader's other
    # inputs is computed in the residual stream again: trade them where that is shallower.
    for node in candidates():
        if node in virtual:
            continue
        others = dict.fromkeys(x for r, role in readers[node] if role in ("map", "pair")
                               for x in ((r.inner,) if role == "map" else (r.fst, r.snd))
                               if x in virtual and x is not node)  # in a fixed order
        for other, keep in ((o, k) for o in others for k in (False, True)):
            # trade `other` back into the residual stream for every reader, or (keep)
            # build it too, for the readers of `node` only
            before, saved = depth(analysis, fusion()), set(virtual)
            saved_for = {x: set(r) for x, r in built_for.items()}
            if keep and not isinstance(other, (SelectorWidth, LengthType)) and \
                    other not in linear:
                built_for.setdefault(other, set()).update(
                    r for r, _ in readers[node] if any(c is other for c in r.children))
            else:
                virtual.discard(other)
            virtual.add(node)
            if rebase():
                greedy(frozenset([other]))  # what the trade lets through
                if rebase() and depth(analysis, fusion()) < before:
                    break
            virtual.clear()
            virtual.update(saved)
            built_for.clear()
            built_for.update(saved_for)
            rebase()
    State = tuple[int, set[SOp], dict[SOp, set[RASPExpr]]]

    def snapshot() -> State:
        return depth(analysis, fusion()), set(virtual), {x: set(r) for x, r in built_for.items()}

    def restore(state: State) -> None:
        virtual.clear()
        virtual.update(state[1])
        built_for.clear()
        built_for.update({x: set(r) for x, r in state[2].items()})
        rebase()

    def take(fold: Fold) -> None:
        virtual.difference_update(fold.leaves)
        virtual.update(fold.chain)
        for x in (*fold.leaves, *fold.chain):
            built_for.pop(x, None)
        distance.add(fold.select)
        distance_chain.update(fold.chain)

    def drop(taken: list[Fold], state: State) -> None:
        for fold in taken:
            distance.discard(fold.select)
            distance_chain.difference_update(fold.chain)
        restore(state)

    # Selects scored by squared distance: all of them where that is no deeper (folds
    # that share a leaf, such as two reverses of one length, pay for its one-hot once),
    # else each one that is no deeper on its own
    found, start = folds(analysis, readers), snapshot()
    for fold in found:
        take(fold)
    if found and not (rebase() and depth(analysis, fusion()) <= start[0]):
        drop(found, start)
        for fold in found:
            state = snapshot()
            take(fold)
            if not (rebase() and depth(analysis, fusion()) <= state[0]):
                drop([fold], state)
    # SequenceMaps of two prefix fractions, one table per index (``lattice.py``): taken
    # together, and kept only if they make the model shallower
    start = snapshot()
    for node, maps, fractions in lattice_pairs(analysis, readers):
        state = snapshot()
        virtual.discard(node)
        virtual.update(maps)
        for x in (node, *maps):
            built_for.pop(x, None)
        lattice.add(node)
        lattice_maps.update(maps)
        if rebase():
            for x in fractions:  # a LinearSequenceMap read as its combination, if it can be
                if x in linear and x not in virtual:
                    virtual.add(x)
                    if not rebase():
                        virtual.discard(x)
                        rebase()
            greedy()  # what reads the table may now be computed inside its readers
            if rebase() and depth(analysis, fusion()) <= state[0]:
                continue
        lattice.discard(node)
        lattice_maps.difference_update(maps)
        restore(state)
    if lattice and depth(analysis, fusion()) >= start[0]:
        lattice.clear()
        lattice_maps.clear()
        restore(start)
    for node in analysis.nodes:  # a table on a numerical input, read directly
        if isinstance(node, (SequenceMap, LinearSequenceMap)) and node not in virtual \
                and not is_affine_read(analysis, node) \
                and not any(x in virtual for x in (node.fst, node.snd)) \
                and any(own(x)[0].numerical for x in (node.fst, node.snd)):
            group = union(own(node.fst), own(node.snd))
            if table_ok(group, 1, analysis.encodings[node] is Encoding.NUMERICAL):
                direct.add(node)
    return fusion()
