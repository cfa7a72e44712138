"""The build pass's side of fusion: virtual nodes' views and the blocks that absorb them.

`FusedReads` is mixed into the builder (``build.py``); ``fusion.py`` decides which
nodes are virtual and documents the cost model.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import numpy as np

from rasplang.backend import distance, lattice
from rasplang.backend.chambers import attention, categorical_mlp, fused_mlp, numerical_mlp
from rasplang.backend.chambers.selector import SelectorUnsupported
from rasplang.backend.craft.bases import BasisDirection, VectorSpace, join
from rasplang.backend.craft.blocks import MLP
from rasplang.backend.craft.maps import BilinearMap, LinearMap
from rasplang.backend.derived import Linear, Scratch
from rasplang.backend.fusion import FusionInconsistent, is_affine_read
from rasplang.backend.spaces import SOpSpace, categorical_space, numerical_space
from rasplang.backend.views import View, identity, map_table, mark_impossible, pair, pair_table
from rasplang.nodes import IndicesType, Map, Select, SelectorWidth, SOp


class FusedReads:
    """Builder methods for ``optimize=True`` (the builder provides ``a``, ``spaces``,
    ``virtual``, ``views``, ``m``, ``bos`` and the chamber helpers)."""

    def view(self, sop: SOp) -> View:
        """``sop`` as the node being built reads it: a function of residual-stream bases."""
        found = self.views.get(sop)
        if found is not None and self.fusion.inline(sop, self.current):
            return found
        space = self.spaces[sop]
        if space.numerical:
            return identity(sop, tuple(v for v in self.a.value_sets[sop] if v is not None))
        return identity(sop, space.values)

    def reads_virtual(self, *inputs: SOp) -> bool:
        return any(self.fusion.inline(x, self.current) for x in inputs)

    def composed(self, node: SOp) -> View:
        """A Map's or SequenceMap's function of its inputs' bases."""
        if isinstance(node, Map):
            return self.view(node.inner).compose(map_table(self.a, node).get)
        return pair(self.view(node.fst), self.view(node.snd), pair_table(self.a, node))

    def define_virtual(self, node: SOp) -> None:
        """Record a virtual Map's or SequenceMap's view (it gets no block)."""
        if is_affine_read(self.a, node) and node not in self.fusion.distance_chain:
            base = Linear(node)
            values = tuple(v for v in self.a.value_sets[node] if v is not None)
            fst, snd = self.spaces[node.fst], self.spaces[node.snd]
            space = numerical_space(f"{self.labels[node]}:linear", values, error=(
                abs(node.fst_fac) * fst.error + abs(node.snd_fac) * snd.error), error32=(
                abs(node.fst_fac) * fst.error32 + abs(node.snd_fac) * snd.error32))
            self.spaces[base] = space
            reads = self.linear_reads(node)
            self.bos.coords[space.directions[0]] = sum(c * self.bos.at(d) for d, c in reads)
            self.views[node] = attrs.evolve(identity(base, values), fused=(node,))
            return
        view = self.composed(node)
        self.views[node] = attrs.evolve(view, fused=(*view.fused, node))

    def linear_reads(self, node: SOp) -> list[tuple[BasisDirection, float]]:
        """``a x + b y`` as coefficients of the inputs' value coordinates."""
        fst, snd = self.spaces[node.fst], self.spaces[node.snd]
        return [(fst.directions[0], node.fst_fac * fst.scale),
                (snd.directions[0], node.snd_fac * snd.scale)]

    def define_width(self, node: SelectorWidth, scratch_space: SOpSpace,
                     xs: list[float], ys: list[int]) -> None:
        """A virtual SelectorWidth: its scratch coordinate is the base, read as ``xs``."""
        base = Scratch(node)
        self.spaces[base] = scratch_space
        grid = np.empty(len(ys), dtype=object)
        grid[:] = ys
        self.views[node] = View((base,), (tuple(xs),), grid, (node,))

    def fused_block(self, node: SOp, label: str, view: View) -> Any:
        """The one MLP computing ``node`` from ``view``'s bases."""
        from rasplang.backend.build import NodeBlock

        mlp, out, deps = self.view_mlp(
            label, view, lambda error: self.out_space(node, error=error), node)
        self.register(node, out)
        return NodeBlock(node, label, mlp=mlp, deps=deps, fused=view.fused)

    def view_mlp(self, label: str, view: View, make_out: Any, node: SOp | None = None,
                 ) -> tuple[MLP, SOpSpace, tuple[SOp, ...]]:
        """An MLP writing ``view``'s value (``node``'s, if it is one) from its bases into
        ``make_out(error)``, the space, and the SOps it reads."""
        spaces = [self.spaces[b] for b in view.bases]
        numerical = [i for i, s in enumerate(spaces) if s.numerical]
        cats = [i for i, s in enumerate(spaces) if not s.numerical]
        if not numerical:
            inputs = [spaces[i] for i in cats]
            out = make_out(fused_mlp.lookup_error(inputs))
            grid = mark_impossible(view)
            self.reserve(label, sum(len(s.directions) for s in inputs) + 1,
                         fused_mlp.lookup_units(grid, out))
            if len(inputs) == 1:
                table = dict(zip(view.values[0], view.grid.tolist()))
                mlp = categorical_mlp.map_categorical_mlp(label, inputs[0], out, table.get,
                                                          self.bos)
            else:
                mlp = fused_mlp.lookup_mlp(label, inputs, grid, out, self.bos)
        else:
            (n,) = numerical
            num = spaces[n]
            grid = np.moveaxis(mark_impossible(view), n, 0)
            xs = [float(v) for v in view.values[n]]
            inputs = [spaces[i] for i in cats]
            error = num.error + fused_mlp.gate_error(xs, num.error, inputs, self.m)
            error32 = num.error32 + fused_mlp.gate_error(
                xs, num.error32, [attrs.evolve(c, error=self.heads32(c).error32)
                                  for c in inputs], self.m)
            checked = attrs.evolve(num, error=error, error32=error32)
            tables = [ys for combo in np.ndindex(*grid.shape[1:])
                      if (ys := fused_mlp.possible(grid[(slice(None), *combo)].tolist()))
                      is not None]
            m = self.slope(label, checked, xs, tables, len(inputs))
            out = make_out(self.rounding(node, xs, tables, error, m, len(inputs)))
            self.reserve(label, len(num.directions) + 1 + sum(len(s.directions) for s in inputs),
                         fused_mlp.gated_units(xs, grid))
            if not inputs:
                mlp = numerical_mlp.discretising_mlp(label, num, xs, grid.tolist(), out, m,
                                                     self.bos)
            else:
                mlp = fused_mlp.gated_discretising_mlp(label, num, xs, inputs, grid, out, m,
                                                       self.bos)
        deps: list[SOp] = []
        for b in view.bases:
            if isinstance(b, Linear):
                mlp = _substitute(mlp, self.spaces[b].directions[0], self.linear_reads(b.inner))
                deps += [b.inner.fst, b.inner.snd]
            else:
                deps.append(b.inner if isinstance(b, Scratch) else b)
        return mlp, self.with_error32(out, mlp, "steps" if numerical else "lookup"), tuple(deps)

    def lattice_block(self, node: SOp, label: str) -> Any:
        """A SequenceMap of two prefix fractions (``lattice.py``): at each index ``i`` a
        discretisation of ``x_1 + lambda x_2`` over the points ``(K_1, K_2) / (i + 1)``,
        gated by the index."""
        from rasplang.backend.build import NodeBlock

        views = [self.view(x) for x in (node.fst, node.snd)]
        (b1,), (b2,) = (v.bases for v in views)
        raw = [b.inner if isinstance(b, Linear) else b for b in (b1, b2)]
        inputs = tuple((x if x is not r else None, r) for x, r in zip((node.fst, node.snd), raw))
        found = lattice.tables(self.a, node, inputs)
        if found is None:  # `fusion.choose` checked the same tables
            raise FusionInconsistent(f"{label}: two roundings of one fraction disagree")
        s1, s2 = self.spaces[b1], self.spaces[b2]
        lam = lattice.projection(self.a, raw[1])
        error = s1.error + lam * s2.error
        error32 = s1.error32 + lam * s2.error32
        out = self.out_space(node)
        live, xs_all, rounding = [], [], 0.0
        for i, xs, ys in found:
            xs_all += xs
            proj = numerical_space(f"{label}:projection", tuple(xs), error=error,
                                   error32=error32)
            m = self.slope(label, proj, xs, [ys], 1)
            rounding = max(rounding, self.rounding(node, xs, [ys], error, m, 1))
            live.append(((i,), xs, ys, m))
        out = attrs.evolve(out, error=rounding)
        proj = numerical_space(f"{label}:projection", tuple(sorted(set(xs_all))), error=error,
                               error32=error32)
        self.reserve(label, len(s1.directions) + len(s2.directions) + 1 + self.n,
                     sum(1 + 2 * len(numerical_mlp.changes(ys)) for _, _, ys, _ in live))
        mlp = fused_mlp.gated_steps_mlp(label, proj, [self.indices], live,
                                        max(xs_all, default=0.0), out, self.bos)
        mlp = _substitute(mlp, proj.directions[0], [
            (s1.directions[0], s1.scale / proj.scale),
            (s2.directions[0], lam * s2.scale / proj.scale)])
        deps: list[SOp] = [next(x for x in self.a.nodes if isinstance(x, IndicesType))]
        for b in (b1, b2):
            if isinstance(b, Linear):
                mlp = _substitute(mlp, self.spaces[b].directions[0], self.linear_reads(b.inner))
                deps += [b.inner.fst, b.inner.snd]
            else:
                deps.append(b)
        self.register(node, out, mlp, "steps")
        fused = tuple(dict.fromkeys((*views[0].fused, *views[1].fused)))
        return NodeBlock(node, label, mlp=mlp, deps=tuple(deps), fused=fused)

    def unbuilt(self, sop: SOp) -> bool:
        """SelectorContext: whether ``sop`` is computed only inside the MLPs that read it
        (a virtual node of several bases), so a head needs it as a `Product`."""
        return sop in self.virtual and sop not in self.spaces

    def fused_product(self, node: SOp, label: str, parts: tuple[SOp, ...]) -> Any:
        """The `Product` of ``parts`` some of which are unbuilt virtual nodes: one MLP from
        all their bases to the one-hot of the tuple."""
        from rasplang.backend.build import NodeBlock

        views = [self.views[p] if self.unbuilt(p) else self.view(p) for p in parts]
        acc = views[0].compose(lambda v: (v,))
        for view in views[1:]:
            acc = pair(acc, view, lambda t, v: (*t, v))
        if sum(self.spaces[b].numerical for b in acc.bases) > 1:  # compile builds it unfused
            raise SelectorUnsupported(f"{label}: the Product's fused parts read "
                                      "several numerical SOps, which no one MLP can")
        values = tuple(itertools.product(*(self.part_values(p) for p in parts)))
        mlp, out, deps = self.view_mlp(label, acc, lambda error: categorical_space(
            label, values, error=error))
        self.register(node, out)
        return NodeBlock(node, label, mlp=mlp, deps=deps, fused=acc.fused)

    def part_values(self, sop: SOp) -> tuple[Any, ...]:
        """A categorical part's values in the order its one-hot (and a table) lists them."""
        if self.unbuilt(sop):
            return tuple(v for v in self.a.value_sets[sop] if v is not None)
        return self.spaces[sop].values

    def select_rows(self, sop: SOp, resolved: SOp) -> Any:
        """Which entries of ``Analysis.predicate``'s axis for ``sop`` each value of the
        resolved SOp reads: the view's values for a virtual ``sop``, else every non-None
        value (categorical spaces leave None out)."""
        values = self.a.value_sets[sop]
        if sop not in self.virtual or resolved is sop:
            return np.flatnonzero([v is not None for v in values])
        position = {v: i for i, v in enumerate(values)}
        # None where a function raised (evaluate raises there too, so any row will do),
        # unless None is a value
        return np.array([position[v] if v is not None else position.get(None, 0)
                         for v in self.views[sop].grid.tolist()], dtype=np.intp)

    def folded_selects(self, selector: Any) -> tuple[SOp, ...]:
        """The virtual nodes a selector's Selects fold into their head."""
        out: list[SOp] = []
        stack = [selector]
        while stack:
            node = stack.pop()
            if isinstance(node, Select):
                for side in (node.keys, node.queries):
                    if side in self.virtual:
                        out += self.views[side].fused
            else:
                stack.extend(node.children)
        return tuple(dict.fromkeys(out))

    def distance_logits(self, select: Select, scale: float
                        ) -> tuple[BilinearMap, tuple[float, float], tuple[SOp, ...]]:
        """The query-key map of a Select scored by squared distance (``distance.py``), the
        bounds on its logit error before scaling (float64, float32), and the SOps it
        reads."""
        view = self.views[select.queries]
        found = distance.split(view)
        if found is None:  # `fusion.choose` checked the same table, on the same leaves
            raise FusionInconsistent(f"{self.labels[select]}: its query is no longer a "
                                     "sum of functions of two one-hots")
        leaves = [self.heads32(self.spaces[b]) for b in view.bases]
        keys = self.spaces[select.keys]
        top = max(abs(float(v)) for v in keys.values)
        w_qk = attention.distance_logits(list(zip(leaves, (found.u, found.v))), keys,
                                         [float(v) for v in keys.values], scale, self.bos)
        error, error32 = (2 * top * sum(sum(map(abs, c)) * e(s)
                                        for s, c in zip(leaves, (found.u, found.v)))
                          for e in (lambda s: s.error, lambda s: s.error32))
        return w_qk, (error, error32), (*view.bases, select.keys)

    def value_view(self, sop: SOp, numerical: bool) -> tuple[SOp, SOpSpace]:
        """An Aggregate's value read through a virtual node: its base, and the base's
        space carrying the node's value at each base value (what the OV matrix writes).
        Where the function raised on a base value (None in the grid, though the node is
        never None), that value never reaches the head: a numerical head reads it as 0,
        a categorical one as None, the zero vector."""
        view = self.views[sop]
        (base,) = view.bases
        values = view.grid.tolist()
        if numerical and None not in self.a.value_sets[sop]:
            values = [0 if v is None else v for v in values]
        return base, attrs.evolve(self.spaces[base], values=tuple(values))


def _substitute(mlp: MLP, direction: BasisDirection,
                reads: list[tuple[BasisDirection, float]]) -> MLP:
    """``mlp`` with its input row for ``direction`` read as ``sum_j c_j x_j`` instead."""
    first = mlp.first
    kept = [d for d in first.input_space.basis if d != direction]
    space = join(VectorSpace(kept), VectorSpace(dict.fromkeys(d for d, _ in reads)))
    matrix = np.zeros((space.dim, first.matrix.shape[1]))
    for i, d in enumerate(first.input_space.basis):
        if d == direction:
            for source, c in reads:
                matrix[space.index_of(source)] += c * first.matrix[i]
        else:
            matrix[space.index_of(d)] += first.matrix[i]
    return MLP(LinearMap(space, first.output_space, matrix), mlp.second, label=mlp.label)
