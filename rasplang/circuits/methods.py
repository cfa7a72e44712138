"""Circuit-discovery methods, native and exact, to score with `rasplang.circuits.score`.

`activation_patching` ablates each edge alone (as `rasplang.circuits.ground_truth`
does) and scores it by how far the logits move, not by whether the decoded output
changes: the mean over the domain's inputs of the L2 norm of the change of the logits
at the output positions (BOS left out), as ACDC's ``l2`` metric measures it. Edges that
are not structural cannot move anything and score 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rasplang.circuits.graph import graph
from rasplang.circuits.truth import _grouped, _Lab


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
