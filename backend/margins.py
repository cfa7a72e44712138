"""The build pass's checks before an MLP is built: the size reserved for it, and the
margin of each discretisation (in float64 and in float32); and the float32 bound of
every residual direction (`chambers.float32`), which those margins, the output's
tolerance and its decoding read."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from rasplang.backend.budget import mlp_bound, refuse_over
from rasplang.backend.chambers import float32, numerical_mlp
from rasplang.backend.craft.blocks import MLP
from rasplang.backend.spaces import SOpSpace
from rasplang.nodes import Encoding


class Margins:
    """Builder methods (the builder provides ``m``, ``max_bytes``, ``problems``,
    ``incurable``, ``float64_only``, and ``err32`` and ``mag``: each residual direction's
    float32 error bound and magnitude bound at real positions; ``cold32``: for some
    directions of one-hots, the bound where the coordinate is not the hot one; ``err64``: each
    direction's float64 bound, per coordinate)."""

    def note32(self, space: SOpSpace) -> None:
        """Record ``space``'s directions: magnitudes, and ``space.error32`` where no finer
        bound is known."""
        scale = abs(space.scale) or 1.0
        for i, d in enumerate(space.directions):
            self.err64.setdefault(d, space.error / (scale if space.numerical and i == 0
                                                    else 1.0))
            if space.numerical and i == 0:
                values = [float(v) for v in space.values if v is not None]
                top = max([0.0, *map(abs, values)])
                self.mag.setdefault(d, top / scale + space.error32 / scale)
                self.err32.setdefault(d, space.error32 / scale)
                self.err32_heads.setdefault(d, space.error32 / scale)
                self.span.setdefault(d, (min(values, default=0.0) / scale,
                                         max(values, default=0.0) / scale))
                coords = np.array([v / scale for v in values])
                held = (coords.astype(np.float32) == coords).all()
                q = float(float32.grid(coords).min(initial=np.inf)) if held else -np.inf
            else:
                self.mag.setdefault(d, 1.0 + space.error32)
                self.err32.setdefault(d, space.error32)
                self.err32_heads.setdefault(d, space.error32)
                self.span.setdefault(d, (0.0, 1.0))
                q = 0.0  # a 0 or a 1
            if q > -np.inf and self.err32[d] == 0.0:
                self.grids[d] = min(q, 0.0)
            if q > -np.inf and self.err32_heads[d] == 0.0:
                self.grids_heads[d] = min(q, 0.0)

    def lookup_error(self, out: SOpSpace, mlp: MLP) -> float:
        """The float64 error of a lookup's output: its inputs' errors (attention leakage)
        carried through the units that may be on, one hot coordinate per one-hot
        (`float32.mlp_error32` without rounding), in the output's value units."""
        errors = float32.mlp_error32(mlp, self.err64, self.mag, False, one_hot=True, eps=0.0)
        scale = abs(out.scale) or 1.0
        return max([0.0, *(errors.get(d, 0.0) * (scale if out.numerical and i == 0 else 1.0)
                           for i, d in enumerate(out.directions))])

    def one_hot_sum32(self, space: SOpSpace, errors: dict, weights=None) -> float:
        """The most ``sum_d w_d |error_d|`` over a one-hot's directions (``w_d`` 1 by
        default): one direction is hot and carries its bound, the others their bound
        where cold (``cold32``)."""
        w = [1.0] * len(space.directions) if weights is None else weights
        e = [errors.get(d, space.error32) for d in space.directions]
        c = [min(x, self.cold32.get(d, x)) for d, x in zip(space.directions, e)]
        return sum(a * y for a, y in zip(w, c)) + max(
            [a * (x - y) for a, x, y in zip(w, e, c)], default=0.0)

    def l1_32(self, space: SOpSpace) -> float:
        """The float32 error of a one-hot summed over its directions (what a head's
        query or key read adds up), or of a numerical value; without the residue of
        saturated steps (`with_error32`)."""
        return self._l1(space, self.err32_heads)

    def l1_32_full(self, space: SOpSpace) -> float:
        """`l1_32` with the residue of saturated steps: what moves the logits of keys
        that must tie exactly (the selected keys of a mean)."""
        return self._l1(space, self.err32)

    def _l1(self, space: SOpSpace, errors: dict) -> float:
        if space.numerical:
            return max([errors.get(d, space.error32) for d in space.directions], default=0.0)
        return self.one_hot_sum32(space, errors)

    def heads32(self, space: SOpSpace) -> SOpSpace:
        """``space`` with ``error32`` as heads and gates read it (per coordinate, without
        the residue of saturated steps, `with_error32`)."""
        worst = max([self.err32_heads.get(d, space.error32) for d in space.directions],
                    default=0.0)
        return attrs.evolve(space, error32=worst)

    def with_error32(self, out: SOpSpace, mlp: MLP, kind: str) -> SOpSpace:
        """``out`` with the float32 bound of ``mlp``'s outputs (`float32.mlp_error32`).
        ``kind``: "steps" for a discretisation whose float32 margin was checked,
        "lookup" for a table of indicator units, "linear" for an affine map."""
        errors = float32.mlp_error32(mlp, self.err32, self.mag, kind == "steps",
                                     self.grids, one_hot=kind == "lookup", span=self.span,
                                     cold=self.cold32)
        # What heads read: the same bound without the residue of saturated steps, which
        # the worst case puts far above what any forward pass measures (module docstring
        # of `chambers.float32`); `float32_step_problem` caps each step's residue there.
        read = {} if kind == "steps" else float32.mlp_error32(
            mlp, self.err32_heads, self.mag, False, self.grids_heads,
            one_hot=kind == "lookup", cold=self.cold32)
        scale = abs(out.scale) or 1.0
        for i, d in enumerate(out.directions):
            factor = scale if out.numerical and i == 0 else 1.0
            self.err32[d] = errors.get(d, 0.0) * factor
            self.err32_heads[d] = read.get(d, 0.0) * factor
        worst = max([0.0, *(self.err32[d] for d in out.directions)])
        return attrs.evolve(out, error32=worst)

    def float32_problem(self, label: str, problem: str) -> None:
        """Record that the model is exact in float64 only (the first reason found)."""
        if not self.float64_only:
            self.float64_only = f"{label}: {problem} in float32"

    def reserve(self, label: str, rows: int, units: int) -> None:
        """Refuse now an MLP that reads (or writes) ``rows`` directions with ``units``
        hidden units when those weights alone exceed ``max_bytes``: the model's ``W_in``
        (``W_out``) holds at least that many."""
        refuse_over(mlp_bound(label, rows, units), self.max_bytes)

    def slope(self, label: str, inp: SOpSpace, xs: list[float], tables: list[list[Any]],
              gates: int = 0) -> float:
        """The slope factor of a discretisation of ``inp`` into each of ``tables``: the
        gentlest, `numerical_mlp.GENTLE_SLOPE`, where its margin absorbs the input's
        error (float32 rounds steep steps by more), else ``mlp_exactness``; what cannot
        be exact is recorded as a problem, what is exact in float64 only as such.
        ``gates``: the categorical inputs gating a gated discretisation."""
        m = min(self.m, numerical_mlp.GENTLE_SLOPE)
        if any(numerical_mlp.discretisation_problem(xs, ys, inp.error, m)
               or numerical_mlp.discretisation_problem(xs, ys, inp.error32, m,
                                                       rounding=numerical_mlp.ROUNDING32)
               for ys in tables):
            m = self.m
        for ys in tables:
            self.check_tolerance(label, inp, xs, ys, m, gates)
        return m

    def check_tolerance(self, label: str, inp: SOpSpace, xs: list[float], ys: list[Any],
                        m: float, gates: int = 0) -> None:
        problem = numerical_mlp.discretisation_problem(xs, ys, inp.error, m)
        if problem:
            self.problems.append((label, f"input {inp.label!r}: {problem}"))
            # float rounding alone (an exact input) is too much: no colder head helps
            self.incurable |= bool(numerical_mlp.discretisation_problem(xs, ys, 0.0, m))
        elif not self.float64_only and (problem := numerical_mlp.discretisation_problem(
                xs, ys, inp.error32, m, rounding=numerical_mlp.ROUNDING32)
                or numerical_mlp.float32_step_problem(xs, ys, inp.error32, m, gates)):
            self.float32_problem(label, f"input {inp.label!r}: {problem}")

    def rounding(self, node: Any, xs: list[float], tables: list[list[Any]], error: float,
                 m: float, gates: int = 0) -> float:
        """The float64 rounding a discretisation leaves in a numerical output
        (`numerical_mlp.step_rounding`), which later factors may amplify past
        OUTPUT_TOLERANCE; a categorical output's one-hots are read with a margin."""
        if node is None or self.a.encodings.get(node) is not Encoding.NUMERICAL:
            return 0.0
        return numerical_mlp.step_rounding(xs, tables, error, m, gates)
