"""Pass 2: build one craft block (or two) per program node, in topological order.

Each SOp gets an `SOpSpace`; each Map/SequenceMap an MLP; each Aggregate an attention
head; each SelectorWidth (and `length`) a head plus an MLP. The pass also tracks every
SOp's state at the BOS position and a bound on its error, and reports numerical
problems (values too close together for the leakage allowed) instead of building
something inexact.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
from rasplang.backend.chambers import attention, categorical_mlp, numerical_mlp
from rasplang.backend.chambers.selector import Term, predicate_table, selector_terms
from rasplang.backend.craft.bases import BasisDirection
from rasplang.backend.craft.blocks import MLP, AttentionHead
from rasplang.backend.spaces import (
    ONE,
    SOpSpace,
    bos_direction,
    categorical_space,
    numerical_space,
)

from rasplang.analysis import Analysis, sorted_values
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
    SelectorWidth,
    SequenceMap,
    SOp,
    TokensType,
)


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


@attrs.define(eq=False)
class Built:
    """Result of the build pass."""

    spaces: dict[SOp, SOpSpace]
    blocks: list[NodeBlock]
    tokens: SOpSpace
    indices: SOpSpace
    bos: BasisDirection
    problems: list[tuple[str, str]]


def _safe(f: Any, *args: Any) -> Any:
    try:
        return f(*args)
    except Exception:  # the analysis dropped this value: evaluate raises on it
        return None


def _selector_leaves(selector: RASPExpr) -> tuple[list[SOp], list[RASPExpr]]:
    sops: list[SOp] = []
    sels: list[RASPExpr] = []
    stack = [selector]
    while stack:
        node = stack.pop()
        sels.append(node)
        if isinstance(node, Select):
            sops += [node.keys, node.queries]
        else:
            stack.extend(node.children)
    return sops, sels


class _Builder:
    def __init__(self, analysis: Analysis, causal: bool, bos: Any, mlp_exactness: float):
        self.a = analysis
        self.labels = analysis.labels
        self.n = analysis.max_seq_len
        self.causal = causal
        self.bos = bos_direction(bos)
        self.m = float(mlp_exactness)
        self.spaces: dict[SOp, SOpSpace] = {}
        self.bos_state: dict[BasisDirection, float] = {ONE: 1.0, self.bos: 1.0}
        self.problems: list[tuple[str, str]] = []
        self.tokens = categorical_space("tokens", sorted_values(analysis.vocab))
        self.indices = categorical_space("indices", tuple(range(self.n)))
        self.base_tokens = TokensType()
        self.spaces[self.base_tokens] = self.tokens

    def out_space(self, node: SOp, bos_value: Any = None, error: float = 0.0) -> SOpSpace:
        label, values = self.labels[node], self.a.value_sets[node]
        if self.a.encodings[node] is Encoding.NUMERICAL:
            return numerical_space(label, values, bos_value, error)
        return categorical_space(label, values, bos_value, error)

    def register(self, node: SOp, space: SOpSpace) -> None:
        self.spaces[node] = space
        for d, z in zip(space.directions, space.bos):
            if d != ONE:
                self.bos_state[d] = float(z)

    def terms(self, selector: RASPExpr) -> list[Term]:
        return selector_terms(
            selector, lambda s: self.spaces[s].numerical, self.labels,
            lambda s: predicate_table(s, self.spaces[s.keys], self.spaces[s.queries]))

    # ---------------------------------------------------------------- per node kind

    def build(self, node: RASPExpr) -> NodeBlock | None:
        label = self.labels[node]
        if not isinstance(node, SOp):
            return None
        numerical = self.a.encodings[node] is Encoding.NUMERICAL
        if isinstance(node, TokensType) and not numerical:
            self.register(node, self.tokens)
            return NodeBlock(node, label)
        if isinstance(node, IndicesType) and not numerical:
            self.register(node, self.indices)
            return NodeBlock(node, label)
        if isinstance(node, (TokensType, IndicesType)):
            self.register(node, numerical_space(label, self.a.value_sets[node]))
            return NodeBlock(node, label)
        if isinstance(node, Full):
            values = (node.fill,)
            if numerical:
                space = SOpSpace(label, True, values, (ONE,), np.ones(1), scale=float(node.fill))
            else:
                space = SOpSpace(label, False, values, (ONE,), np.ones(1))
            self.spaces[node] = space
            return NodeBlock(node, label)
        if isinstance(node, Map):
            return self.map(node, label)
        if isinstance(node, (SequenceMap, LinearSequenceMap)):
            return self.sequence_map(node, label)
        if isinstance(node, Aggregate):
            return self.aggregate(node, label)
        if isinstance(node, SelectorWidth):
            return self.selector_width(node, label, self.terms(node.selector),
                                       list(range(self.n + 1)), node.selector)
        if isinstance(node, LengthType):
            term = Term(self.base_tokens, self.base_tokens,
                        np.ones((len(self.tokens.values),) * 2))
            return self.selector_width(node, label, [term], list(range(1, self.n + 1)), None)
        raise NotImplementedError(f"no builder for {type(node).__name__} {label!r}")

    def map(self, node: Map, label: str) -> NodeBlock:
        inp = self.spaces[node.inner]
        if not inp.numerical:
            out = self.out_space(node, error=len(inp.values) * inp.error)
            mlp = categorical_mlp.map_categorical_mlp(label, inp, out, lambda x: _safe(node.f, x),
                                                      self.bos_state, self.bos)
        else:
            raw = [x for x in self.a.value_sets[node.inner] if x is not None]
            xs = [float(v) for v in raw]
            try:
                ys = list(map(node.f, raw))
            except Exception:
                ys = [_safe(node.f, x) for x in raw]
            self.check_twins(label, node.f, raw, ys)
            fit = numerical_mlp.affine_fit(xs, ys) if self.a.encodings[node] is \
                Encoding.NUMERICAL else None
            if fit is not None:
                out = self.out_space(node, error=abs(fit[0]) * inp.error)
                lohi = (min(xs), max(xs))
                mlp = numerical_mlp.affine_mlp(label, [(inp, fit[0], lohi)], fit[1], out,
                                               self.bos_state, self.bos)
            else:
                self.check_tolerance(label, inp, xs, ys)
                out = self.out_space(node)
                mlp = numerical_mlp.discretising_mlp(label, inp, xs, ys, out, self.m,
                                                     self.bos_state, self.bos)
        self.register(node, out)
        return NodeBlock(node, label, mlp=mlp, deps=(node.inner,))

    def check_twins(self, label: str, f: Any, raw: list[Any], ys: list[Any]) -> None:
        """A number cannot tell 1 from 1.0 from True: refuse an ``f`` that can."""
        for x, y in zip(raw, ys):
            fx = float(x)
            if not fx.is_integer():
                continue
            twins = {fx, int(fx)} | ({bool(fx)} if fx in (0.0, 1.0) else set())
            for t in twins:
                if type(t) is type(x):
                    continue
                other = _safe(f, t)
                if other != y:
                    self.problems.append((label, f"f({x!r}) = {y!r} but f({t!r}) = {other!r}; "
                                                 "a numerical input cannot tell them apart"))
                    return

    def check_tolerance(self, label: str, inp: SOpSpace, xs: list[float], ys: list[Any]) -> None:
        tol = numerical_mlp.discretisation_tolerance(xs, ys, self.m)
        if inp.error >= tol / 2:
            self.problems.append((label, f"input {inp.label!r} has values {tol:.3g} apart "
                                         f"but may be off by {inp.error:.3g}; cannot "
                                         "discretise it exactly"))

    def sequence_map(self, node: SequenceMap | LinearSequenceMap, label: str) -> NodeBlock:
        fst, snd = self.spaces[node.fst], self.spaces[node.snd]
        numerical_out = self.a.encodings[node] is Encoding.NUMERICAL
        if isinstance(node, LinearSequenceMap) and numerical_out:
            if node.fst is node.snd:
                terms = [(fst, node.fst_fac + node.snd_fac, _range(fst))]
            else:
                terms = [(fst, node.fst_fac, _range(fst)), (snd, node.snd_fac, _range(snd))]
            err = sum(abs(a) * s.error * (1 if s.numerical else len(s.values))
                      for s, a, _ in terms)
            out = self.out_space(node, error=err)
            mlp = numerical_mlp.affine_mlp(label, terms, 0.0, out, self.bos_state, self.bos)
        elif node.fst is node.snd:
            out = self.out_space(node, error=len(fst.values) * fst.error)
            mlp = categorical_mlp.map_categorical_mlp(
                label, fst, out, lambda x: _safe(node.f, x, x), self.bos_state, self.bos)
        else:
            err = len(fst.values) * fst.error + len(snd.values) * snd.error
            out = self.out_space(node, error=len(fst.values) * len(snd.values) * err)
            mlp = categorical_mlp.sequence_map_categorical_mlp(
                label, fst, snd, out, lambda x, y: _safe(node.f, x, y), self.bos_state,
                self.bos)
        self.register(node, out)
        return NodeBlock(node, label, mlp=mlp, deps=(node.fst, node.snd))

    def aggregate(self, node: Aggregate, label: str) -> NodeBlock:
        terms = self.terms(node.selector)
        value = self.spaces[node.sop]
        numerical_out = self.a.encodings[node] is Encoding.NUMERICAL
        if numerical_out:
            mags = [abs(float(v)) for v in (*value.values, node.default) if v is not None]
            vmax = max([1.0, *mags])
        else:
            vmax = 1.0
        scale = attention.coldness(self.n, 2 * vmax, 0.5)
        leak = (self.n + 1) * math.exp(-scale / 2)
        eta = scale * attention.logit_error(terms, self.spaces)
        err = value.error + 2 * vmax * (leak + math.expm1(min(2 * eta, 50.0)))
        out = self.out_space(node, bos_value=node.default, error=err)
        self.register(node, out)
        head = attention.aggregate_head(label, terms, self.spaces, value, out, node.default,
                                        scale, self.causal, self.bos_state, self.bos)
        sops, sels = _selector_leaves(node.selector)
        return NodeBlock(node, label, head=head, deps=(*sops, node.sop), selectors=tuple(sels))

    def selector_width(self, node: SOp, label: str, terms: list[Term], widths: list[int],
                       selector: RASPExpr | None) -> NodeBlock:
        n = self.n
        scale = attention.coldness(n, 4.0 * (n + 1) * (n + 2), 1.0)
        eta = scale * attention.logit_error(terms, self.spaces)
        scratch = BasisDirection(label, "scratch")
        scratch_space = SOpSpace(f"{label}:scratch", True, (), (scratch,), np.ones(1),
                                 error=n * math.exp(-scale) + math.expm1(min(2 * eta, 50.0)))
        head = attention.selector_width_head(label, terms, self.spaces, scratch, scale,
                                             self.causal, self.bos_state, self.bos)
        self.bos_state[scratch] = 1.0
        pairs = sorted((1.0 / (w + 1), w) for w in widths)
        xs = [x for x, _ in pairs]
        ys = [w for _, w in pairs]
        self.check_tolerance(label, scratch_space, xs, ys)
        out = self.out_space(node)
        mlp = numerical_mlp.discretising_mlp(label, scratch_space, xs, ys, out, self.m,
                                             self.bos_state, self.bos)
        self.register(node, out)
        if selector is None:
            return NodeBlock(node, label, head=head, mlp=mlp, scratch=scratch)
        sops, sels = _selector_leaves(selector)
        return NodeBlock(node, label, head=head, mlp=mlp, deps=tuple(sops),
                         selectors=tuple(sels), scratch=scratch)


def _range(space: SOpSpace) -> tuple[float, float]:
    vals = [float(v) for v in space.values if v is not None]
    if not space.numerical:
        vals.append(0.0)  # None (the zero vector) reads as 0
    return (min(vals), max(vals)) if vals else (0.0, 0.0)


def build_blocks(analysis: Analysis, *, causal: bool, bos: Any,
                 mlp_exactness: float) -> Built:
    """Build every node's blocks; numerical problems are returned, not raised."""
    builder = _Builder(analysis, causal, bos, mlp_exactness)
    blocks = []
    for node in analysis.nodes:
        block = builder.build(node)
        if block is not None:
            blocks.append(block)
    return Built(builder.spaces, blocks, builder.tokens, builder.indices, builder.bos,
                 builder.problems)
