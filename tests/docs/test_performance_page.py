"""The Performance page: figures and full tables drawn from docs/data/performance.json,
short tables whose numbers come from that file or from docs/data/full_language.py, and
pages that read as documentation, not as a development log."""

from __future__ import annotations

import importlib.util
import re

import pytest
from docs_helpers import DOCS, load_hook_module

performance_page = load_hook_module("performance_page")
mkdocs_hooks = load_hook_module("mkdocs_hooks")

PAGE = DOCS / "performance.md"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Sections of the page whose tables show numbers of the data file.
FROM_DATA = ("Against tracr", "The interpreter", "Compiled models: the forward pass")
_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")


def sections(markdown: str) -> dict[str, str]:
    """``{heading: text}`` of the page's ``## `` sections."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def table_rows(text: str) -> list[list[str]]:
    """The body rows of every markdown table in ``text``, as lists of cells."""
    rows, header_seen = [], False
    for line in text.splitlines():
        if not line.startswith("|"):
            header_seen = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if set("".join(cells)) <= set("-:|"):
            header_seen = True
        elif header_seen:
            rows.append(cells)
    return rows


def test_figures_are_pngs_and_on_the_page() -> None:
    """Each figure is drawn as a PNG from the data, and the page shows each one."""
    figures = performance_page.figures()
    text = PAGE.read_text(encoding="utf-8")
    assert figures
    for name, content in figures.items():
        assert content[:8] == PNG_MAGIC, name
        assert f"]({name})" in text, f"performance.md does not show {name}"


def test_datasets_are_well_formed() -> None:
    """Every dataset names a machine and a command or method, and its rows fit its columns."""
    data = performance_page.load()
    for name, dataset in data["datasets"].items():
        assert dataset["machine"], name
        assert dataset.get("command") or dataset.get("how"), name
        for row in dataset["rows"]:
            assert len(row) == len(dataset["columns"]), (name, row)
        for view in dataset.get("views", []):
            assert set(view) <= set(dataset["columns"]), (name, view)


def test_markers_expand_to_collapsed_tables() -> None:
    """Each data marker becomes a collapsed admonition with the dataset's whole table."""
    data = performance_page.load()
    text = PAGE.read_text(encoding="utf-8")
    names = performance_page.MARKER.findall(text)
    assert set(names) == set(data["datasets"])
    expanded = performance_page.expand(text, data)
    assert "rasplang:performance-data" not in expanded
    assert expanded.count('??? info "All measurements: ') == len(names)
    with pytest.raises(KeyError, match="no dataset 'missing'"):
        performance_page.expand("<!-- rasplang:performance-data missing -->\n", data)


def test_short_tables_show_numbers_of_the_data_file() -> None:
    """Every number in the tables of the measured sections is a number of the data file."""
    data = performance_page.load()
    known = {
        float(v) for d in data["datasets"].values() for row in d["rows"] for v in row
        if isinstance(v, int | float)
    }
    page = sections(PAGE.read_text(encoding="utf-8"))
    for section in FROM_DATA:
        rows = table_rows(page[section])
        assert rows, f"no table in {section!r}"
        for row in rows:
            for number in _NUMBER.findall(" ".join(row)):
                assert float(number.replace(",", "")) in known, (section, row, number)


def test_full_language_tables_match_the_script() -> None:
    """The Full language tables show what docs/data/full_language.py measures."""
    spec = importlib.util.spec_from_file_location("full_language", DOCS / "data" /
                                                  "full_language.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = table_rows(sections(PAGE.read_text(encoding="utf-8"))["Full language"])
    shape = lambda cell: tuple(int(v) for v in cell.split(" / "))
    constructs = list(script.constructs().values())
    assert [(shape(r[1]), shape(r[2])) for r in rows[:len(constructs)]] == constructs
    papers = script.paper_programs()
    for name, at5, at16, _needs in rows[len(constructs):]:
        assert (shape(at5), shape(at16)) == (papers[name, 5], papers[name, 16]), name


def test_no_page_reads_like_a_development_log() -> None:
    """No page mentions issues, commits or rounds of work, nor shows a literal ``\\|``."""
    log = re.compile(
        r"\b(issues?|commits?|this round|previous round|fixed afterwards|"
        r"before this|it was \d)\b", re.I)
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        found = log.search(text)
        assert found is None, f"{page.relative_to(DOCS)}: {found.group(0)!r}"
        assert "\\|" not in text, f"{page.relative_to(DOCS)}: a literal \\| (write | in code)"


def test_hook_adds_the_figures_next_to_the_page() -> None:
    """The mkdocs hook publishes the figures at the paths the page links to."""
    assert mkdocs_hooks.PERFORMANCE_PAGE == "performance.md"
    for name in performance_page.figures():
        assert mkdocs_hooks._join(mkdocs_hooks.PERFORMANCE_PAGE, name) == name
