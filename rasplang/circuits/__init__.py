"""The interpretability laboratory: a compiled model as ground truth for circuit methods.

- `graph` (``model.graph()``): the component graph, nodes and edges named as EAP-IG and
  MIB name them, each edge with the program nodes it carries.
- `ground_truth` (``model.ground_truth()``): the circuit under an ablation ("structural",
  "zero", "mean", "resample"; per token position with ``positions=True``), computed
  over the domain by ablating edges in the forward pass; a `Circuit`, exported with
  ``to_eap``, ``to_eap_json``, ``to_acdc`` and ``to_auto_circuit``.
- `check` and `faithfulness`: how much of the domain an edge set alone reproduces.
- `score`: a method's edge or node scores against a circuit (ROC AUC, the ROC curve,
  precision and recall at k; scikit-learn, from the ``lab`` extra).
- methods to score: `activation_patching` (exact, native: each edge's effect on the
  logits), `acdc` (ACDC's greedy pruning, exact, native) and
  `edge_attribution_patching` (EAP and EAP-IG, gradients through a torch port of the
  edge-patched forward; torch from the ``lab`` extra).

Nothing here imports torch, TransformerLens or scikit-learn until it is used.
"""

from rasplang.circuits.graph import ComponentGraph, Edge, Node, graph
from rasplang.circuits.methods import activation_patching, output_distance
from rasplang.circuits.methods_acdc import ACDCResult, acdc
from rasplang.circuits.methods_eap import edge_attribution_patching
from rasplang.circuits.patching import ABLATIONS
from rasplang.circuits.scoring import Scores, score
from rasplang.circuits.truth import (
    GROUND_TRUTHS,
    Check,
    Circuit,
    check,
    faithfulness,
    ground_truth,
)

__all__ = [
    "ABLATIONS",
    "GROUND_TRUTHS",
    "ACDCResult",
    "Check",
    "Circuit",
    "ComponentGraph",
    "Edge",
    "Node",
    "Scores",
    "acdc",
    "activation_patching",
    "check",
    "edge_attribution_patching",
    "faithfulness",
    "graph",
    "ground_truth",
    "output_distance",
    "score",
]
