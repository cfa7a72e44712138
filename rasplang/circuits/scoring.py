"""Scoring an interpretability method's output against a ground-truth circuit.

A method gives a score to every edge (or every head and MLP) of the component graph:
higher means "more likely in the circuit". `score` compares those scores with the
circuit as a ranking: ROC AUC and the ROC curve (scikit-learn's ``roc_auc_score`` and
``roc_curve``, from the ``lab`` extra), and precision and recall among the ``k``
highest-scored for every ``k``. The positives are the circuit's edges, or for node
scores its heads and MLPs (`Circuit.nodes`); the negatives every other edge (node) of
the graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from rasplang.backend.extras import import_extra


@attrs.frozen
class Scores:
    """How well scores rank a circuit. ``level`` is "edges" or "nodes"; ``names``,
    ``truth`` (in the circuit) and ``values`` (the scores) are aligned; ``auroc`` is the
    ROC AUC, ``fpr``/``tpr``/``thresholds`` the ROC curve at every threshold;
    ``precision_at_k[k - 1]`` and ``recall_at_k[k - 1]`` are the share of the ``k``
    highest-scored that are in the circuit and the share of the circuit among them
    (ties broken by the graph's order)."""

    level: str
    names: tuple[str, ...]
    truth: np.ndarray
    values: np.ndarray
    auroc: float
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    precision_at_k: np.ndarray
    recall_at_k: np.ndarray

    def __repr__(self) -> str:
        return (f"Scores({self.level}: AUROC {self.auroc:.3f}, {int(self.truth.sum())} of "
                f"{len(self.names)} in the circuit)")


def score(scores: Mapping[str, float], circuit: Any, *, missing: float | None = None,
          absolute: bool = False) -> Scores:
    """Score a method's ``scores`` (edge names or head and MLP names to numbers)
    against ``circuit`` (a `rasplang.circuits.Circuit`).

    Every edge (or node) of the circuit's graph needs a score; ``missing`` gives the
    ones left out that score instead of a ValueError. ``absolute`` ranks by ``|score|``
    (attribution methods give signed scores). Raises ValueError for a name that is not
    in the graph, and when the circuit holds every edge or none (ROC AUC is undefined).
    """
    (metrics,) = import_extra("scoring a circuit", "lab", "sklearn.metrics")
    g = circuit.graph
    keys = list(scores)
    edge_level = bool(keys) and all(k in g for k in keys)
    if edge_level:
        names, truth_set, level = [e.name for e in g.edges], set(circuit.edges), "edges"
    else:
        names, truth_set, level = g.components, set(circuit.nodes), "nodes"
        unknown = [k for k in keys if k not in set(names)]
        if unknown:
            raise ValueError(f"{len(unknown)} scored names are neither edges nor heads and "
                             f"MLPs of the graph, e.g. {unknown[0]!r}; edges are named like "
                             f"{g.edges[0].name!r}, nodes like {names[0]!r}")
    left = [n for n in names if n not in scores]
    if left and missing is None:
        raise ValueError(f"{len(left)} of the graph's {len(names)} {level} have no score, "
                         f"e.g. {left[0]!r}; score them all, or pass missing=0.0")
    values = np.array([float(scores.get(n, missing)) for n in names])
    if absolute:
        values = np.abs(values)
    if np.isnan(values).any():
        raise ValueError(f"the scores of {np.isnan(values).sum()} {level} are NaN")
    truth = np.array([n in truth_set for n in names])
    if truth.all() or not truth.any():
        raise ValueError(f"the circuit holds {'every' if truth.any() else 'no'} "
                         f"{level[:-1]} of the graph: ROC AUC is undefined")
    fpr, tpr, thresholds = metrics.roc_curve(truth, values)
    order = np.argsort(-values, kind="stable")
    hits = np.cumsum(truth[order])
    k = np.arange(1, len(names) + 1)
    return Scores(level, tuple(names), truth, values, float(metrics.roc_auc_score(truth, values)),
                  fpr, tpr, thresholds, hits / k, hits / truth.sum())
