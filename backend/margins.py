"""The build pass's checks before an MLP is built: the size reserved for it, and the
margin of each discretisation (in float64 and in float32)."""

from __future__ import annotations

from typing import Any

from rasplang.backend.budget import mlp_bound, refuse_over
from rasplang.backend.chambers import numerical_mlp
from rasplang.backend.spaces import SOpSpace
from rasplang.nodes import Encoding


class Margins:
    """Builder methods (the builder provides ``m``, ``max_bytes``, ``problems`` and
    ``float64_only``)."""

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
        if any(numerical_mlp.discretisation_problem(xs, ys, inp.error, m) for ys in tables):
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
                xs, ys, inp.error, m, rounding=numerical_mlp.ROUNDING32)
                or numerical_mlp.float32_step_problem(xs, ys, inp.error, m, gates)):
            self.float64_only = f"{label}: input {inp.label!r}: {problem} in float32"

    def rounding(self, node: Any, xs: list[float], tables: list[list[Any]], error: float,
                 m: float, gates: int = 0) -> float:
        """The float64 rounding a discretisation leaves in a numerical output
        (`numerical_mlp.step_rounding`), which later factors may amplify past
        OUTPUT_TOLERANCE; a categorical output's one-hots are read with a margin."""
        if node is None or self.a.encodings.get(node) is not Encoding.NUMERICAL:
            return 0.0
        return numerical_mlp.step_rounding(xs, tables, error, m, gates)
