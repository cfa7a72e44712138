"""The README and the home page say what rasplang does, and the README links every
tutorial, the library and the command line."""

from __future__ import annotations

import re

import pytest
from docs_helpers import DOCS, ROOT

#: The things rasplang does, as the "What you can do" lists name them.
FEATURES = ("Evaluate", "Interpret", "Compile", "Verify", "Save and load", "Export",
            "command line", "GPU", "Score interpretability methods", "Rotate and compress")
_LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")


def what_you_can_do(markdown: str) -> list[str]:
    """The items of the page's "What you can do" list, one string each."""
    section = markdown.split("## What you can do", 1)[1].split("\n## ", 1)[0]
    return [item.strip() for item in re.split(r"^\d+\. ", section, flags=re.M)[1:]]


@pytest.mark.parametrize("page", [ROOT / "README.md", DOCS / "index.md"],
                         ids=["README.md", "index.md"])
def test_what_you_can_do_lists_every_feature(page) -> None:
    """One item per feature, each with a link to where it is explained."""
    items = what_you_can_do(page.read_text(encoding="utf-8"))
    assert len(items) == len(FEATURES)
    for feature, item in zip(FEATURES, items, strict=True):
        assert feature in item.split("**")[1], (feature, item[:60])
        links = [m["target"] for m in _LINK.finditer(item)]
        assert links, f"{page.name}: no link for {feature}"
        for target in links:
            assert (page.parent / target).is_file(), f"{page.name}: {target} does not exist"


def test_readme_quickstart_is_two_commands() -> None:
    """The Quickstart is `make demo` and `make test`, nothing else to type."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quickstart, re.S).group(1)
    assert [line.split("#")[0].strip() for line in block.splitlines()] == [
        "make demo", "make test"]


def test_readme_links_every_tutorial_the_library_and_the_cli() -> None:
    """The README's documentation list reaches every tutorial and the user pages."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    docs = text.split("## Documentation", 1)[1].split("\n## ", 1)[0]
    linked = {m["target"] for m in _LINK.finditer(docs)}
    tutorials = {f"docs/{p.relative_to(DOCS).as_posix()}"
                 for p in (DOCS / "tutorials").glob("*.md")}
    assert tutorials | {"docs/library.md", "docs/cli.md", "docs/performance.md"} <= linked
    for target in linked:
        assert (ROOT / target).is_file(), target
