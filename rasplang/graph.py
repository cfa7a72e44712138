"""Walking a program: topological order (iterative), unique labels, Graphviz text."""

from __future__ import annotations

from collections import Counter

from rasplang.nodes import (
    Aggregate,
    RASPExpr,
    Select,
    Selector,
    SelectorWidth,
)


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


def _dot_quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escaped + '"'


def to_dot(program: RASPExpr) -> str:
    """The computation graph as Graphviz ``dot`` text (nodes children-first)."""
    nodes = topological_order(program)
    labels = unique_labels(nodes)
    lines = ["digraph rasp {", "  rankdir=BT;", '  node [fontname="Helvetica"];']
    for node in nodes:
        shape = "box" if isinstance(node, Selector) else "ellipse"
        if isinstance(node, (Aggregate, SelectorWidth, Select)):
            style = ', style=filled, fillcolor="#dbe9f6"'
        else:
            style = ""
        text = f"{labels[node]}\n{type(node).__name__}"
        attrs_text = f"label={_dot_quote(text)}, shape={shape}{style}"
        lines.append(f"  {_dot_quote(labels[node])} [{attrs_text}];")
    for node in nodes:
        for child in node.children:
            lines.append(f"  {_dot_quote(labels[child])} -> {_dot_quote(labels[node])};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def format_program(program: RASPExpr) -> str:
    """The program as one line per node, children first: ``label = Kind(args)``."""
    return "\n".join(repr(node) for node in topological_order(program))
