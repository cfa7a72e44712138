"""rasplang.viz: program graphs, residual heatmaps and attention patterns."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang import aggregate, indices, length, select, tokens, viz

pytest.importorskip("matplotlib")


def make_reverse() -> rl.SOp:
    """tokens reversed, with named nodes."""
    opposite = select(indices, length - indices - 1, "==").named("opposite")
    return aggregate(opposite, tokens).named("reverse")


def test_import_rasplang_does_not_import_matplotlib() -> None:
    """matplotlib is imported by the plotting functions, not by `import rasplang`."""
    code = "import sys, rasplang, rasplang.viz; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_program_layers_are_longest_paths() -> None:
    """Each node sits one layer above its deepest child; inputs are at layer 0."""
    program = make_reverse()
    layers = viz.program_layers(program)
    depth = {node: d for d, layer in enumerate(layers) for node in layer}
    assert {n.label for n in layers[0]} == {"indices", "length", "tokens"}
    assert layers[-1] == [program]
    for node, d in depth.items():
        if node.children:
            assert d == 1 + max(depth[c] for c in node.children), node.label
    assert sorted(n.unique_id for n in depth) == sorted(
        n.unique_id for n in rl.topological_order(program)
    )


def test_plot_program_matplotlib_draws_every_node() -> None:
    """The matplotlib layout has one labelled box per node and one arrow per edge."""
    program = make_reverse()
    fig = viz.plot_program(program, engine="matplotlib")
    ax = fig.axes[0]
    texts = {t.get_text().split("\n")[0] for t in ax.texts}
    nodes = rl.topological_order(program)
    assert {"reverse", "opposite", "tokens", "indices", "length"} <= texts
    assert len(ax.texts) == len(nodes)
    assert len(ax.patches) == sum(len(n.children) for n in nodes)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_plot_program_dot_renders_an_image() -> None:
    """With Graphviz, the figure shows the PNG dot rendered, at its pixel size."""
    fig = viz.plot_program(make_reverse(), engine="dot", dpi=72)
    image = fig.axes[0].images[0].get_array()
    width, height = fig.get_size_inches() * 72
    assert image.shape[:2] == (round(height), round(width))


def test_plot_program_engine_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown engine, or engine='dot' without Graphviz, is refused with the fix."""
    with pytest.raises(ValueError, match="engine must be"):
        viz.plot_program(make_reverse(), engine="svg")
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        viz.plot_program(make_reverse(), engine="dot")
    assert viz.plot_program(make_reverse()).axes[0].texts  # auto falls back to matplotlib


def test_to_dot_labels_have_line_breaks() -> None:
    """Node labels in the dot text break lines with dot's escape, not a literal backslash."""
    text = rl.to_dot(make_reverse())
    assert '"reverse\\nAggregate"' in text
    assert "\\\\n" not in text


@pytest.fixture(scope="module")
def model():
    """The compiled reverse program (skipped while rasplang.compile is missing)."""
    if not hasattr(rl, "compile"):
        pytest.skip("rasplang.compile has not landed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rl.compile(make_reverse(), vocab="abc", max_seq_len=4)


def test_plot_residual_shows_every_stage_and_dimension(model) -> None:
    """One panel per stage holds exactly apply()'s residual stream; columns are labelled."""
    fig = viz.plot_residual(model, list("cab"))
    result = model.apply([model.config.bos, *"cab"])
    panels = [ax for ax in fig.axes if ax.images and ax.get_title(loc="left")]
    assert len(panels) == len(result.residuals) == 2 * model.config.n_layers + 1
    for ax, residual in zip(panels, result.residuals):
        np.testing.assert_array_equal(ax.images[0].get_array(), residual[0])
    labels = [t.get_text() for t in panels[-1].get_xticklabels()]
    assert labels == viz.residual_labels(model)
    assert len(labels) == len(model.residual_labels)
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["BOS", "c", "a", "b"]


def test_plot_attention_shows_the_head_pattern(model) -> None:
    """The heatmap is the head's attention matrix; reverse's head attends to the mirror key."""
    layer = model.circuit["reverse"][0].layer
    head = model.circuit["reverse"][0].head
    fig = viz.plot_attention(model, list("cab"), layer, head)
    pattern = np.asarray(fig.axes[0].images[0].get_array())
    result = model.apply([model.config.bos, *"cab"])
    np.testing.assert_array_equal(pattern, result.attention[layer][0, head])
    np.testing.assert_allclose(pattern.sum(axis=1), 1.0)
    assert [int(np.argmax(row)) for row in pattern[1:]] == [3, 2, 1]


def test_plot_attention_rejects_a_missing_head(model) -> None:
    """Asking for a head the model does not have names the model's shape."""
    with pytest.raises(IndexError, match=r"no head \(9, 0\): the model has \d+ layers"):
        viz.plot_attention(model, list("ab"), layer=9, head=0)


def _texts_outside(fig) -> list[str]:
    """The texts of ``fig`` (titles, labels, ticks, colour-bar numbers) that reach past
    its edges once drawn."""
    import matplotlib.text
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    out = []
    for text in fig.findobj(matplotlib.text.Text):
        if not text.get_visible() or not text.get_text().strip():
            continue
        box = text.get_window_extent(renderer)
        if box.x0 < -0.5 or box.y0 < -0.5 or box.x1 > width + 0.5 or box.y1 > height + 0.5:
            out.append(text.get_text())
    return out


@pytest.mark.parametrize("n", [1, 3, 8])
def test_plot_attention_keeps_title_and_colour_bar_inside(n) -> None:
    """The attention plot's title (a long node and selector name included) and its colour
    bar's numbers lie inside the figure, for short and long inputs."""
    if not hasattr(rl, "compile"):
        pytest.skip("rasplang.compile has not landed")
    mirror = select(indices, length - indices - 1, "==").named(
        "mirror_of_every_position_across_the_middle")
    program = aggregate(mirror, tokens).named("tokens_read_back_to_front_by_the_mirror")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = rl.compile(program, vocab="abc", max_seq_len=8)
    step = model.circuit[program.label][0]
    fig = viz.plot_attention(model, list("abc" * 3)[:n], step.layer, step.head)
    title = fig.axes[0].get_title()
    assert "mirror_of_every_position" in title.replace("\n", "")
    assert len(fig.axes) == 2  # the pattern and its colour bar
    assert _texts_outside(fig) == []
