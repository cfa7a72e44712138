"""A `Circuit` in the names of the circuit tools: EAP-IG/MIB, ACDC, auto-circuit.

- **EAP-IG and MIB** name nodes ``input``, ``a{layer}.h{head}``, ``m{layer}``, ``logits``
  and edges ``a0.h1->a1.h0<q>``: our names. `to_eap_json` writes EAP-IG's
  ``Graph.to_json`` dictionary (``cfg``, ``nodes``, ``edges`` with ``score`` and
  ``in_graph``), which ``Graph.from_json`` loads.
- **ACDC** (``TLACDCCorrespondence``) keys an edge by ``(child hook, child index, parent
  hook, parent index)`` on TransformerLens hooks: a head's output is
  ``blocks.{l}.attn.hook_result`` at ``(None, None, h)``, its inputs
  ``blocks.{l}.hook_{q,k,v}_input``; an MLP reads ``blocks.{l}.hook_mlp_in`` and writes
  ``blocks.{l}.hook_mlp_out`` at ``(None,)``; the embeddings are
  ``blocks.0.hook_resid_pre`` (or ``hook_embed`` and ``hook_pos_embed``) and the logits
  read ``blocks.{L-1}.hook_resid_post``. Inside a head, ACDC also keeps the edges
  ``hook_{q,k,v}_input -> attn.hook_{q,k,v} -> attn.hook_result`` (and
  ``hook_mlp_in -> hook_mlp_out``); `to_acdc` lists them for every head input and MLP
  in the circuit, as ACDC's canonical circuits do.
- **auto-circuit** names source nodes ``Resid Start``, ``A{l}.{h}``, ``MLP {l}`` and
  destinations ``A{l}.{h}.Q`` (``.K``, ``.V``; ``A{l}.{h}`` without ``separate_qkv``),
  ``MLP {l}``, ``Resid End``; an ``Edge`` is named ``src->dest`` and carries
  ``seq_idx`` (the token position) when the patchable model has ``seq_len``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from rasplang.circuits.graph import INPUT, LOGITS


def to_eap(circuit: Any) -> list[str]:
    """The circuit's edges in EAP-IG's names, in the graph's order, each once (a
    per-position edge counts when it is in the circuit at some position)."""
    return list(dict.fromkeys(circuit.graph[name].base for name in circuit.edges))


def to_eap_json(circuit: Any, path: Any = None) -> dict[str, Any]:
    """EAP-IG's ``Graph.to_json`` dictionary: every edge of the graph with ``in_graph``
    (in the circuit) and ``score`` 1.0 or 0.0, every node with ``in_graph`` (on an edge
    of the circuit); written as JSON to ``path`` when given."""
    g = circuit.graph
    inside = set(to_eap(circuit))
    names = list(dict.fromkeys(e.base for e in g.edges))
    on = {part for name in inside for part in name.split("<")[0].split("->")}
    out = {"cfg": {"n_layers": g.n_layers, "n_heads": g.n_heads, "parallel_attn_mlp": False},
           "nodes": {n: n in on for n in g.nodes},
           "edges": {n: {"score": float(n in inside), "in_graph": n in inside} for n in names}}
    if path is not None:
        with open(path, "w") as f:
            json.dump(out, f)
    return out


def _acdc_sender(node: Any, split_embed: bool) -> list[tuple[str, tuple]]:
    if node.kind == "input":
        return [("hook_embed", (None,)), ("hook_pos_embed", (None,))] if split_embed \
            else [("blocks.0.hook_resid_pre", (None,))]
    if node.kind == "attn":
        return [(f"blocks.{node.layer}.attn.hook_result", (None, None, node.head))]
    return [(f"blocks.{node.layer}.hook_mlp_out", (None,))]


def _acdc_receiver(node: Any, kind: str | None, n_layers: int) -> tuple[str, tuple]:
    if node.kind == "attn":
        return f"blocks.{node.layer}.hook_{kind}_input", (None, None, node.head)
    if node.kind == "mlp":
        return f"blocks.{node.layer}.hook_mlp_in", (None,)
    return f"blocks.{n_layers - 1}.hook_resid_post", (None,)


def to_acdc(circuit: Any, *, split_embed: bool = False) -> OrderedDict[tuple, bool]:
    """ACDC's edge dictionary ``{(child, child_index, parent, parent_index): True}``,
    TorchIndex values as tuples (module docstring). ``split_embed`` names the input
    ``hook_embed`` and ``hook_pos_embed`` (ACDC's ``use_pos_embed=True``, as its tracr
    tasks use), each edge from the input becoming two."""
    g = circuit.graph
    out: OrderedDict[tuple, bool] = OrderedDict()
    inner: OrderedDict[tuple, bool] = OrderedDict()
    for name in to_eap(circuit):
        e = g[name]
        receiver = g.nodes[e.receiver]
        child, child_index = _acdc_receiver(receiver, e.kind, g.n_layers)
        for parent, parent_index in _acdc_sender(g.nodes[e.sender], split_embed):
            out[(child, child_index, parent, parent_index)] = True
        layer = receiver.layer
        if receiver.kind == "attn":
            index = (None, None, receiver.head)
            hook = f"blocks.{layer}.attn.hook_{e.kind}"
            inner[(f"blocks.{layer}.attn.hook_result", index, hook, index)] = True
            inner[(hook, index, child, index)] = True
        elif receiver.kind == "mlp":
            inner[(f"blocks.{layer}.hook_mlp_out", (None,), child, (None,))] = True
    out.update(inner)
    return out


def auto_circuit_name(circuit: Any, edge_name: str, separate_qkv: bool = True) -> str:
    """auto-circuit's name of one of our edges (``"A0.0->A1.0.Q"``)."""
    e = circuit.graph[edge_name]
    nodes = circuit.graph.nodes

    def src(n: str) -> str:
        node = nodes[n]
        if n == INPUT:
            return "Resid Start"
        return f"A{node.layer}.{node.head}" if node.kind == "attn" else f"MLP {node.layer}"

    node = nodes[e.receiver]
    if e.receiver == LOGITS:
        dest = "Resid End"
    elif node.kind == "attn":
        dest = f"A{node.layer}.{node.head}" + (f".{e.kind.upper()}" if separate_qkv else "")
    else:
        dest = f"MLP {node.layer}"
    return f"{src(e.sender)}->{dest}"


def to_auto_circuit(circuit: Any, patchable_model: Any) -> set[Any]:
    """The ``Edge`` objects of an auto-circuit ``PatchableModel`` (of this model loaded
    through TransformerLens, with ``factorized=True``) that are in the circuit.

    A per-position circuit needs a patchable model with ``seq_len`` (each edge's
    ``seq_idx`` is its position) and a whole-sequence circuit one without; without
    ``separate_qkv`` an edge into a head is in when its q, k or v edge is. Raises
    ValueError naming the first edge the patchable model does not have.
    """
    seq_len = getattr(patchable_model, "seq_len", None)
    if circuit.positions and seq_len is None:
        raise ValueError("a per-position circuit needs a patchable model with seq_len "
                         "(patchable_model(..., seq_len=n_ctx))")
    if not circuit.positions and seq_len is not None:
        raise ValueError(f"the patchable model splits edges per position (seq_len "
                         f"{seq_len}); compute the circuit with positions=True")
    separate = bool(getattr(patchable_model, "separate_qkv", True))
    theirs = {(edge.name, edge.seq_idx): edge for edge in patchable_model.edges}
    out = set()
    for name in circuit.edges:
        key = (auto_circuit_name(circuit, name, separate), circuit.graph[name].position)
        if key not in theirs:
            raise ValueError(f"the patchable model has no edge {key[0]!r}"
                             + (f" at position {key[1]}" if key[1] is not None else "")
                             + f" (ours: {name!r}); is it this model, factorized?")
        out.add(theirs[key])
    return out

