"""Walking a program: topological order (iterative), unique labels, Graphviz text."""

from __future__ import annotations

from collections import Counter

from rasplang.nodes import (
    Aggregate,
    IndicesType,
    LengthType,
    RASPExpr,
    Selector,
    SelectorWidth,
    TokensType,
)

#: Fill colours of `rasplang.viz.plot_program` (both engines) and `to_dot`, by what a
#: node compiles to (see `node_kind`).
NODE_COLORS = {
    "primitive": "#e8e8e8",  # tokens, indices, length: the embedding
    "selector": "#fde9c8",  # Select and selector combinators: attention patterns
    "attention": "#dbe9f6",  # Aggregate, SelectorWidth: attention heads
    "mlp": "#dcf1dc",  # Map, SequenceMap, ...: MLPs
}


def node_kind(node: RASPExpr) -> str:
    """What ``node`` compiles to: "primitive", "selector", "attention" or "mlp"."""
    if isinstance(node, (TokensType, IndicesType, LengthType)):
        return "primitive"
    if isinstance(node, Selector):
        return "selector"
    if isinstance(node, (Aggregate, SelectorWidth)):
        return "attention"
    return "mlp"


def topological_order(program: RASPExpr) -> list[RASPExpr]:
    """Every node reachable from ``program``, children before parents.

    Iterative depth-first search, so chains of any depth work; ties follow the order
    of ``children``, so the order is deterministic.
    """
    if not isinstance(program, RASPExpr):
        raise TypeError(f"expected a RASP expression, got {type(program).__name__}: {program!r}")
    order: list[RASPExpr] = []
    done: set[RASPExpr] = set()
    on_stack: set[RASPExpr] = set()
    stack: list[tuple[RASPExpr, int]] = [(program, 0)]
    on_stack.add(program)
    while stack:
        node, i = stack[-1]
        children = node.children
        if i < len(children):
            stack[-1] = (node, i + 1)
            child = children[i]
            if child not in done and child not in on_stack:
                on_stack.add(child)
                stack.append((child, 0))
        else:
            stack.pop()
            on_stack.discard(node)
            done.add(node)
            order.append(node)
    return order


def unique_labels(nodes: list[RASPExpr]) -> dict[RASPExpr, str]:
    """A label per node that is unique within the program.

    A node keeps its ``label`` unless another node of the program has the same one;
    then each of them becomes ``<label>_<unique_id>``.
    """
    counts = Counter(node.label for node in nodes)
    return {
        node: node.label if counts[node.label] == 1 else f"{node.label}_{node.unique_id}"
        for node in nodes
    }


def display_labels(nodes: list[RASPExpr]) -> dict[RASPExpr, str]:
    """Labels for showing ``nodes`` (one program's), numbered within the program.

    A node keeps the name it was given when no other node of ``nodes`` has it. An
    unnamed node, labelled ``<kind>_<unique_id>`` from a counter shared by every
    program built so far (``map_44``), is shown as ``<kind>_<k>``: the k-th unnamed
    node of that kind in ``nodes``' order (``map_1``, ``map_2``, ...). Nodes that share
    a name are numbered the same way (``opens_1``, ``opens_2``). Numbers that would
    repeat a name in use are skipped. Nodes and their ``label`` are unchanged.
    """
    counts = Counter(node.label for node in nodes)
    base: dict[RASPExpr, str] = {}  # node -> the stem it is numbered under
    for node in nodes:
        if node.name is None and node.label.endswith(f"_{node.unique_id}"):
            base[node] = node.label.removesuffix(f"_{node.unique_id}")
        elif counts[node.label] > 1:
            base[node] = node.label
    shown = {node: node.label for node in nodes if node not in base}
    taken = set(shown.values())
    counters: Counter[str] = Counter()
    for node, stem in base.items():
        while True:
            counters[stem] += 1
            label = f"{stem}_{counters[stem]}"
            if label not in taken:
                break
        taken.add(label)
        shown[node] = label
    return {node: shown[node] for node in nodes}


def _dot_quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escaped + '"'


def to_dot(program: RASPExpr) -> str:
    """The computation graph as Graphviz ``dot`` text (nodes children-first).

    Nodes are labelled with `display_labels` and filled with `NODE_COLORS` by
    `node_kind`; selectors are boxes, SOps ellipses.
    """
    nodes = topological_order(program)
    labels = display_labels(nodes)
    lines = ["digraph rasp {", "  rankdir=BT;", '  node [fontname="Helvetica"];']
    for node in nodes:
        shape = "box" if isinstance(node, Selector) else "ellipse"
        fill = NODE_COLORS[node_kind(node)]
        text = f"{labels[node]}\n{type(node).__name__}"
        attrs_text = f'label={_dot_quote(text)}, shape={shape}, style=filled, fillcolor="{fill}"'
        lines.append(f"  {_dot_quote(labels[node])} [{attrs_text}];")
    for node in nodes:
        for child in node.children:
            lines.append(f"  {_dot_quote(labels[child])} -> {_dot_quote(labels[node])};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def format_program(program: RASPExpr) -> str:
    """The program as one line per node, children first: ``label = Kind(args)``."""
    return "\n".join(repr(node) for node in topological_order(program))
