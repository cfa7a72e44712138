"""Pictures of programs and compiled models (matplotlib, the ``viz`` extra).

matplotlib is imported inside the functions, so ``import rasplang`` stays light. Every
function returns a ``matplotlib.figure.Figure`` drawn on the Agg canvas, without pyplot:
nothing opens a window, no global figure list grows, and ``fig.savefig("x.png")`` works
on a headless machine. In a notebook, display the figure by leaving it as the last
expression of a cell.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rasplang.graph import to_dot, topological_order, unique_labels
from rasplang.nodes import (
    Aggregate,
    IndicesType,
    LengthType,
    RASPExpr,
    Selector,
    SelectorWidth,
    TokensType,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_attention", "plot_program", "plot_residual"]

#: Fill colours of `plot_program`'s matplotlib layout, by what the node compiles to.
NODE_COLORS = {
    "primitive": "#e8e8e8",  # tokens, indices, length
    "selector": "#fde9c8",  # Select and selector combinators: attention patterns
    "attention": "#dbe9f6",  # Aggregate, SelectorWidth: attention heads
    "mlp": "#dcf1dc",  # Map, SequenceMap, ...: MLPs
}


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
    the inputs); ``"auto"`` uses Graphviz when ``dot`` is on the PATH, else matplotlib.
    Node colours say what each node compiles to: attention (blue), MLP (green),
    selector pattern (orange), input (grey).
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


def _node_kind(node: RASPExpr) -> str:
    if isinstance(node, (TokensType, IndicesType, LengthType)):
        return "primitive"
    if isinstance(node, Selector):
        return "selector"
    if isinstance(node, (Aggregate, SelectorWidth)):
        return "attention"
    return "mlp"


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


def _plot_program_layers(program: RASPExpr, dpi: float) -> Figure:
    from matplotlib.patches import FancyArrowPatch

    layers = program_layers(program)
    labels = unique_labels([node for layer in layers for node in layer])
    widest = max(len(layer) for layer in layers)
    fig = _new_figure(max(4.0, 2.2 * widest), max(2.5, 1.2 * len(layers)), dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-0.6, widest - 0.4)
    ax.set_ylim(-0.6, len(layers) - 0.4)
    ax.set_axis_off()
    pos: dict[RASPExpr, tuple[float, float]] = {}
    for y, layer in enumerate(layers):
        offset = (widest - len(layer)) / 2
        for x, node in enumerate(layer):
            pos[node] = (offset + x, float(y))
    for node, (x, y) in pos.items():
        for child in node.children:
            cx, cy = pos[child]
            ax.add_patch(FancyArrowPatch(
                (cx, cy), (x, y), arrowstyle="-|>", mutation_scale=12, color="#555555",
                shrinkA=14, shrinkB=14, linewidth=1.0, zorder=1,
            ))
    for node, (x, y) in pos.items():
        box = "round,pad=0.35" if not isinstance(node, Selector) else "square,pad=0.35"
        ax.text(
            x, y, f"{labels[node]}\n{type(node).__name__}", ha="center", va="center",
            fontsize=9, zorder=2,
            bbox={"boxstyle": box, "facecolor": NODE_COLORS[_node_kind(node)],
                  "edgecolor": "#444444"},
        )
    return fig


# ------------------------------------------------------------ compiled models


def _forward(model: Any, tokens: Sequence[Any]) -> tuple[Any, list[str]]:
    """Run ``model`` on ``[bos, *tokens]``; return the result and the position labels."""
    bos = model.config.bos
    inputs = [bos, *tokens]
    return model.apply(inputs), [str(t) for t in inputs]


def plot_residual(model: Any, tokens: Sequence[Any], *, max_width: float = 40.0) -> Figure:
    """Heatmaps of the residual stream of ``model`` on ``tokens``, one per stage.

    ``model`` is a `rasplang.compile` result; the input is ``[bos, *tokens]``. Stage 0 is
    the embedding, then one panel after each sublayer (attention, MLP, attention, ...),
    from ``model.apply(...).residuals`` (each ``[1, seq, d_model]``).
    Rows are positions (labelled with their token), columns are residual dimensions
    (labelled with ``model.residual_labels``, e.g. ``tokens:a`` or ``frac``).
    """
    import numpy as np

    result, positions = _forward(model, tokens)
    residuals = np.asarray(result.residuals, dtype=float)[:, 0]  # (stages, seq, d_model)
    names = _stage_names(len(residuals))
    labels = list(model.residual_labels)
    n_stages, seq, d_model = residuals.shape
    width = min(max_width, 2.0 + 0.22 * d_model)
    fig = _new_figure(width, n_stages * (0.6 + 0.28 * seq) + 1.6, layout="constrained")
    axes = fig.subplots(n_stages, 1, squeeze=False)[:, 0]
    limit = float(np.abs(residuals).max()) or 1.0
    image = None
    for ax, stage, name in zip(axes, residuals, names):
        image = ax.imshow(stage, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto",
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


def plot_attention(
    model: Any, tokens: Sequence[Any], layer: int, head: int, *, ax: Axes | None = None
) -> Figure:
    """The attention pattern of one head of ``model`` on ``[bos, *tokens]``.

    Rows are queries and columns keys, both labelled with their tokens; each cell is
    the attention weight (rows sum to 1), from ``model.apply(...).attention[layer]``
    (``[1, n_heads, query, key]``). Pass ``ax`` to draw into an existing axes.
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
        fig = _new_figure(size + 1.0, size, layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    image = ax.imshow(pattern, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="none")
    ax.set_xticks(range(len(positions)), positions)
    ax.set_yticks(range(len(positions)), positions)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(f"layer {layer}, head {head}")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig
