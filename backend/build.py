"""Pass 2: build one craft block (or two) per program node, in topological order.

Each SOp gets an `SOpSpace`; each Map/SequenceMap an MLP; each Aggregate an attention
head; each SelectorWidth (and `length`) a head plus an MLP. Where a node reads a
numerical SOp through a table (a SequenceMap, a Select, a categorical Aggregate), the
pass inserts an `AsCategorical` conversion MLP first; where a selector combines Selects
on different SOps with ``|`` or ``~``, it inserts `Product` MLPs for its keys and
queries (see ``derived.py``). Inserted blocks come right before their first reader, so
the block list stays in topological order. The pass also tracks every
SOp's state at the BOS position and a bound on its error, and reports numerical
problems (values too close together for the leakage allowed) instead of building
something inexact.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import attrs
import numpy as np

from rasplang.analysis import Analysis, sorted_values
from rasplang.backend.chambers import (
    attention,
    categorical_mlp,
    float32,
    numerical_mlp,
    separable_mlp,
)
from rasplang.backend.chambers.none_flags import none_unit_count
from rasplang.backend.chambers.selector import Term, selector_terms
from rasplang.backend.craft.bases import BasisDirection
from rasplang.backend.craft.blocks import MLP, AttentionHead
from rasplang.backend.derived import AsCategorical, Product
from rasplang.backend.fusion import Fusion, choose
from rasplang.backend.fusion_build import FusedReads
from rasplang.backend.margins import Margins
from rasplang.backend.spaces import (
    ONE,
    BosState,
    SOpSpace,
    bos_direction,
    categorical_space,
    numerical_space,
)
from rasplang.backend.views import map_table, pair_table
from rasplang.nodes import (
    Aggregate,
    Encoding,
    Full,
    IndicesType,
    LengthType,
    LinearSequenceMap,
    Map,
    RASPExpr,
    Select,
    Selector,
    SelectorWidth,
    SequenceMap,
    SOp,
    TokensType,
)
from rasplang.selection import distinct_sops, selects_at_most_one

#: Largest error bound a numerical output may carry (absolute: an output can be 0 where
#: another is large). Attention leakage is held near 1e-12 per unit of value; input
#: errors of keys and queries and large factors after a head amplify it. Half of what
#: `rasplang.verify` accepts (1e-6 relative to ``max(1, |value|)``), so a model within
#: its bound passes verify.
OUTPUT_TOLERANCE = 5e-7
#: Largest float32 error bound a numerical output may carry for the model to claim
#: float32 (the bound includes rounding), times the smallest magnitude of its values
#: (at least 1): below what `rasplang.verify` accepts in float32 (5e-6 relative to
#: ``max(1, |value|)``).
OUTPUT_TOLERANCE32 = 4e-6
#: Largest float32 error bound of a categorical output's coordinates: the unembedding
#: decodes the largest coordinate when it is above 1/2.
DECODE_MARGIN32 = 0.25


@attrs.define(eq=False)
class NodeBlock:
    """What computes one SOp: nothing (embedded), a head, an MLP, or both."""

    node: RASPExpr
    label: str
    head: AttentionHead | None = None
    mlp: MLP | None = None
    deps: tuple[SOp, ...] = ()  # SOps that must be computed before
    selectors: tuple[RASPExpr, ...] = ()  # selector nodes folded into the head
    scratch: BasisDirection | None = None
    fused: tuple[SOp, ...] = ()  # virtual nodes computed inside this block (fusion.py)


@attrs.define(eq=False)
class Built:
    """Result of the build pass."""

    spaces: dict[SOp, SOpSpace]
    blocks: list[NodeBlock]
    tokens: SOpSpace
    indices: SOpSpace
    bos: BasisDirection
    problems: list[tuple[str, str]]
    #: Why the model is exact only in float64 ("" when float32 is exact too).
    float64_only: str = ""
    #: Whether fusion changed anything (``optimize=True`` built something else than one
    #: block per node).
    fused: bool = False
    #: Whether some problem would remain with no attention leakage at all (a
    #: discretisation that float rounding alone defeats).
    incurable: bool = False


def _selector_nodes(selector: RASPExpr) -> tuple[RASPExpr, ...]:
    """Every selector node of a selector tree (for the circuit)."""
    out: list[RASPExpr] = []
    stack = [selector]
    while stack:
        node = stack.pop()
        out.append(node)
        if not isinstance(node, Select):
            stack.extend(node.children)
    return tuple(out)


def _term_sops(terms: list[Term]) -> tuple[SOp, ...]:
    """The SOps a head's terms read (what must be computed before it)."""
    return tuple(s for t in terms for s in (t.keys, t.queries))


class _Builder(Margins, FusedReads):
    def __init__(self, analysis: Analysis, causal: bool, bos: Any, mlp_exactness: float,
                 max_bytes: float, optimize: bool = False,
                 leakage: float = attention.LEAKAGE_TARGET):
        self.a = analysis
        self.leakage = leakage  # every head's leakage target (`attention.coldness`)
        self.fusion = choose(analysis) if optimize else Fusion()
        self.virtual = self.fusion.virtual
        self.views: dict[SOp, Any] = {}
        self.current: RASPExpr | None = None  # the node being built (a reader)
        self.max_bytes = max_bytes
        self.labels: dict[RASPExpr, str] = dict(analysis.labels)
        self.taken = set(self.labels.values())
        self.derived: dict[tuple[int, ...], SOp] = {}
        self.pending: list[NodeBlock] = []  # inserted blocks, emitted before the next node
        self.n = analysis.max_seq_len
        self.causal = causal
        self.bos = BosState(bos_direction(bos))
        self.m = float(mlp_exactness)
        self.spaces: dict[SOp, SOpSpace] = {}
        self.problems: list[tuple[str, str]] = []
        self.incurable = False  # a problem that no smaller leakage would remove
        self.reader = ""  # the label of the node being built
        self.float64_only = ""  # why the model is exact in float64 but not in float32
        self.err32: dict[BasisDirection, float] = {}  # float32 bound per direction
        self.err32_heads: dict[BasisDirection, float] = {}  # the same, as heads read it
        self.cold32: dict[BasisDirection, float] = {}  # a one-hot's, where it is not hot
        self.err64: dict[BasisDirection, float] = {}  # float64 bound per direction
        self.mag: dict[BasisDirection, float] = {ONE: 1.0, self.bos.direction: 0.0}
        # exact coordinates, with the grid of their values (`float32.grid`)
        self.grids: dict[BasisDirection, float] = {ONE: 0.0, self.bos.direction: 0.0}
        self.grids_heads = dict(self.grids)  # the same, as heads read them
        self._distinct: set[SOp] | None = None
        self.span: dict[BasisDirection, tuple[float, float]] = {  # coordinate ranges
            ONE: (1.0, 1.0), self.bos.direction: (0.0, 0.0)}
        self.tokens = categorical_space("tokens", sorted_values(analysis.vocab))
        self.indices = categorical_space("indices", tuple(range(self.n)))
        self.base_tokens = TokensType()
        self.spaces[self.base_tokens] = self.tokens

    def out_space(self, node: SOp, bos_value: Any = None, error: float = 0.0,
                  error32: float = 0.0) -> SOpSpace:
        label, values = self.labels[node], self.a.value_sets[node]
        if self.a.encodings[node] is Encoding.NUMERICAL:
            return numerical_space(label, values, bos_value, error, error32)
        return categorical_space(label, values, bos_value, error, error32)

    def register(self, node: SOp, space: SOpSpace, mlp: MLP | None = None,
                 kind: str = "lookup") -> SOpSpace:
        """Give ``node`` its space; with ``mlp`` (of ``kind``), the float32 bound of what
        it writes (`Margins.with_error32`). Returns the space registered."""
        if mlp is not None:
            space = self.with_error32(space, mlp, kind)
        self.note32(space)
        self.spaces[node] = space
        for d, z in zip(space.directions, space.bos):
            if d != ONE:
                self.bos.coords[d] = float(z)
        return space

    # ------------------------------------------------------- selectors, inserted SOps

    def terms(self, selector: Selector) -> list[Term]:
        return selector_terms(selector, self)

    def resolve(self, sop: SOp) -> SOp:
        """SelectorContext: the categorical SOp a table reads for ``sop`` (a virtual
        one's base)."""
        if sop in self.virtual:
            bases = self.views[sop].bases
            if len(bases) == 1 and not self.spaces[bases[0]].numerical:
                return bases[0]
            return sop  # computed inside the Product MLP that reads it
        return self.categorical(sop)

    def size(self, sop: SOp) -> int:
        """SelectorContext: the number of values of a categorical SOp."""
        return len(self.part_values(sop))

    def table(self, select: Select, keys: SOp, queries: SOp) -> np.ndarray:
        """SelectorContext: ``select``'s 0/1 table over resolved values (the analysis's
        `Analysis.predicate` without None, which categorical spaces leave out, and
        composed with virtual keys or queries)."""
        rows = self.select_rows(select.queries, queries)
        cols = self.select_rows(select.keys, keys)
        return self.a.predicate(select)[np.ix_(rows, cols)]

    def label(self, node: RASPExpr) -> str:
        """SelectorContext: the node's label."""
        return self.labels[node]

    def fresh_label(self, wanted: str) -> str:
        label, k = wanted, 2
        while label in self.taken:
            label, k = f"{wanted}#{k}", k + 1
        self.taken.add(label)
        return label

    def categorical(self, sop: SOp) -> SOp:
        """``sop`` itself if categorical, else its `AsCategorical` conversion (built once):
        a discretising MLP from the exact value set to one direction per value."""
        space = self.spaces[sop]
        if not space.numerical:
            return sop
        key = (0, id(sop))
        if key in self.derived:
            return self.derived[key]
        node = AsCategorical(sop)
        label = self.fresh_label(f"{self.labels[sop]}:categorical")
        self.labels[node] = label
        raw = [v for v in self.a.value_sets[sop] if v is not None]
        xs = [float(v) for v in raw]
        m = self.slope(self.reader, space, xs, [raw])  # the problem is the reader's
        out = categorical_space(label, self.a.value_sets[sop])  # None: the zero vector
        self.reserve(self.reader, len(out.directions), numerical_mlp.step_units(raw))
        mlp = numerical_mlp.discretising_mlp(label, space, xs, raw, out, m, self.bos)
        self.register(node, out, mlp, "steps")
        self.derived[key] = node
        self.pending.append(NodeBlock(node, label, mlp=mlp, deps=(sop,)))
        return node

    def product(self, parts: tuple[SOp, ...]) -> SOp:
        """SelectorContext: the `Product` of categorical ``parts`` (built once)."""
        key = (1, *map(id, parts))
        if key in self.derived:
            return self.derived[key]
        node = Product(parts)
        label = self.fresh_label("(" + ", ".join(self.labels[p] for p in parts) + ")")
        self.labels[node] = label
        if any(map(self.unbuilt, parts)):
            self.derived[key] = node
            self.pending.append(self.fused_product(node, label, parts))  # or refuses
            return node
        spaces = [self.spaces[p] for p in parts]
        values = tuple(itertools.product(*(s.values for s in spaces)))
        out = categorical_space(label, values,
                                error=sum(len(s.values) * s.error for s in spaces))
        mlp = categorical_mlp.product_mlp(label, spaces, out, self.bos)
        self.register(node, attrs.evolve(out, error=self.lookup_error(out, mlp)), mlp)
        self.derived[key] = node
        self.pending.append(NodeBlock(node, label, mlp=mlp, deps=parts))
        return node

    def distinct(self) -> set[SOp]:
        """The SOps `rasplang.selection` proves distinct (computed once)."""
        if self._distinct is None:
            self._distinct = distinct_sops(self.a, self.causal)
        return self._distinct

    # ---------------------------------------------------------------- per node kind

    def build(self, node: RASPExpr) -> NodeBlock | None:
        """The node's block, by its type's rule in `_RULES` (selectors: None, they are
        built into the heads that use them)."""
        label = self.reader = self.labels[node]
        if not isinstance(node, SOp):
            return None
        self.current = node
        if node in self.virtual and not isinstance(node, (SelectorWidth, LengthType)):
            self.define_virtual(node)
            if node not in self.fusion.built_for:
                return None  # else built as well, for the readers that read it built
        rule = _RULES.get(type(node))
        if rule is None:
            raise NotImplementedError(f"no builder for {type(node).__name__} {label!r}")
        return rule(self, node, label)

    def primitive(self, node: TokensType | IndicesType, label: str) -> NodeBlock:
        if self.a.encodings[node] is Encoding.NUMERICAL:  # float32 rounds the embedding
            values = self.a.value_sets[node]
            inexact = [abs(float(v)) for v in values
                       if v is not None and float(np.float32(v)) != float(v)]
            self.register(node, numerical_space(label, values,
                                                error32=float32.EPS32 * max([0.0, *inexact])))
        else:
            self.register(node, self.tokens if isinstance(node, TokensType) else self.indices)
        return NodeBlock(node, label)

    def full(self, node: Full, label: str) -> NodeBlock:
        if self.a.encodings[node] is Encoding.NUMERICAL:
            space = SOpSpace(label, True, (node.fill,), (ONE,), np.ones(1),
                             scale=float(node.fill))
        else:
            space = SOpSpace(label, False, (node.fill,), (ONE,), np.ones(1))
        self.spaces[node] = space
        return NodeBlock(node, label)

    def width(self, node: SelectorWidth, label: str) -> NodeBlock:
        return self.selector_width(node, label, self.terms(node.selector),
                                   list(self.a.value_sets[node]), node.selector)

    def length(self, node: LengthType, label: str) -> NodeBlock:
        term = Term(self.base_tokens, self.base_tokens, np.ones((len(self.tokens.values),) * 2))
        return self.selector_width(node, label, [term], list(range(1, self.n + 1)), None)

    def map(self, node: Map, label: str) -> NodeBlock:
        if self.reads_virtual(node.inner):
            return self.fused_block(node, label, self.composed(node))
        inp = self.spaces[node.inner]
        if not inp.numerical:
            out = self.out_space(node, error=len(inp.values) * inp.error)
            mlp = categorical_mlp.map_categorical_mlp(label, inp, out, map_table(self.a, node).get,
                                                      self.bos)
            out = attrs.evolve(out, error=self.lookup_error(out, mlp))
            kind = "lookup"
        else:
            table = map_table(self.a, node)
            raw = [x for x in self.a.value_sets[node.inner] if x is not None]
            xs = [float(v) for v in raw]
            ys = [table[x] for x in raw]
            fit = numerical_mlp.affine_fit(xs, ys) if self.a.encodings[node] is \
                Encoding.NUMERICAL else None
            if fit is not None:
                out = self.out_space(node, error=abs(fit[0]) * inp.error)
                lohi = (min(xs, default=0.0), max(xs, default=0.0))
                mlp = numerical_mlp.affine_mlp(label, [(inp, fit[0], lohi)], fit[1], out,
                                               self.bos)
                kind = "linear"
            else:
                m = self.slope(label, inp, xs, [ys])
                out = self.out_space(node, error=self.rounding(node, xs, [ys], inp.error, m))
                self.reserve(label, len(out.directions), numerical_mlp.step_units(ys))
                mlp = numerical_mlp.discretising_mlp(label, inp, xs, ys, out, m, self.bos)
                kind = "steps"
        self.register(node, out, mlp, kind)
        return NodeBlock(node, label, mlp=mlp, deps=(node.inner,))

    def sequence_map(self, node: SequenceMap | LinearSequenceMap, label: str) -> NodeBlock:
        numerical_out = self.a.encodings[node] is Encoding.NUMERICAL
        affine = (isinstance(node, LinearSequenceMap) and numerical_out
                  and all(self.spaces[c].numerical or self.spaces[c].is_numeric_valued()
                          for c in (node.fst, node.snd)))
        if affine:
            fst, snd = self.spaces[node.fst], self.spaces[node.snd]
            if node.fst is node.snd:
                terms = [(fst, node.fst_fac + node.snd_fac, _range(fst))]
            else:
                terms = [(fst, node.fst_fac, _range(fst)), (snd, node.snd_fac, _range(snd))]
            err = sum(abs(a) * s.error * (1 if s.numerical else len(s.values))
                      for s, a, _ in terms)
            out = self.out_space(node, error=err)
            mlp = numerical_mlp.affine_mlp(label, terms, 0.0, out, self.bos)
            self.register(node, out, mlp, "linear")
            return NodeBlock(node, label, mlp=mlp, deps=(node.fst, node.snd))
        if node in self.fusion.lattice:
            return self.lattice_block(node, label)
        if self.reads_virtual(node.fst, node.snd) or node in self.fusion.direct:
            return self.fused_block(node, label, self.composed(node))
        # A lookup table: numerical inputs are converted to categorical first.
        x, y = self.categorical(node.fst), self.categorical(node.snd)
        fst, snd = self.spaces[x], self.spaces[y]
        if x is y:
            out = self.out_space(node, error=len(fst.values) * fst.error)
            table = pair_table(self.a, node)
            mlp = categorical_mlp.map_categorical_mlp(
                label, fst, out, lambda v: table(v, v), self.bos)
            out = attrs.evolve(out, error=self.lookup_error(out, mlp))
            kind = "lookup"
        else:
            err = len(fst.values) * fst.error + len(snd.values) * snd.error
            out = self.out_space(node, error=len(fst.values) * len(snd.values) * err)
            f = pair_table(self.a, node)
            layout = categorical_mlp.table_layout(fst, snd, out, f)
            table_units = len(layout.units) + none_unit_count([fst, snd], out)
            separable = self.separable(node, label, fst, snd, f)
            kind = "lookup"
            if separable is not None and separable[0].hidden_dim <= table_units:
                mlp, out = separable
                kind = "linear" if self.a.encodings[node] is Encoding.NUMERICAL else "steps"
            else:
                self.reserve(label, len(fst.directions) + len(snd.directions) + 2, table_units)
                mlp = categorical_mlp.sequence_map_categorical_mlp(
                    label, fst, snd, out, layout, self.bos)
                out = attrs.evolve(out, error=self.lookup_error(out, mlp))
        self.register(node, out, mlp, kind)
        return NodeBlock(node, label, mlp=mlp, deps=(x, y))

    def separable(self, node: SOp, label: str, fst: SOpSpace, snd: SOpSpace,
                  f: Any) -> tuple[MLP, SOpSpace] | None:
        """``f`` on two categorical inputs as ``u(x) + v(y)`` read linearly (and
        discretised for a categorical output), if it is exactly that on the value sets and
        the margin holds; else None (the caller keeps the lookup table)."""
        split = separable_mlp.split(fst.values, snd.values, f)
        numerical_out = self.a.encodings[node] is Encoding.NUMERICAL
        if split is None or separable_mlp.margin_problem(
                split, self.heads32(fst), self.heads32(snd), self.m, not numerical_out):
            return None
        error = separable_mlp.output_error(split, fst, snd) if numerical_out else 0.0
        out = self.out_space(node, error=error)
        mlp = separable_mlp.separable_mlp(label, fst, snd, split, out, self.m, self.bos)
        return mlp, out

    def aggregate(self, node: Aggregate, label: str) -> NodeBlock:
        distance = node.selector in self.fusion.distance
        terms = [] if distance else self.terms(node.selector)
        numerical_out = self.a.encodings[node] is Encoding.NUMERICAL
        if node.sop in self.virtual:  # folded into the OV matrix
            source, value = self.value_view(node.sop, numerical_out)
        else:
            source = node.sop if numerical_out else self.categorical(node.sop)
            value = self.spaces[source]
        if numerical_out:
            mags = [abs(float(v)) for v in (*value.values, node.default) if v is not None]
            vmax = max([1.0, *mags])
        else:
            vmax = 1.0
        scale = attention.coldness(self.n, 2 * vmax, 0.5, self.leakage)
        leak = (self.n + 1) * math.exp(-scale / 2)
        # a distance fold of a plain Select matches one key; under ~ or | it selects many
        one = (distance and isinstance(node.selector, Select)) or selects_at_most_one(
            self.a, node.selector, self.distinct())
        selected = 1 if one else self.n
        # A mean over several keys needs their logits to tie exactly: every error of the
        # query's and keys' one-hots counts there, saturated steps' residue included.
        tied = numerical_out and selected > 1
        if distance:
            w_qk, (logit_error, logit_error32), reads = self.distance_logits(node.selector,
                                                                             scale)
            eta32 = float32.COLDNESS_FACTOR * scale * (
                logit_error32 + float32.logit_rounding32(2.0 * self.n * self.n))
            # one key matches a plain Select: no equal logits to keep equal; under ~ or
            # | many keys are selected and must tie
            tie32 = eta32 if selected > 1 else 0.0
        else:
            w_qk, logit_error = None, attention.logit_error(terms, self.spaces)
            reads = _term_sops(terms)
            logit_error32 = attention.logit_error(
                terms, self.spaces, self.l1_32_full if tied else self.l1_32)
            eta32 = tie32 = 0.0 if logit_error32 == 0 else float32.COLDNESS_FACTOR * scale * (
                logit_error32 + float32.logit_rounding32(len(terms)))
        eta = scale * logit_error
        err = value.error + 2 * vmax * (leak + math.expm1(min(2 * eta, 50.0)))
        # what the head reads of its value (heads read the bound without the residue of
        # saturated steps, `Margins.l1_32`): a number, or a one-hot read as its values
        # (numerical output) or copied (categorical output)
        reads32 = [self.err32_heads.get(d, value.error32) for d in value.directions]
        if value.numerical:
            value32 = reads32[0] * (abs(value.scale) or 1.0)
        elif numerical_out:
            value32 = self.one_hot_sum32(value, self.err32_heads, [
                abs(float(v)) if isinstance(v, (int, float)) else 0.0 for v in value.values])
        else:
            value32 = max(reads32, default=0.0)
        # one key of a one-hot: its weight fl(1 / (1 + leak)) is 1 and the copy exact
        err32 = value32 + float32.mean_error32(selected, vmax, leak, eta32, tie32,
                                               rounding=numerical_out or selected > 1)
        out = self.out_space(node, error=err, error32=err32)
        out = attrs.evolve(out, bos=out.encode(node.default))
        if out.nullable and out.numerical:
            # The flag is a mean of 0/1 indicators that agree wherever evaluate is defined
            # (mixing None with numbers raises): where it is 0 every product is an exact
            # 0, so only leakage moves it, and that is where the gates of its readers pass
            # its error on; where it is 1 they are off with margin 1, and the
            # unembedding's threshold is 1/2.
            flag = value.none_indicator()
            flag32 = 0.0 if flag is None else self.l1_32(value) if not value.numerical \
                else self.err32.get(value.directions[-1], 0.0)
            self.err32[out.directions[1]] = self.err32_heads[out.directions[1]] = flag32 \
                + float32.mean_error32(selected, 1.0, leak, eta32, tie32, rounding=False)
        self.register(node, out)
        if not numerical_out:
            # Where an output coordinate is not the hot one, the selected keys (whose
            # values agree) add the value's own cold error and only the leaked weight
            # reaches it: far less than the hot coordinate's rounding.
            leaked = leak * math.exp(min(2 * eta32, 50.0))
            value_cold = max([min(e, self.cold32.get(d, e))
                              for d, e in zip(value.directions, reads32)], default=0.0)
            cold = (value_cold * (1 + math.expm1(min(2 * tie32, 50.0))) + 2 * leaked) \
                * (1 + (selected + 8) * float32.EPS32)
            for d in out.directions:
                self.cold32[d] = min(cold, self.err32[d])
        head = attention.aggregate_head(label, terms, self.spaces, value, out, node.default,
                                        scale, self.causal, self.bos, w_qk)
        fused = self.folded_selects(node.selector)
        if node.sop in self.virtual:
            fused = tuple(dict.fromkeys((*fused, *self.views[node.sop].fused)))
        return NodeBlock(node, label, head=head, deps=(*reads, source),
                         selectors=_selector_nodes(node.selector), fused=fused)

    def selector_width(self, node: SOp, label: str, terms: list[Term], widths: list[int],
                       selector: RASPExpr | None) -> NodeBlock:
        n = self.n
        scale = attention.coldness(n, 4.0 * (n + 1) * (n + 2), 1.0, self.leakage)
        eta = scale * attention.logit_error(terms, self.spaces)
        logit_error32 = attention.logit_error(terms, self.spaces, self.l1_32)
        eta32 = 0.0 if logit_error32 == 0 else float32.COLDNESS_FACTOR * scale * (
            logit_error32 + float32.logit_rounding32(len(terms)))
        # float32: the selected keys and BOS tie exactly (exact inputs) and only the BOS
        # key has a value, so the scratch is fl(1 / S) times -1: the leakage, the drift of
        # the ties and a few roundings (`float32.mean_error32` with no summation)
        error32 = n * math.exp(-scale) * math.exp(min(2 * eta32, 50.0)) \
            + math.expm1(min(2 * eta32, 50.0)) + 4 * float32.EPS32
        scratch = BasisDirection(label, "scratch")
        scratch_space = SOpSpace(f"{label}:scratch", True, (), (scratch,), -np.ones(1),
                                 error=n * math.exp(-scale) + math.expm1(min(2 * eta, 50.0)),
                                 error32=error32)
        self.err32[scratch] = self.err32_heads[scratch] = error32
        self.mag[scratch] = 1.0
        self.span[scratch] = (-1.0, 0.0)
        head = attention.selector_width_head(label, terms, self.spaces, scratch, scale,
                                             self.causal, self.bos)
        self.bos.coords[scratch] = -1.0
        pairs = sorted((attention.scratch_value(w), w) for w in widths)
        xs = [x for x, _ in pairs]
        ys = [w for _, w in pairs]
        deps = _term_sops(terms) if selector is not None else ()
        selectors = _selector_nodes(selector) if selector is not None else ()
        fused = self.folded_selects(selector) if selector is not None else ()
        if node in self.virtual:  # the count is decoded inside its readers' MLPs
            self.define_width(node, scratch_space, xs, ys)
            return NodeBlock(node, label, head=head, deps=deps, selectors=selectors,
                             scratch=scratch, fused=fused)
        m = self.slope(label, scratch_space, xs, [ys])
        out = self.out_space(node, error=self.rounding(node, xs, [ys], scratch_space.error, m))
        mlp = numerical_mlp.discretising_mlp(label, scratch_space, xs, ys, out, m, self.bos)
        self.register(node, out, mlp, "steps")
        return NodeBlock(node, label, head=head, mlp=mlp, deps=deps, selectors=selectors,
                         scratch=scratch, fused=fused)


#: The build rule of each SOp type (selectors are built into the heads that use them).
_RULES: dict[type, Any] = {
    TokensType: _Builder.primitive,
    IndicesType: _Builder.primitive,
    LengthType: _Builder.length,
    Full: _Builder.full,
    Map: _Builder.map,
    SequenceMap: _Builder.sequence_map,
    LinearSequenceMap: _Builder.sequence_map,
    Aggregate: _Builder.aggregate,
    SelectorWidth: _Builder.width,
}


def _range(space: SOpSpace) -> tuple[float, float]:
    vals = [float(v) for v in space.values if v is not None]
    if not space.numerical:
        vals.append(0.0)  # None (the zero vector) reads as 0
    return (min(vals), max(vals)) if vals else (0.0, 0.0)


def _tolerance32(out: SOpSpace) -> float:
    """What a numerical output's float32 bound may reach: verify accepts an error
    relative to ``max(1, |value|)``, so the smallest magnitude of the output's values
    (at least 1) scales `OUTPUT_TOLERANCE32`."""
    values = [abs(float(v)) for v in out.values if v is not None]
    return OUTPUT_TOLERANCE32 * max(1.0, min(values, default=1.0))


def build_blocks(analysis: Analysis, *, causal: bool, bos: Any, mlp_exactness: float,
                 max_bytes: float = math.inf, optimize: bool = False,
                 leakage: float = attention.LEAKAGE_TARGET) -> Built:
    """Build every node's blocks, each head's coldness chosen for ``leakage``
    (`attention.coldness`); numerical problems are returned, not raised.

    Raises `ModelTooLarge` as soon as one block shows the model would exceed
    ``max_bytes``, before allocating that block.
    """
    builder = _Builder(analysis, causal, bos, mlp_exactness, max_bytes, optimize, leakage)
    blocks = []
    for node in analysis.nodes:
        block = builder.build(node)
        blocks += builder.pending  # inserted conversions and products come first
        builder.pending.clear()
        if block is not None:
            blocks.append(block)
    out = builder.spaces.get(analysis.program)
    label = analysis.labels[analysis.program]
    if out is not None and out.numerical and out.error > OUTPUT_TOLERANCE:
        builder.problems.append((label, (
            f"the output may be off by {out.error:.3g} (attention leakage and the float "
            f"rounding of discretisations, amplified by the factors after them), more than "
            f"OUTPUT_TOLERANCE={OUTPUT_TOLERANCE}")))
    elif out is not None and out.numerical and out.error32 > _tolerance32(out):
        builder.float32_problem(label, (
            f"the output may be off by {out.error32:.3g} (rounding and attention leakage, "
            f"amplified by the factors after it), more than OUTPUT_TOLERANCE32="
            f"{OUTPUT_TOLERANCE32} times its smallest magnitude (at least 1)"))
    elif out is not None and not out.numerical and out.error32 >= DECODE_MARGIN32:
        builder.float32_problem(label, (
            f"the output's one-hot may be off by {out.error32:.3g} (rounding and attention "
            f"leakage), too close to the decoding threshold (DECODE_MARGIN32="
            f"{DECODE_MARGIN32})"))
    return Built(builder.spaces, blocks, builder.tokens, builder.indices, builder.bos.direction,
                 builder.problems, builder.float64_only, builder.fusion != Fusion(),
                 builder.incurable)
