"""Pictures of programs and compiled models (matplotlib, the ``viz`` extra).

matplotlib is imported inside the functions, so ``import rasplang`` stays light. Every
function returns a ``matplotlib.figure.Figure`` drawn on the Agg canvas, without pyplot:
nothing opens a window, no global figure list grows, and ``fig.savefig("x.png")`` works
on a headless machine. In a notebook, display the figure by leaving it as the last
expression of a cell.
"""

from __future__ import annotations

import io
import itertools
import shutil
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rasplang.graph import (
    NODE_COLORS,
    display_labels,
    node_kind,
    to_dot,
    topological_order,
    unique_labels,
)
from rasplang.nodes import RASPExpr, Selector

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "NODE_COLORS", "head_nodes", "plot_attention", "plot_program", "plot_residual",
    "program_layers", "program_layout", "residual_labels",
]

#: Font size (points) of the boxes in `plot_program`'s matplotlib layout.
_FONT = 9
#: Inches between layers, and the least inches between two slots of a layer.
_LAYER_IN, _SLOT_IN = 1.2, 1.6
#: Half the height (inches) of a two-line box: two lines plus the 0.35 em padding.
_BOX_HALF_IN = (2 * 1.2 * _FONT + 2 * 0.35 * _FONT) / 72 / 2
#: Edges leave and enter a box vertically up to this far (layers) from its centre, so
#: their bends lie between the rows of boxes and never cross a box.
_STUB = 0.32
#: An edge runs straight through a layer it skips when it moves at most this many slots
#: per layer there (see `_edge_path`).
_STRAIGHT = 1.0


def _new_figure(
    width: float, height: float, dpi: float = 100, layout: str | None = None
) -> Figure:
    """A Figure on the Agg canvas, outside pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


# ------------------------------------------------------------------ programs


def plot_program(program: RASPExpr, *, engine: str = "auto", dpi: float = 100) -> Figure:
    """Draw the computation graph of ``program``, inputs at the bottom.

    ``engine="dot"`` renders `rasplang.to_dot`'s text with Graphviz's ``dot`` binary;
    ``"matplotlib"`` draws a layered layout (a node's layer is its longest path from
    the inputs; an edge that skips layers bends around the boxes in between);
    ``"auto"`` uses Graphviz when ``dot`` is on the PATH, else matplotlib.
    Both engines colour a node by what it compiles to (`NODE_COLORS`): attention (blue),
    MLP (green), selector pattern (orange), input (grey). Unnamed nodes are numbered
    within the program (``map_1``, ``map_2``, ...; see `rasplang.graph.display_labels`).
    """
    if engine not in ("auto", "dot", "matplotlib"):
        raise ValueError(f"engine must be 'auto', 'dot' or 'matplotlib', got {engine!r}")
    dot = shutil.which("dot")
    if engine == "dot" and dot is None:
        raise RuntimeError(
            "engine='dot' needs Graphviz's `dot` binary on the PATH "
            "(e.g. `apt-get install graphviz`); engine='matplotlib' needs nothing"
        )
    if engine == "dot" or (engine == "auto" and dot is not None):
        return _plot_program_dot(program, dot, dpi)  # type: ignore[arg-type]
    return _plot_program_layers(program, dpi)


def _plot_program_dot(program: RASPExpr, dot: str, dpi: float) -> Figure:
    import matplotlib.image

    result = subprocess.run(
        [dot, "-Tpng", f"-Gdpi={dpi:g}"],
        input=to_dot(program).encode(),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"`dot -Tpng` failed: {result.stderr.decode(errors='replace')}")
    image = matplotlib.image.imread(io.BytesIO(result.stdout), format="png")
    height, width = image.shape[:2]
    fig = _new_figure(width / dpi, height / dpi, dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image, interpolation="none")
    ax.set_axis_off()
    return fig


def program_layers(program: RASPExpr) -> list[list[RASPExpr]]:
    """The nodes of ``program`` by layer: layer k holds the nodes whose longest path
    from an input is k edges long, in topological order within a layer."""
    depth: dict[RASPExpr, int] = {}
    for node in topological_order(program):
        depth[node] = 1 + max((depth[c] for c in node.children), default=-1)
    layers: list[list[RASPExpr]] = [[] for _ in range(max(depth.values()) + 1)]
    for node, d in depth.items():
        layers[d].append(node)
    return layers


def program_layout(
    program: RASPExpr,
) -> tuple[dict[RASPExpr, tuple[float, float]], list[tuple[RASPExpr, RASPExpr, list]]]:
    """Slots for `plot_program`'s matplotlib layout: ``(positions, edges)``.

    ``positions[node]`` is ``(slot, layer)``; each edge is ``(child, parent, points)``,
    the slots it passes in the layers between the two. An edge that skips layers takes
    a slot of its own in each layer it crosses (as in Sugiyama's layered drawing), so
    it never runs through a box; slots are ordered by the mean slot of their
    neighbours, a few sweeps up and down, to keep edges short, then moved toward that
    mean, at least one slot apart, to keep them straight.
    """
    layers = program_layers(program)
    depth = {node: y for y, layer in enumerate(layers) for node in layer}
    rows: list[list[Any]] = [list(layer) for layer in layers]
    below: dict[Any, list[Any]] = {}  # item -> the items it connects to one row down
    above: dict[Any, list[Any]] = {}
    chains: list[tuple[RASPExpr, RASPExpr, list[Any]]] = []
    for node in topological_order(program):
        for i, child in enumerate(node.children):
            chain: list[Any] = [child]
            for y in range(depth[child] + 1, depth[node]):
                waypoint = ("edge", node.unique_id, i, y)
                rows[y].append(waypoint)
                chain.append(waypoint)
            chain.append(node)
            for lower, upper in itertools.pairwise(chain):
                below.setdefault(upper, []).append(lower)
                above.setdefault(lower, []).append(upper)
            chains.append((child, node, chain[1:-1]))
    for _ in range(4):
        for y in range(1, len(rows)):
            _order_by_neighbours(rows[y], rows[y - 1], below)
        for y in range(len(rows) - 2, -1, -1):
            _order_by_neighbours(rows[y], rows[y + 1], above)
    widest = max(len(row) for row in rows)
    slot = {item: (widest - len(row)) / 2 + x for row in rows for x, item in enumerate(row)}
    for _ in range(4):  # straighten edges: move each slot toward its neighbours' mean
        for sweep, links in ((rows[1:], below), (rows[-2::-1], above)):
            for row in sweep:
                wanted = [_mean([slot[n] for n in links.get(item, ())], slot[item])
                          for item in row]
                slot.update(zip(row, _spread(wanted)))
    left = min(slot.values())
    slot = {item: x - left for item, x in slot.items()}
    positions = {node: (slot[node], float(depth[node])) for node in depth}
    edges = [
        (child, parent, [(slot[w], float(w[3])) for w in waypoints])
        for child, parent, waypoints in chains
    ]
    return positions, edges


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def _spread(wanted: list[float]) -> list[float]:
    """The positions closest to ``wanted`` (least squares) that keep the order and are
    at least one slot apart: pool-adjacent-violators on ``wanted[i] - i``."""
    blocks: list[list[float]] = []  # [sum, count] of pooled values
    for i, w in enumerate(wanted):
        blocks.append([w - i, 1])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] > blocks[-1][0] * blocks[-2][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    pooled = [total / count for total, count in blocks for _ in range(int(count))]
    return [v + i for i, v in enumerate(pooled)]


def _order_by_neighbours(row: list[Any], other: list[Any], links: dict[Any, list[Any]]) -> None:
    """Sort ``row`` in place by the mean index of each item's neighbours in ``other``."""
    index = {item: i for i, item in enumerate(other)}
    here = {item: i for i, item in enumerate(row)}

    def key(item: Any) -> float:
        seen = [index[n] for n in links.get(item, ()) if n in index]
        return sum(seen) / len(seen) if seen else float(here[item])

    row.sort(key=key)


def _edge_path(start: tuple[float, float], waypoints: list[tuple[float, float]],
               end: tuple[float, float], gap: float) -> Any:
    """An edge from box edge to box edge. It leaves and enters boxes vertically, so it
    bends only between the rows of boxes (S-curves). Through a waypoint whose
    neighbours on the edge are at most `_STRAIGHT` slots away it runs straight (it
    then stays within a fraction of a slot of its own slot while it crosses that row);
    through any other waypoint, vertically."""
    from matplotlib.path import Path

    points = [start, *waypoints, end]
    straight = [False] + [
        abs(points[i][0] - points[i - 1][0]) <= _STRAIGHT
        and abs(points[i][0] - points[i + 1][0]) <= _STRAIGHT
        for i in range(1, len(points) - 1)
    ] + [False]
    vertices = [(start[0], start[1] + gap)]  # the top edge of the child's box
    codes = [Path.MOVETO]
    for i, ((x0, y0), (x1, y1)) in enumerate(itertools.pairwise(points)):
        if not straight[i]:
            vertices.append((x0, y0 + _STUB))  # out of the box or waypoint, vertically
            codes.append(Path.LINETO)
        if straight[i] or straight[i + 1]:
            vertices.append((x1, y1) if straight[i + 1] else (x1, y1 - _STUB))
            codes.append(Path.LINETO)
        else:
            mid = (y0 + y1) / 2
            vertices += [(x0, mid), (x1, mid), (x1, y1 - _STUB)]
            codes += [Path.CURVE4] * 3
    vertices.append((end[0], end[1] - gap))  # the bottom edge of the parent's box
    codes.append(Path.LINETO)
    return Path(vertices, codes)


def _plot_program_layers(program: RASPExpr, dpi: float) -> Figure:
    from matplotlib.patches import FancyArrowPatch

    positions, edges = program_layout(program)
    labels = display_labels(topological_order(program))
    texts = {node: f"{labels[node]}\n{type(node).__name__}" for node in positions}
    longest = max(len(line) for text in texts.values() for line in text.split("\n"))
    slot_in = max(_SLOT_IN, 0.6 * _FONT / 72 * longest + 0.5)
    xs = [x for x, _ in positions.values()] + [x for *_, way in edges for x, _ in way]
    widest = max(xs) + 1
    n_layers = int(max(y for _, y in positions.values())) + 1
    fig = _new_figure(max(4.0, slot_in * widest), max(2.5, _LAYER_IN * n_layers), dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-0.6, widest - 0.4)
    ax.set_ylim(-0.6, n_layers - 0.4)
    ax.set_axis_off()
    inches_per_layer = fig.get_figheight() / (n_layers + 0.2)
    gap = (_BOX_HALF_IN + 0.02) / inches_per_layer
    for child, parent, waypoints in edges:
        path = _edge_path(positions[child], waypoints, positions[parent], gap)
        ax.add_patch(FancyArrowPatch(
            path=path, arrowstyle="-|>", mutation_scale=12, color="#555555",
            linewidth=1.0, zorder=1,
        ))
    for node, (x, y) in positions.items():
        box = "round,pad=0.35" if not isinstance(node, Selector) else "square,pad=0.35"
        ax.text(
            x, y, texts[node], ha="center", va="center", fontsize=_FONT, zorder=2,
            bbox={"boxstyle": box, "facecolor": NODE_COLORS[node_kind(node)],
                  "edgecolor": "#444444"},
        )
    return fig


# ------------------------------------------------------------ compiled models


def _forward(model: Any, tokens: Sequence[Any]) -> tuple[Any, list[str]]:
    """Run ``model`` on ``[bos, *tokens]``; return the result and the position labels."""
    bos = model.config.bos
    inputs = [bos, *tokens]
    return model.apply(inputs), [str(t) for t in inputs]


def _shown_names(model: Any) -> dict[str, str]:
    """The label each node has in ``model.residual_labels`` and ``model.circuit``, to
    the label `plot_program` shows for it (unnamed nodes numbered within the program).
    Empty for a model without its program (one loaded from a file)."""
    program = getattr(model, "program", None)
    if program is None:
        return {}
    nodes = topological_order(program)
    compiled, shown = unique_labels(nodes), display_labels(nodes)
    return {compiled[node]: shown[node] for node in nodes if compiled[node] != shown[node]}


def residual_labels(model: Any) -> list[str]:
    """``model.residual_labels`` with the node labels `plot_program` shows:
    ``map_44:1`` becomes ``map_1:1`` when that Map is the program's first unnamed one."""
    names = _shown_names(model)
    out = []
    for label in model.residual_labels:
        node, sep, value = str(label).partition(":")
        out.append(names.get(node, node) + sep + value)
    return out


def plot_residual(
    model: Any, tokens: Sequence[Any], *, stages: Sequence[int] | None = None,
    max_width: float = 40.0,
) -> Figure:
    """Heatmaps of the residual stream of ``model`` on ``tokens``, one per stage.

    ``model`` is a `rasplang.compile` result; the input is ``[bos, *tokens]``. Stage 0 is
    the embedding, then one panel after each sublayer (attention, MLP, attention, ...),
    from ``model.apply(...).residuals`` (each ``[1, seq, d_model]``).
    Rows are positions (labelled with their token), columns are residual dimensions
    (labelled with `residual_labels`, e.g. ``tokens:a`` or ``frac``). When no value is
    negative (one-hot encodings, fractions) the colours run from white at 0; otherwise
    a diverging map is centred on 0. ``stages`` picks panels by index (``[-1]``: only
    the stream the unembedding reads); the colours are scaled over all stages.
    """
    import numpy as np

    result, positions = _forward(model, tokens)
    residuals = np.asarray(result.residuals, dtype=float)[:, 0]  # (stages, seq, d_model)
    names = _stage_names(len(residuals))
    if stages is not None:
        picked = [range(len(residuals))[i] for i in stages]  # IndexError when out of range
        shown, names = residuals[picked], [names[i] for i in picked]
    else:
        shown = residuals
    labels = residual_labels(model)
    n_stages, seq, d_model = shown.shape
    width = min(max_width, 2.0 + 0.22 * d_model)
    fig = _new_figure(width, n_stages * (0.6 + 0.28 * seq) + 1.6, layout="constrained")
    axes = fig.subplots(n_stages, 1, squeeze=False)[:, 0]
    finite = residuals[np.isfinite(residuals)]
    low = float(finite.min()) if finite.size else 0.0
    limit = float(np.abs(finite).max()) if finite.size else 0.0
    limit = limit or 1.0
    # float rounding leaves -1e-17 where a value is 0: not a reason to diverge
    cmap, vmin = ("Blues", 0.0) if low >= -1e-9 * limit else ("RdBu_r", -limit)
    image = None
    for ax, stage, name in zip(axes, shown, names):
        image = ax.imshow(stage, cmap=cmap, vmin=vmin, vmax=limit, aspect="auto",
                          interpolation="none")
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_yticks(range(seq), positions, fontsize=7)
        ax.set_xticks([])
    axes[-1].set_xticks(range(d_model), labels, rotation=90, fontsize=7)
    fig.colorbar(image, ax=list(axes), shrink=0.5, pad=0.01)
    return fig


def _stage_names(n_stages: int) -> list[str]:
    names = ["embedding"]
    for i in range(1, n_stages):
        layer, sub = divmod(i - 1, 2)
        names.append(f"after layer {layer} {'attention' if sub == 0 else 'MLP'}")
    return names


def head_nodes(model: Any, layer: int, head: int) -> tuple[list[str], list[str]]:
    """``(computed, selectors)``: the nodes head ``head`` of layer ``layer`` computes
    (an Aggregate or SelectorWidth writes its result) and the selectors whose pattern
    it holds, by the labels `plot_program` shows; both empty for an unused head."""
    names = _shown_names(model)
    computed, selectors = [], []
    for label, steps in model.circuit.items():
        for step in steps:
            if step.layer == layer and str(step.sublayer) == "attn" and step.head == head:
                (computed if step.writes else selectors).append(names.get(label, label))
    return computed, selectors


def plot_attention(
    model: Any, tokens: Sequence[Any], layer: int, head: int, *, ax: Axes | None = None
) -> Figure:
    """The attention pattern of one head of ``model`` on ``[bos, *tokens]``.

    Rows are queries and columns keys, both labelled with their tokens; each cell is
    the attention weight (rows sum to 1), from ``model.apply(...).attention[layer]``
    (``[1, n_heads, query, key]``). The title names the node the head computes and
    its selector (from ``model.circuit``). A head no node uses (layers have as many
    heads as the busiest one) is shown as a note, not as its meaningless uniform
    pattern. Pass ``ax`` to draw into an existing axes.
    """
    import numpy as np

    result, positions = _forward(model, tokens)
    n_layers, n_heads = len(result.attention), model.config.n_heads
    if not 0 <= layer < n_layers or not 0 <= head < n_heads:
        raise IndexError(
            f"no head ({layer}, {head}): the model has {n_layers} layers of {n_heads} heads"
        )
    pattern = np.asarray(result.attention[layer], dtype=float)[0, head]  # (query, key)
    if ax is None:
        size = 1.5 + 0.4 * len(positions)
        fig = _new_figure(max(4.0, size + 1.0), max(3.0, size), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    computed, selectors = head_nodes(model, layer, head)
    ax.set_xticks(range(len(positions)), positions)
    ax.set_yticks(range(len(positions)), positions)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    title = f"layer {layer}, head {head}"
    if not computed and not selectors:
        ax.set_xlim(-0.5, len(positions) - 0.5)
        ax.set_ylim(len(positions) - 0.5, -0.5)
        ax.set_aspect("equal")
        ax.text(0.5, 0.5, "empty head:\nno node of the\nprogram uses it",
                transform=ax.transAxes, ha="center", va="center", color="#555555")
        ax.set_title(f"{title} (empty)")
        return fig
    if computed:
        title += ": " + ", ".join(computed)
    lines = [title] + (["selector " + ", ".join(selectors)] if selectors else [])
    image = ax.imshow(pattern, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="none")
    fig.colorbar(image, ax=ax, shrink=0.8)
    # The title is centred on the axes, which the colour bar pushes left: wrap it to
    # the room on the axes' narrower side of the figure, once the layout has placed it.
    width = fig.get_figwidth() * 72 * _TITLE_ROOM  # points
    ax.set_title(_wrapped(lines, width), fontsize=TITLE_SIZE)
    fig.draw_without_rendering()
    box = ax.get_position()
    centre = (box.x0 + box.x1) / 2
    ax.set_title(_wrapped(lines, 2 * min(centre, 1 - centre) * width), fontsize=TITLE_SIZE)
    return fig


#: The attention plot's title size (points), and the share of the figure's width its
#: lines may take (constrained layout pads each side).
TITLE_SIZE = 10
_TITLE_ROOM = 0.92


def _wrapped(lines: Sequence[str], room: float) -> str:
    """``lines`` broken at spaces so that each is at most ``room`` points wide, as
    measured in the title's font (a title wider than its figure is cut at both ends); a
    name wider than that by itself is broken inside."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    font, measure = FontProperties(size=TITLE_SIZE), TextToPath()

    def fits(text: str) -> bool:
        return measure.get_text_width_height_descent(text, font, ismath=False)[0] <= room

    out: list[str] = []
    for line in lines:
        current = ""
        for word in line.split(" "):
            if fits(f"{current} {word}" if current else word):
                current = f"{current} {word}" if current else word
                continue
            if current:
                out.append(current)
            while not fits(word):  # longer than the figure is wide: break it
                cut = max([k for k in range(1, len(word)) if fits(word[:k])], default=1)
                out.append(word[:cut])
                word = word[cut:]
            current = word
        out.append(current)
    return "\n".join(out)
