"""The Design page's pipeline diagram, drawn with matplotlib when the site is built.

`figures` returns ``{"design-pipeline.svg": bytes}``; the mkdocs hook adds it next to
docs/design.md, which shows it as an image. Text stays text in the SVG (searchable,
selectable), in the page's sans-serif font.
"""

from __future__ import annotations

import io
from typing import Any

NAME = "design-pipeline.svg"
#: Fills by role: the user's code, the shared IR, the three evaluators, the verdict.
FILLS = {"code": "#e8e8e8", "ir": "#fde9c8", "run": "#dbe9f6", "out": "#dcf1dc"}
#: name: (x, y, role, title, detail); x and y are the box centres, in layout units.
BOXES: dict[str, tuple[float, float, str, str, str]] = {
    "code": (1.3, 4.0, "code", "Python code", "operators, rasplang.rasp names"),
    "dag": (5.0, 4.0, "ir", "RASP expression DAG", "frozen nodes, hashed by identity"),
    "evaluate": (1.3, 2.3, "run", "rasplang.evaluate",
                 "pure Python, one input,\nexact semantics: the oracle"),
    "analyze": (6.4, 2.3, "ir", "rasplang.analyze",
                "topological order, encodings,\nvalue sets, problems"),
    "interpreter": (4.6, 0.7, "run", "rasplang.interpreter",
                    "value tables, integer codes,\nbatched kernels"),
    "backend": (8.2, 0.7, "run", "rasplang.backend",
                "blocks, schedule, weights,\nforward pass"),
    "outputs": (4.6, -0.9, "out", "outputs", "the three must agree"),
}
#: (from, to, label): the label sits at the arrow's middle.
ARROWS = [
    ("code", "dag", ""),
    ("dag", "evaluate", ""),
    ("dag", "analyze", ""),
    ("analyze", "interpreter", "one Analysis, shared"),
    ("analyze", "backend", ""),
    ("evaluate", "outputs", ""),
    ("interpreter", "outputs", ""),
    ("backend", "outputs", ""),
]
WIDTH, HEIGHT = 2.6, 0.95  # box size in layout units


def figures() -> dict[str, bytes]:
    """The diagram as SVG bytes, by file name."""
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({"svg.fonttype": "none", "font.family": "sans-serif"}):
        fig = draw()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None},
                    bbox_inches="tight", pad_inches=0.05)
    return {NAME: buffer.getvalue()}


def draw() -> Any:
    """The pipeline as a matplotlib Figure (boxes, arrows between box edges)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig = Figure(figsize=(7.6, 4.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-0.1, 9.6)
    ax.set_ylim(-1.5, 4.6)
    ax.set_axis_off()
    for x, y, role, title, detail in BOXES.values():
        ax.add_patch(FancyBboxPatch(
            (x - WIDTH / 2, y - HEIGHT / 2), WIDTH, HEIGHT, boxstyle="round,pad=0.02",
            facecolor=FILLS[role], edgecolor="#444444", linewidth=1.0,
        ))
        ax.text(x, y + HEIGHT / 2 - 0.14, title, ha="center", va="top", fontsize=10,
                fontweight="bold", family="monospace" if "." in title else "sans-serif")
        ax.text(x, y - 0.08, detail, ha="center", va="top", fontsize=8.5, linespacing=1.3)
    for start, end, label in ARROWS:
        (x0, y0), (x1, y1) = _edge_point(start, end), _edge_point(end, start)
        ax.add_patch(FancyArrowPatch(
            (x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=14, color="#444444",
            linewidth=1.2, shrinkA=2, shrinkB=2,
        ))
        if label:
            ax.text((x0 + x1) / 2 - 0.1, (y0 + y1) / 2, label, ha="right", va="center",
                    fontsize=8.5, style="italic", color="#333333")
    return fig


def _edge_point(name: str, other: str) -> tuple[float, float]:
    """Where the straight line from box ``name``'s centre to ``other``'s leaves ``name``."""
    x, y = BOXES[name][:2]
    ox, oy = BOXES[other][:2]
    dx, dy = ox - x, oy - y
    scale = min(
        (WIDTH / 2) / abs(dx) if dx else float("inf"),
        (HEIGHT / 2 + 0.02) / abs(dy) if dy else float("inf"),
    )
    return x + dx * scale, y + dy * scale
