"""ACDC (Conmy et al., "Towards Automated Circuit Discovery for Mechanistic
Interpretability", 2023), exact and native: greedy pruning over rasplang's own
edge-patched forward (`rasplang.circuits.patching`), on every input of the domain.

ACDC starts from the whole graph and visits the receivers from the logits backwards.
For each edge into the receiver it ablates the edge, on top of the edges removed so far,
and measures the metric: here `rasplang.circuits.methods.output_distance` (KL divergence
from the clean output distribution, or the squared L2 distance for a numerical output),
averaged over the domain. When the metric grows by less than ``tau`` the edge is
removed for good; else it is kept. A receiver none of whose outgoing edges is kept is
dead: ablating its inputs cannot change anything downstream (every reader already sees
its ablated output), so its incoming edges are removed with score 0 without a run, as
ACDC drops nodes that are not connected to the output.

The order is the reverse of the graph's (EAP-IG's) edge order: the logits' inputs,
latest sender first, then the last MLP's, then the last layer's heads', and so on. Every
edge out of a component comes before every edge into it in that order, so a receiver's
fate is known when its inputs are tried.

Each edge's score is the metric's growth when it was tried, for ROC curves: ranking by
it sweeps ``tau`` over one run (a run at another ``tau`` can remove other edges first,
and then measure others' growth differently; ACDC's paper runs once per threshold).
"""

from __future__ import annotations

from typing import Any

import attrs

from rasplang.circuits.graph import LOGITS, Edge, graph
from rasplang.circuits.methods import output_distance
from rasplang.circuits.truth import _grouped, _Lab

#: The default threshold: an edge whose removal grows the metric by less is removed.
#: Exactly irrelevant edges move it by 0 (or by rounding, far below this).
TAU = 1e-9


@attrs.frozen
class ACDCResult:
    """One ACDC run: ``edges`` the edges kept (in the graph's order), ``scores`` every
    edge's metric growth when it was tried (0 for the edges never run: not structural,
    or into a dead receiver), ``metric`` the metric of the kept edges alone (every other
    edge ablated), ``tau`` the threshold, ``runs`` how many patched runs over the domain
    it took."""

    edges: tuple[str, ...]
    scores: dict[str, float]
    metric: float
    tau: float
    runs: int

    def __repr__(self) -> str:
        return (f"ACDCResult({len(self.edges)} of {len(self.scores)} edges kept at tau "
                f"{self.tau:g}, metric {self.metric:.3g}, {self.runs} runs)")


def acdc(model: Any, ablation: str = "resample", *, tau: float = TAU,
         positions: bool = False, exhaustive: bool | None = None, samples: int = 10_000,
         seed: int = 0) -> ACDCResult:
    """Run ACDC on ``model`` (module docstring) over the domain and ablation of
    `rasplang.circuits.ground_truth` (same arguments); ``tau`` is the threshold.
    ``acdc(model).scores`` is the method's edge scores for `rasplang.circuits.score`."""
    if not tau >= 0:
        raise ValueError(f"tau must be a number >= 0, got {tau!r}")
    g = graph(model)
    full = g.per_position() if positions else g
    lab = _Lab(model, g, ablation, exhaustive, samples, seed)
    numerical = model.config.output_encoding == "numerical"
    n = lab.inputs.count

    def metric(cut: list[Edge]) -> float:
        ablated, total = _grouped(cut), 0.0
        for p, _ in lab.patchers():
            logits = p.run(ablated)
            if logits is not None:
                total += float(output_distance(p.clean_logits, logits, numerical).sum())
        return total / n if n else 0.0

    scores = {e.name: 0.0 for e in full}
    # Edges that are not structural change nothing: removed at once, the metric stays 0.
    removed: list[Edge] = [e for e in full if not e.structural]
    alive = {e.name for e in full if e.structural}   # the edges still in the graph
    out_alive: dict[str, int] = {}                   # alive edges out of each component
    for e in full:
        if e.structural:
            out_alive[e.sender] = out_alive.get(e.sender, 0) + 1
    current, runs = 0.0, 0

    def remove(e: Edge) -> None:
        alive.discard(e.name)
        removed.append(e)
        out_alive[e.sender] -= 1

    for e in reversed(full.edges):
        if e.name not in alive:
            continue
        if e.receiver != LOGITS and not out_alive.get(e.receiver):
            remove(e)          # into a dead receiver: changes nothing (module docstring)
            continue
        trial = metric([*removed, e])
        runs += 1
        scores[e.name] = trial - current
        if trial - current < tau:
            remove(e)
            current = trial
    kept = tuple(e.name for e in full if e.name in alive)
    return ACDCResult(kept, scores, current, float(tau), runs)
