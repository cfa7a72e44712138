"""Labels and colours of program graphs: numbered within the program, coloured by kind."""

from __future__ import annotations

import re

import rasplang as rl
from rasplang import Map, SequenceMap, aggregate, indices, length, select, tokens
from rasplang.graph import NODE_COLORS, display_labels, node_kind, to_dot


def make_reverse() -> rl.SOp:
    """reverse with two unnamed arithmetic nodes (length - indices - 1)."""
    opposite = select(indices, length - indices - 1, "==").named("opposite")
    return aggregate(opposite, tokens).named("reverse")


def test_unnamed_nodes_are_numbered_within_the_program() -> None:
    """map_1, map_2 ... count the program's own unnamed nodes, however many came before."""
    for _ in range(3):  # earlier programs push the global counter up
        make_reverse()
    inner = Map(lambda x: x + 1, tokens)
    outer = Map(lambda x: x * 2, inner, simplify=False)
    both = SequenceMap(lambda a, b: a + b, outer, indices)
    nodes = rl.topological_order(both)
    shown = display_labels(nodes)
    assert inner.label == f"map_{inner.unique_id}" and inner.unique_id > 2
    assert (shown[inner], shown[outer], shown[both]) == ("map_1", "map_2", "sequence_map_1")
    assert shown[tokens] == "tokens" and shown[indices] == "indices"


def test_display_labels_keep_names_and_avoid_them() -> None:
    """Named nodes keep their names; an unnamed node skips a number a name already uses."""
    named = Map(lambda x: x + 1, tokens).named("map_1")
    unnamed = Map(lambda x: x * 2, named, simplify=False)
    shown = display_labels(rl.topological_order(unnamed))
    assert shown[named] == "map_1"
    assert shown[unnamed] == "map_2"
    assert named.label == "map_1" and unnamed.label == f"map_{unnamed.unique_id}"


def test_display_labels_number_repeated_names_within_the_program() -> None:
    """Two nodes given the same name are told apart by numbers counted in the program,
    not by their ids; their labels stay the name."""
    a = (tokens + 1).named("x")
    b = (tokens * 2).named("x")
    taken = (indices + 1).named("x_1")
    prog = SequenceMap(lambda p, q: p + q, SequenceMap(lambda p, q: p + q, a, b), taken)
    shown = display_labels(rl.topological_order(prog))
    assert len(set(shown.values())) == len(shown)
    assert {shown[a], shown[b]} == {"x_2", "x_3"} and shown[taken] == "x_1"
    assert a.label == b.label == "x"
    assert shown[prog] == "sequence_map_2"


def test_to_dot_uses_per_program_labels() -> None:
    """The Graphviz text shows map_1, not the global map_<id>."""
    program = make_reverse()
    text = to_dot(program)
    assert '"sequence_map_1"' in text and '"map_1"' in text
    assert not re.search(r'"(sequence_)?map_\d{2,}', text)


def test_to_dot_fills_every_node_with_its_kind_colour() -> None:
    """Each node of the dot text is filled with NODE_COLORS of its kind: MLPs green,
    selectors orange, attention blue, inputs grey."""
    program = make_reverse()
    text = to_dot(program)
    nodes = rl.topological_order(program)
    shown = display_labels(nodes)
    for node in nodes:
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f'"{shown[node]}" ['))
        assert "style=filled" in line, line
        assert f'fillcolor="{NODE_COLORS[node_kind(node)]}"' in line, line
    kinds = {shown[n]: node_kind(n) for n in nodes}
    assert kinds["map_1"] == "mlp" and kinds["opposite"] == "selector"
    assert kinds["reverse"] == "attention" and kinds["tokens"] == "primitive"
    assert NODE_COLORS["mlp"] == "#dcf1dc" and NODE_COLORS["selector"] == "#fde9c8"
