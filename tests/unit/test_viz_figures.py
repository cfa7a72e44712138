"""What rasplang.viz draws: edges around boxes, per-program labels, captions that match."""

from __future__ import annotations

import shutil
import warnings

import attrs
import numpy as np
import pytest

import rasplang as rl
from rasplang import lib, numerical, tokens, viz
from rasplang.graph import NODE_COLORS

pytest.importorskip("matplotlib")


def build(name: str) -> rl.SOp:
    """A library program at its registered length."""
    entry = lib.PROGRAMS[name]
    return entry.build(entry.max_seq_len)


def compiled(name: str):
    """A library program compiled at its registered vocabulary and length."""
    entry = lib.PROGRAMS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rl.compile(entry.build(entry.max_seq_len), entry.vocab, entry.max_seq_len)


def edges_crossing_boxes(fig) -> list[tuple[str, str]]:
    """(edge's first point, box text) for every edge that passes through a box other
    than its two ends, in display coordinates of the drawn figure."""
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_bbox_patch().get_window_extent(renderer)) for t in ax.texts]
    crossings = []
    for arrow in ax.patches:
        path = arrow.get_path()  # data coordinates, arrow head included
        points = ax.transData.transform(path.interpolated(20).vertices)
        start, end = points[0], points[-1]
        for text, box in boxes:
            # the boxes the edge starts under and ends at are its own
            grown = box.expanded(1.0, 1.0).padded(6)
            if grown.contains(*start) or grown.contains(*end):
                continue
            inside = [box.contains(x, y) for x, y in points]
            if any(inside):
                crossings.append((str(points[0].round()), text.replace("\n", " ")))
    return crossings


@pytest.mark.parametrize("name", ["reverse", "sort_freq", "shuffle_dyck2", "frac_prevs"])
def test_matplotlib_edges_do_not_cross_boxes(name: str) -> None:
    """An edge that skips layers bends around the boxes in between (sampled along it)."""
    fig = viz.plot_program(build(name), engine="matplotlib")
    fig.canvas.draw()
    assert edges_crossing_boxes(fig) == []


def test_edge_check_sees_a_crossing() -> None:
    """The crossing check fails on an edge drawn straight through a box."""
    from matplotlib.patches import FancyArrowPatch

    fig = viz.plot_program(build("reverse"), engine="matplotlib")
    ax = fig.axes[0]
    xs = [t.get_position() for t in ax.texts]
    low = min(xs, key=lambda p: p[1])
    high = max(xs, key=lambda p: p[1])
    ax.add_patch(FancyArrowPatch((low[0], low[1] - 0.5), (low[0], high[1] + 0.5)))
    fig.canvas.draw()
    assert edges_crossing_boxes(fig) != []


def test_matplotlib_layout_numbers_nodes_within_the_program() -> None:
    """Unnamed nodes are shown as map_1, sequence_map_1, not by the global counter."""
    opposite = rl.select(rl.indices, rl.length - rl.indices - 1, "==").named("opposite")
    fig = viz.plot_program(rl.aggregate(opposite, tokens).named("reverse"), engine="matplotlib")
    names = {t.get_text().split("\n")[0] for t in fig.axes[0].texts}
    assert {"reverse", "tokens", "indices", "length"} <= names
    unnamed = {n for n in names if n.startswith(("map_", "sequence_map_"))}
    assert unnamed and unnamed <= {"map_1", "map_2", "sequence_map_1", "sequence_map_2"}


def test_matplotlib_layout_colours_boxes_by_kind() -> None:
    """Box fills are NODE_COLORS of the node's kind (Map green, Select orange)."""
    from matplotlib.colors import to_hex

    fig = viz.plot_program(build("reverse"), engine="matplotlib")
    fills = {t.get_text().split("\n")[1]: to_hex(t.get_bbox_patch().get_facecolor())
             for t in fig.axes[0].texts}
    assert fills["Map"] == NODE_COLORS["mlp"]
    assert fills["Select"] == NODE_COLORS["selector"]
    assert fills["Aggregate"] == NODE_COLORS["attention"]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_dot_image_has_the_caption_colours() -> None:
    """The Graphviz rendering fills Maps green and Selects orange (pixels of those colours)."""
    from matplotlib.colors import to_rgb

    fig = viz.plot_program(build("reverse"), engine="dot")
    image = np.asarray(fig.axes[0].images[0].get_array())[..., :3]
    for kind in ("mlp", "selector", "attention", "primitive"):
        colour = np.array(to_rgb(NODE_COLORS[kind]))
        share = np.mean(np.all(np.abs(image - colour) < 2 / 255, axis=-1))
        assert share > 0.005, f"no {kind} fill ({NODE_COLORS[kind]}) in the dot image"


@pytest.fixture(scope="module")
def sort_freq():
    """sort_freq compiled (unnamed Map and SequenceMap nodes, several heads)."""
    return compiled("sort_freq")


def test_attention_title_names_the_node_and_selector(sort_freq) -> None:
    """Each used head's title names the node it computes and its selector."""
    titled = 0
    for steps in sort_freq.circuit.values():
        for step in steps:
            if str(step.sublayer) != "attn" or not step.writes:
                continue
            fig = viz.plot_attention(sort_freq, [2, 3, 2, 1], step.layer, step.head)
            title = fig.axes[0].get_title()
            computed, selectors = viz.head_nodes(sort_freq, step.layer, step.head)
            assert title.startswith(f"layer {step.layer}, head {step.head}: ")
            assert computed and all(name in title for name in computed + selectors)
            assert fig.axes[0].images, "a used head shows its pattern"
            titled += 1
    assert titled >= 3
    shown = viz.head_nodes(sort_freq, sort_freq.circuit["sort_freq"][0].layer,
                           sort_freq.circuit["sort_freq"][0].head)
    assert shown[0] == ["sort_freq"] and shown[1] == ["select_1"]


def test_empty_head_gets_a_note(sort_freq) -> None:
    """A head no node uses is shown as a note, not as a uniform pattern."""
    step = sort_freq.circuit["sort_freq"][0]
    unused = attrs.evolve(sort_freq, circuit={})  # the same weights, no node in any head
    assert viz.head_nodes(unused, step.layer, step.head) == ([], [])
    fig = viz.plot_attention(unused, [2, 3, 2, 1], step.layer, step.head)
    ax = fig.axes[0]
    assert len(ax.images) == 0
    assert "empty" in ax.get_title()
    assert any("no node" in t.get_text() for t in ax.texts)
    used = viz.plot_attention(sort_freq, [2, 3, 2, 1], step.layer, step.head)
    assert len(used.axes[0].images) == 1 and "empty" not in used.axes[0].get_title()


def test_residual_colours_start_at_zero_for_nonnegative_values() -> None:
    """One-hot residuals (all >= 0) use a sequential map from 0, not -1..1 diverging."""
    entry = lib.PROGRAMS["detect_pattern"]  # one block per node: one-hots only, all >= 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = rl.compile(entry.build(entry.max_seq_len), entry.vocab, entry.max_seq_len,
                           optimize=False)
    fig = viz.plot_residual(model, list(entry.example))
    image = next(ax for ax in fig.axes if ax.images).images[0]
    assert image.get_clim()[0] == 0.0
    assert image.get_cmap().name == "Blues"


def test_residual_colours_diverge_for_negative_values() -> None:
    """A residual with negative values keeps a diverging map centred on 0."""
    program = numerical(rl.Map(lambda x: x - 3, tokens)).named("shifted")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = rl.compile(program, [1, 2], 3)
    fig = viz.plot_residual(model, [1, 2])
    image = next(ax for ax in fig.axes if ax.images).images[0]
    low, high = image.get_clim()
    assert low == -high < 0
    assert image.get_cmap().name == "RdBu_r"


def test_residual_labels_match_the_program_graph(sort_freq) -> None:
    """The residual plot's columns use the labels plot_program shows (map_1, ...)."""
    labels = viz.residual_labels(sort_freq)
    assert len(labels) == len(sort_freq.residual_labels)
    nodes = {label.partition(":")[0] for label in labels}
    program = {t.get_text().split("\n")[0]
               for t in viz.plot_program(sort_freq.program, engine="matplotlib").axes[0].texts}
    assert nodes - {"one"} <= program
    assert any(n.startswith(("map_", "sequence_map_")) for n in nodes)


def test_residual_stages_pick_panels(sort_freq) -> None:
    """stages=[-1] draws only the stream after the last sublayer; a bad index is refused."""
    fig = viz.plot_residual(sort_freq, [2, 3, 2, 1], stages=[-1])
    panels = [ax for ax in fig.axes if ax.images]
    result = sort_freq.apply([sort_freq.config.bos, 2, 3, 2, 1])
    assert len(panels) == 1
    assert panels[0].get_title(loc="left") == f"after layer {sort_freq.config.n_layers - 1} MLP"
    np.testing.assert_array_equal(panels[0].images[0].get_array(), result.residuals[-1][0])
    with pytest.raises(IndexError):
        viz.plot_residual(sort_freq, [2, 3, 2, 1], stages=[99])
