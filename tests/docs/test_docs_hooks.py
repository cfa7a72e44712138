"""The docs' build helpers: griffe extensions, the library page, the mkdocs hooks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import griffe
import pytest
from docs_helpers import ROOT, load_hook_module

package_dir = load_hook_module("griffe_package_dir")
doctest_fences = load_hook_module("griffe_doctest_fences")
library_page = load_hook_module("library_page")
mkdocs_hooks = load_hook_module("mkdocs_hooks")


def test_package_dirs_read_from_pyproject() -> None:
    """The griffe extension maps the same subpackages to the same folders as setuptools."""
    assert package_dir.package_dirs() == {
        "rasplang.interpreter": ROOT / "interpreter",
        "rasplang.backend": ROOT / "backend",
    }


def test_griffe_resolves_package_dir_subpackages() -> None:
    """With the extension, griffe finds rasplang.interpreter's functions statically."""
    plain = griffe.GriffeLoader(search_paths=[ROOT])
    assert "interpreter" not in plain.load("rasplang").members  # why the extension exists
    loader = griffe.GriffeLoader(
        search_paths=[ROOT], extensions=griffe.load_extensions(package_dir.PackageDir())
    )
    rasplang = loader.load("rasplang")
    interpreter = rasplang["interpreter"]
    assert Path(interpreter.filepath) == ROOT / "interpreter" / "__init__.py"
    assert rasplang["backend"].filepath == ROOT / "backend" / "__init__.py"
    assert "evaluate_batch" in interpreter["plan"].members


def test_package_dir_rejects_a_folder_without_init(tmp_path: Path) -> None:
    """A package-dir entry pointing at a folder with no __init__.py is reported by path."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "rasplang.ghost" = "ghost" }\n', encoding="utf-8"
    )
    (tmp_path / "ghost").mkdir()
    loader = griffe.GriffeLoader(
        search_paths=[ROOT],
        extensions=griffe.load_extensions(
            package_dir.PackageDir(pyproject=str(tmp_path / "pyproject.toml"))
        ),
    )
    with pytest.raises(FileNotFoundError, match=r"rasplang\.ghost .*ghost.*__init__\.py"):
        loader.load("rasplang")


def test_fence_doctests_wraps_example_runs_only() -> None:
    """Runs of >>> lines (with their output) are fenced; prose and existing fences are kept."""
    text = (
        "Summary.\n\n"
        "    >>> f([1])\n    [1]\n\n"
        "Prose with >>> inside.\n\n"
        "```python\n>>> kept\n```\n"
    )
    assert doctest_fences.fence_doctests(text) == (
        "Summary.\n\n"
        "    ```pycon\n    >>> f([1])\n    [1]\n    ```\n\n"
        "Prose with >>> inside.\n\n"
        "```python\n>>> kept\n```"
    )


def test_library_page_renders_every_program() -> None:
    """The generated catalogue has each program's heading, code, example and output."""
    lib = pytest.importorskip("rasplang.lib")
    import rasplang

    text = library_page.render()
    for name, entry in lib.PROGRAMS.items():
        assert f"## `{name}`" in text
        output = rasplang.evaluate(entry.build(), list(entry.example))
        assert f"| output | `{library_page._code(output)}` |" in text, name
    source = "```python\n# reverse = make_reverse(rasp.tokens)\n\ndef make_reverse("
    assert textwrap.indent(source, "    ", lambda line: line.strip() != "") in text


def test_library_page_tables_have_a_header() -> None:
    """Every table of the catalogue has a header row with text (none renders empty)."""
    pytest.importorskip("rasplang.lib")
    lines = library_page.render().splitlines()
    headers = [lines[i - 1] for i, line in enumerate(lines) if line.startswith("| ---")]
    assert headers
    for header in headers:
        assert all(cell.strip() for cell in header.strip("|").split("|")), header


def test_library_page_shows_each_programs_figures() -> None:
    """Each program shows its graph and residual thumbnails, and figures() draws them."""
    lib = pytest.importorskip("rasplang.lib")
    pytest.importorskip("matplotlib")
    text = library_page.render()
    for name in lib.PROGRAMS:
        for path in library_page.figure_names(name).values():
            assert f"]({path})" in text, path
    made = library_page.figures(["hist", "reverse"])
    assert sorted(made) == sorted(
        path for name in ("hist", "reverse") for path in library_page.figure_names(name).values()
    )
    for content in made.values():
        assert content[:8] == b"\x89PNG\r\n\x1a\n"


def test_build_expression_of_a_lambda_and_a_def() -> None:
    """A lambda builder shows its expression as written; a def builder shows nothing."""
    build = lambda: sorted([3, 1])
    assert library_page.build_expression(build) == "sorted([3, 1])"
    assert library_page.build_expression(test_build_expression_of_a_lambda_and_a_def) is None


def test_join_resolves_image_paths_relative_to_the_page() -> None:
    """A page's image reference maps to the docs-relative path mkdocs validates."""
    assert mkdocs_hooks._join("tutorials/writing-rasp.md", "fig.png") == "tutorials/fig.png"
    assert mkdocs_hooks._join("index.md", "img/a.png") == "img/a.png"
    assert mkdocs_hooks._join("tutorials/t.md", "../a.png") == "a.png"


def test_generated_figures_collects_files_the_code_writes(tmp_path: Path) -> None:
    """Running a page's code returns exactly the files it wrote, and restores the cwd."""
    page = '```python\nimport pathlib\npathlib.Path("one.png").write_bytes(b"1")\n```\n'
    before = Path.cwd()
    made = mkdocs_hooks.generated_figures(page, "p.md", tmp_path)
    assert made == {"one.png": b"1"}
    assert Path.cwd() == before


def test_design_diagram_is_an_svg_with_its_text() -> None:
    """The Design page's pipeline diagram is an SVG whose labels are text, and the page
    shows it instead of an ASCII drawing."""
    pytest.importorskip("matplotlib")
    design_page = load_hook_module("design_page")
    svg = design_page.figures()[design_page.NAME].decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for text in ("rasplang.evaluate", "rasplang.analyze", "rasplang.interpreter",
                 "rasplang.backend", "the three must agree"):
        assert text in svg, text
    page = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    assert f"]({design_page.NAME})" in page
    assert "--(operators" not in page
