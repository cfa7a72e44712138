"""The build pass's checks before an MLP is built: the size reserved for it, and the
margin of each discretisation (in float64 and in float32); and the float32 bound of
every residual direction (`chambers.float32`), which those margins, the output's
tolerance and its decoding read."""

from __future__ import annotations

from typing import Any

import attrs

from rasplang.backend.budget import mlp_bound, refuse_over
from rasplang.backend.chambers import float32, numerical_mlp
from rasplang.backend.craft.blocks import MLP
from rasplang.backend.spaces import SOpSpace
from rasplang.nodes import Encoding


class Margins:
    """Builder methods (the builder provides ``m``, ``max_bytes``, ``problems``,
    ``float64_only``, and ``err32`` and ``mag``: each residual direction's float32 error
    bound and magnitude bound at real positions)."""

    def note32(self, space: SOpSpace) -> None:
        """Record ``space``'s directions: magnitudes, and ``space.error32`` where no finer
        bound is known."""
        scale = abs(space.scale) or 1.0
        for i, d in enumerate(space.directions):
            if space.numerical and i == 0:
                values = [float(v) for v in space.values if v is not None]
                top = max([0.0, *map(abs, values)])
                self.mag.setdefault(d, top / scale + space.error32 / scale)
                self.err32.setdefault(d, space.error32 / scale)
                self.err32_heads.setdefault(d, space.error32 / scale)
                self.span.setdefault(d, (min(values, default=0.0) / scale,
                                         max(values, default=0.0) / scale))
                integers = scale == 1.0 and all(v == round(v) for v in values)
            else:
                self.mag.setdefault(d, 1.0 + space.error32)
                self.err32.setdefault(d, space.error32)
                self.err32_heads.setdefault(d, space.error32)
                self.span.setdefault(d, (0.0, 1.0))
                integers = True
            if integers and self.err32[d] == 0.0:
                self.integral.add(d)
            if integers and self.err32_heads[d] == 0.0:
                self.integral_heads.add(d)

    def l1_32(self, space: SOpSpace) -> float:
        """The float32 error of a one-hot summed over its directions (what a head's
        query or key read adds up), or of a numerical value; without the residue of
        saturated steps (`with_error32`)."""
        errors = [self.err32_heads.get(d, space.error32) for d in space.directions]
        return max(errors, default=0.0) if space.numerical else sum(errors)

    def l1_32_full(self, space: SOpSpace) -> float:
        """`l1_32` with the residue of saturated steps: what moves the logits of keys
        that must tie exactly (the selected keys of a mean)."""
        errors = [self.err32.get(d, space.error32) for d in space.directions]
        return max(errors, default=0.0) if space.numerical else sum(errors)

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
                                     self.integral, one_hot=kind == "lookup", span=self.span)
        # What heads read: the same bound without the residue of saturated steps, which
        # the worst case puts far above what any forward pass measures (module docstring
        # of `chambers.float32`); `float32_step_problem` caps each step's residue there.
        read = {} if kind == "steps" else float32.mlp_error32(
            mlp, self.err32_heads, self.mag, False, self.integral_heads,
            one_hot=kind == "lookup")
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
