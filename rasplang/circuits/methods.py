"""Circuit-discovery methods, to score with `rasplang.circuits.score`.

Each method gives every edge of the component graph a score, higher meaning "more
likely in the circuit", over the same domain and ablation as
`rasplang.circuits.ground_truth` (every input of the domain, corrupted by zero, mean or
resampled outputs as `rasplang.circuits.patching` defines them):

- `activation_patching` (here): ablates each edge alone and scores it by how far the
  logits move, the mean over the domain's inputs of the L2 norm of the change of the
  logits at the output positions (BOS left out), as ACDC's ``l2`` metric measures it.
  Exact and native (numpy).
- `rasplang.circuits.acdc` (`methods_acdc`): ACDC's greedy pruning from the logits
  backwards, exact and native (numpy).
- `rasplang.circuits.edge_attribution_patching` (`methods_eap`): EAP's first-order
  estimate of every edge's effect from one forward and backward pass (torch).

Edges that are not structural cannot move anything and score 0 in every method.

`output_distance` is the metric ACDC minimises here: per input, the KL divergence
from the unablated output distribution to the patched one, summed over the output
positions, for a categorical output; the squared L2 distance of the outputs for a
numerical one. The distribution at a position is the softmax of the logits with the
None logit appended: a compiled model's logits are 1 on the value and 0 elsewhere, and
it outputs None where no logit exceeds 1/2 (`rasplang.circuits.inputs.decode`), so a
constant logit of 1/2 for None ranks None as the decoder does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rasplang.circuits.graph import graph
from rasplang.circuits.truth import _grouped, _Lab

#: The logit appended for None: the decoder's threshold.
NONE_LOGIT = 0.5


def activation_patching(model: Any, ablation: str = "resample", *, positions: bool = False,
                        exhaustive: bool | None = None, samples: int = 10_000,
                        seed: int = 0) -> dict[str, float]:
    """Every edge's score: the mean L2 change of the logits when it alone is ablated
    (module docstring), over the same domain as `rasplang.circuits.ground_truth`."""
    g = graph(model)
    full = g.per_position() if positions else g
    lab = _Lab(model, g, ablation, exhaustive, samples, seed)
    n = lab.inputs.count
    out = {e.name: 0.0 for e in full}
    for e in full:
        if not e.structural:
            continue
        total = 0.0
        for p, _ in lab.patchers():
            logits = p.run(_grouped([e]))
            if logits is not None:
                moved = (logits - p.clean_logits)[:, 1:]        # (B, n, d_vocab_out)
                total += float(np.sqrt((moved ** 2).sum(axis=(1, 2))).sum())
        out[e.name] = total / n if n else 0.0
    return out


def log_probs(logits: np.ndarray) -> np.ndarray:
    """``[B, T, V + 1]``: the log-softmax of categorical logits ``[B, T, V]`` with the
    None logit appended (module docstring)."""
    full = np.concatenate([logits, np.full((*logits.shape[:-1], 1), NONE_LOGIT)], axis=-1)
    full = full - full.max(axis=-1, keepdims=True)
    return full - np.log(np.exp(full).sum(axis=-1, keepdims=True))


def output_distance(clean: np.ndarray, patched: np.ndarray, numerical: bool) -> np.ndarray:
    """``[B]``: how far the patched logits ``[B, T, V]`` are from the clean ones at the
    output positions (BOS left out): the KL divergence summed over positions, or for a
    numerical output the squared L2 distance (module docstring)."""
    clean, patched = clean[:, 1:], patched[:, 1:]
    if numerical:
        return ((patched - clean) ** 2).sum(axis=(1, 2))
    lp, lq = log_probs(clean), log_probs(patched)
    return (np.exp(lp) * (lp - lq)).sum(axis=(1, 2))
