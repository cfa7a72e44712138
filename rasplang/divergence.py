"""Where a compiled model and its program part: the first node whose value, decoded
from the residual stream right after the sublayer that writes it, differs from
`rasplang.evaluate_all`'s (`first_divergence`), and how model outputs are compared
with the program's (`NUMERICAL_TOLERANCE`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from rasplang.analysis import analyze
from rasplang.evaluator import evaluate_all
from rasplang.nodes import Encoding, RASPExpr, Selector

#: Numerical outputs agree when ``|got - expected| <= tol * max(1, |expected|)``.
NUMERICAL_TOLERANCE = 1e-6
#: The same in float32 (about 40 float32 ulps).
NUMERICAL_TOLERANCE32 = 5e-6


@attrs.frozen
class Divergence:
    """The first node whose value in the residual stream differs from the program's.

    ``layer``/``sublayer`` name the sublayer that writes the node (``sublayer`` is
    ``"embed"``, ``"attn"`` or ``"mlp"``; ``layer`` is None for the embedding);
    ``position`` is the token position (0 = first token after BOS); ``got`` is the
    value decoded from the residual stream right after that sublayer.
    """

    label: str
    layer: int | None
    sublayer: str
    position: int
    expected: Any
    got: Any

    def __str__(self) -> str:
        where = "embedding" if self.layer is None else f"layer {self.layer} {self.sublayer}"
        return (f"node {self.label!r} ({where}) at position {self.position}: expected "
                f"{self.expected!r}, residual stream decodes {self.got!r}")


def first_divergence(model: Any, program: RASPExpr, xs: Sequence[Any], *,
                     analysis: Any = None) -> Divergence | None:
    """The earliest node whose value in ``model``'s residual stream is not the program's.

    Each SOp is decoded from the residual stream right after the sublayer that writes
    it (categorical: the largest of its directions if above 1/2, else None; numerical:
    its one coordinate), and compared with `rasplang.evaluate_all` on ``xs``. Nodes are
    visited in the order the model computes them. Returns None when every node agrees.
    ``analysis`` is ``rasplang.analyze(program, model's vocab, model's max_seq_len)``
    (computed when not given).
    """
    cfg = model.config
    if analysis is None:
        analysis = analyze(program, cfg.vocab, cfg.max_seq_len)
    values = evaluate_all(program, list(xs), causal=cfg.causal)
    trace = model.apply([cfg.bos, *xs])
    where = {label: i for i, label in enumerate(model.residual_labels)}
    candidates = []
    for order, node in enumerate(analysis.nodes):
        label = analysis.labels[node]
        steps = [s for s in model.circuit.get(label, ()) if s.writes]
        if isinstance(node, Selector) or not steps:
            continue
        step = max(steps, key=_residual_index)
        candidates.append((_residual_index(step), order, node, label, step))
    for index, _, node, label, step in sorted(candidates, key=lambda c: c[:2]):
        resid = trace.residuals[index][0, 1:]  # (n, d_model)
        numerical = analysis.encodings[node] is Encoding.NUMERICAL
        for pos, want in enumerate(values[node]):
            have = _decode(resid[pos], label, analysis.value_sets[node], numerical, where)
            if have is _UNREADABLE:
                break
            if not _same(have, want, numerical):
                return Divergence(label, step.layer, step.sublayer, pos, want, have)
    return None


_UNREADABLE = object()


def _residual_index(step: Any) -> int:
    """Index into ``ApplyResult.residuals`` of the stream right after ``step``."""
    if step.layer is None:
        return 0
    return 1 + 2 * step.layer + (1 if step.sublayer == "mlp" else 0)


def _decode(vector: np.ndarray, label: str, value_set: Sequence[Any], numerical: bool,
            where: dict[str, int]) -> Any:
    if numerical:
        i, flag = where.get(label), where.get(f"{label}:is_none")  # the None flag, if any
        if flag is not None and vector[flag] > 0.5:
            return None
        return _UNREADABLE if i is None else float(vector[i])
    found = [(where[f"{label}:{v}"], v) for v in value_set
             if v is not None and f"{label}:{v}" in where]
    if not found or len({i for i, _ in found}) < len(found):  # none, or ambiguous names
        return _UNREADABLE
    coords = vector[[i for i, _ in found]]
    best = int(np.argmax(coords))
    return found[best][1] if coords[best] > 0.5 else None


def _same(got: Any, expected: Any, numerical: bool) -> bool:
    if numerical:
        if expected is None or got is None:
            return got is expected
        e = float(expected)
        return math.isclose(float(got), e, rel_tol=0.0,
                            abs_tol=NUMERICAL_TOLERANCE * max(1.0, abs(e)))
    if got is None or expected is None:
        return got is expected
    try:
        return bool(got == expected)
    except Exception:  # values whose == is not a bool (arrays) never match
        return False
