"""The Performance page's figures and full tables, drawn from docs/data/performance.json.

The data file holds measured numbers only (each dataset names its machine, date and the
command that measures it); nothing is measured when the site is built. The mkdocs hook
calls `figures` to add the PNGs next to docs/performance.md, and `expand` to replace
each ``<!-- rasplang:performance-data NAME -->`` marker (alone on its line) with a
collapsed table of the whole dataset NAME.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data" / "performance.json"
MARKER = re.compile(r"^<!--\s*rasplang:performance-data\s+(?P<name>\w+)\s*-->$", re.M)
#: One colour per program, the same in every figure (matplotlib's tab10).
COLORS = {
    "length": "#e377c2", "reverse": "#1f77b4", "hist": "#ff7f0e", "sort": "#2ca02c",
    "sort_unique": "#2ca02c", "sort_freq": "#d62728", "frac_prevs": "#9467bd",
    "shuffle_dyck2": "#8c564b",
}


def load(path: Path = DATA) -> dict[str, Any]:
    """The data file, parsed."""
    return json.loads(path.read_text(encoding="utf-8"))


def records(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The rows of dataset ``name`` as dicts keyed by column label."""
    dataset = data["datasets"][name]
    return [dict(zip(dataset["columns"], row, strict=True)) for row in dataset["rows"]]


def series(rows: Iterable[dict[str, Any]], x: str, y: str,
           keep: Callable[[dict[str, Any]], bool] = lambda r: True) -> tuple[list, list]:
    """``(xs, ys)`` of the rows that ``keep`` accepts and that have a ``y`` value."""
    points = [(r[x], r[y]) for r in rows if keep(r) and r[y] is not None]
    return [p[0] for p in points], [p[1] for p in points]


# ---------------------------------------------------------------------- full tables


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(data: dict[str, Any], name: str) -> str:
    """Dataset ``name`` as a markdown table, after where and how it was measured."""
    dataset = data["datasets"][name]
    source = [f"- Machine: {data['machines'].get(dataset['machine'], dataset['machine'])}"]
    if dataset.get("date"):
        source.append(f"- Measured: {dataset['date']}")
    if dataset.get("command"):
        source.append(f"- Command: `{dataset['command']}`")
    if dataset.get("how"):
        source.append(f"- How: {dataset['how']}")
    lines = [*source, "", dataset["note"]]
    # A wide dataset is shown as several narrower tables ("views": lists of columns).
    for view in dataset.get("views", [dataset["columns"]]):
        at = [dataset["columns"].index(column) for column in view]
        lines += ["", "| " + " | ".join(view) + " |", "|" + "---|" * len(view)]
        lines += ["| " + " | ".join(_cell(row[i]) for i in at) + " |" for row in dataset["rows"]]
    return "\n".join(lines)


def expand(markdown: str, data: dict[str, Any] | None = None) -> str:
    """Replace each data marker with a collapsed admonition holding the whole table."""
    if not MARKER.search(markdown):
        return markdown
    data = load() if data is None else data

    def render(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in data["datasets"]:
            raise KeyError(f"performance page: no dataset {name!r} in {DATA.name}")
        title = data["datasets"][name]["title"]
        body = "\n".join(f"    {line}".rstrip() for line in table(data, name).splitlines())
        return f'??? info "All measurements: {title}"\n\n{body}\n'

    return MARKER.sub(render, markdown)


# -------------------------------------------------------------------------- figures


def figures(data: dict[str, Any] | None = None) -> dict[str, bytes]:
    """The page's figures as PNG bytes, by file name."""
    import matplotlib

    matplotlib.use("Agg")
    data = load() if data is None else data
    return {
        "performance-tracr.png": _png(_figure_tracr(data)),
        "performance-interpreter.png": _png(_figure_interpreter(data)),
        "performance-forward.png": _png(_figure_forward(data)),
    }


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, facecolor="white",
                metadata={"Software": None})  # no version stamp: same data, same bytes
    plt.close(fig)
    return buffer.getvalue()


def _length_axis(ax: Any, ticks: Iterable[int], label: str = "max_seq_len") -> None:
    ax.set_xscale("log")
    ax.set_xticks(list(ticks))
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(label)
    ax.grid(True, which="major", alpha=0.3)


def _figure_tracr(data: dict[str, Any]) -> Any:
    """Compile time, d_model, parameters and share of right outputs, against tracr."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    ours, theirs = records(data, "compiler"), records(data, "tracr")
    programs = list(dict.fromkeys(r["program"] for r in ours))
    sizes = sorted({r["max_seq_len"] for r in ours})
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.6))
    panels = [
        (axes[0, 0], "compile s", "compile time (s)"),
        (axes[0, 1], "d_model", "residual width (d_model)"),
        (axes[1, 0], "parameters", "parameters"),
    ]
    for ax, column, title in panels:
        for program in programs:
            mine = lambda r, p=program: r["program"] == p
            ax.plot(*series(ours, "max_seq_len", column, mine), "-o", ms=4,
                    color=COLORS[program])
            xs, ys = series(theirs, "max_seq_len", column, mine)
            style = "--s" if len(xs) > 1 else "*"
            ax.plot(xs, ys, style, ms=5 if len(xs) > 1 else 12, color=COLORS[program],
                    mfc="white" if len(xs) > 1 else COLORS[program])
        ax.set_yscale("log")
        ax.set_title(title)
        _length_axis(ax, sizes)
    ax = axes[1, 1]
    checked = [r["max_seq_len"] for r in records(data, "exactness")]
    ax.plot(checked, [100] * len(checked), "-o", color="black", lw=2.5, alpha=0.4, ms=5)
    ax.text(checked[-1], 103, "rasplang: 100% in every check", fontsize=9, ha="right")
    for program in programs:
        xs, ys = series(theirs, "max_seq_len", "right %", lambda r, p=program: r["program"] == p)
        ax.plot(xs, ys, "--s", ms=5, color=COLORS[program], mfc="white")
    ax.set_ylim(0, 108)
    ax.set_title("outputs right (% of random inputs)")
    _length_axis(ax, sizes)
    handles = [Line2D([], [], color=COLORS[p], lw=3, label=p) for p in programs] + [
        Line2D([], [], color="black", ls="-", marker="o", ms=4, label="rasplang"),
        Line2D([], [], color="black", ls="--", marker="s", ms=5, mfc="white",
               label="tracr"),
        Line2D([], [], color="black", ls="", marker="*", ms=10, label="tracr, at 40 only"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


def _figure_interpreter(data: dict[str, Any]) -> Any:
    """Sequences per second of each interpreter path against T, one panel per program."""
    import matplotlib.pyplot as plt

    rows = records(data, "interpreter_cpu")
    programs = list(dict.fromkeys(r["program"] for r in rows))
    lengths = sorted({r["T"] for r in rows})
    paths = [
        ("numba (arrays)", "-o", "#1f77b4"), ("numba (lists)", "--o", "#1f77b4"),
        ("numpy (arrays)", "-s", "#ff7f0e"), ("numpy (lists)", "--s", "#ff7f0e"),
        ("evaluate", ":^", "#555555"),
    ]
    columns = 3
    fig, grid = plt.subplots(2, columns, figsize=(10, 6.6), sharey=True)
    axes = grid.ravel()
    for ax, program in zip(axes, programs):
        for column, style, color in paths:
            xs, ys = series(rows, "T", column, lambda r, p=program: r["program"] == p)
            ax.plot(xs, ys, style, color=color, ms=5, label=column)
        ax.set_yscale("log")
        ax.set_title(program)
        _length_axis(ax, lengths, "T (sequence length)")
    for ax in axes[::columns]:
        ax.set_ylabel("sequences / s")
    legend = axes[len(programs)]  # the spare panel holds the legend
    legend.axis("off")
    legend.legend(*axes[0].get_legend_handles_labels(), loc="center", frameon=False,
                  title="batch 10,000, 2 CPU cores")
    fig.tight_layout()
    return fig


def _figure_forward(data: dict[str, Any]) -> Any:
    """Sequences per second of model.run against max_seq_len, CPU and GPU."""
    import matplotlib.pyplot as plt

    cpu, gpu = records(data, "forward_cpu"), records(data, "forward_gpu")
    programs = list(dict.fromkeys(r["program"] for r in cpu))
    lengths = sorted({r["max_seq_len"] for r in cpu})
    lines = [
        (cpu, "sequences/s", "float32", "-o", "#1f77b4", "2 CPU cores, float32"),
        (cpu, "sequences/s", "float64", "--o", "#1f77b4", "2 CPU cores, float64"),
        (gpu, "CPU (16 cores) sequences/s", "float32", "-s", "#7f7f7f",
         "16 CPU cores, float32"),
        (gpu, "GPU sequences/s", "float32", "-D", "#2ca02c", "H100 GPU, float32"),
        (gpu, "GPU sequences/s", "float64", "--D", "#2ca02c", "H100 GPU, float64"),
    ]
    fig, axes = plt.subplots(1, len(programs), figsize=(10, 3.8), sharey=True)
    for ax, program in zip(axes, programs, strict=True):
        for rows, column, dtype, style, color, label in lines:
            xs, ys = series(rows, "max_seq_len", column, lambda r, p=program, d=dtype: (
                r["program"] == p and r["dtype"] == d and r["batch"] == 4096))
            if xs:
                ax.plot(xs, ys, style, color=color, ms=4, label=label)
        ax.set_yscale("log")
        ax.set_title(program, fontsize=10)
        _length_axis(ax, lengths)
    axes[0].set_ylabel("sequences / s (batch 4,096)")
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    order = [line[-1] for line in lines if line[-1] in handles]
    fig.legend([handles[k] for k in order], order, loc="lower center", ncol=3,
               frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig
