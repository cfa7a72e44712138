"""docs/cli.md: every command it shows runs with the exit status it shows, and every
subcommand and option of ``rasplang`` is on the page.

The page's ``console`` blocks are examples, not doctests: their printed text (timings,
wording) is not compared. Each ``$ rasplang ...`` line runs in page order in one
folder, holding the files the page shows as ``title="NAME"`` code blocks; its exit
status must be 0, or the number on the line after a following ``$ echo $?``.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
from docs_helpers import DOCS

from rasplang.cli import build_parser, main

PAGE = DOCS / "cli.md"
_TITLED = re.compile(r'^```\w+ +title="(?P<name>[^"]+)"\n(?P<body>.*?)^```$', re.M | re.S)
_CONSOLE = re.compile(r"^```console\n(?P<body>.*?)^```$", re.M | re.S)


def shown_files(markdown: str) -> dict[str, str]:
    """``{name: text}`` of the code blocks with a ``title="NAME"``."""
    return {m["name"]: m["body"] for m in _TITLED.finditer(markdown)}


def shown_commands(markdown: str) -> list[tuple[int, list[str], int]]:
    """``(line, argv, exit status)`` of every ``$ rasplang ...`` line of the console blocks."""
    commands: list[tuple[int, list[str], int]] = []
    for block in _CONSOLE.finditer(markdown):
        first = markdown.count("\n", 0, block.start("body")) + 1
        lines = block["body"].splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ rasplang "):
                commands.append((first + i, shlex.split(line[2:])[1:], 0))
            elif line == "$ echo $?":
                assert commands, f"cli.md:{first + i}: '$ echo $?' before any command"
                where, argv, _ = commands[-1]
                commands[-1] = (where, argv, int(lines[i + 1]))
    return commands


def test_page_shows_files_and_commands() -> None:
    """The parsers find the example file and the commands of every subcommand."""
    text = PAGE.read_text(encoding="utf-8")
    assert "shift.py" in shown_files(text)
    commands = shown_commands(text)
    assert {argv[0] for _, argv, _ in commands} == set(_subcommands())
    assert any(status == 2 for _, _, status in commands)


def test_every_command_on_the_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each command, run in page order, exits with the status the page shows."""
    text = PAGE.read_text(encoding="utf-8")
    for name, body in shown_files(text).items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for line, argv, want in shown_commands(text):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(argv)
            except SystemExit as exc:  # argparse rejected the command line
                status = exc.code
        shown = "rasplang " + shlex.join(argv)
        assert status == want, (
            f"docs/cli.md:{line}: `{shown}` exited with {status}, the page shows {want}\n"
            f"{err.getvalue()[-2000:]}"
        )
        assert out.getvalue().strip() or err.getvalue().strip(), f"`{shown}` printed nothing"


def _subcommands() -> dict[str, object]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(sub.choices)


def test_page_documents_every_subcommand_and_option() -> None:
    """Each subcommand has its section, and each of its options appears on the page."""
    text = PAGE.read_text(encoding="utf-8")
    for name, parser in _subcommands().items():
        assert f"## rasplang {name}" in text, f"cli.md has no section for `rasplang {name}`"
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert f"`{option}" in text, f"cli.md does not mention {name} {option}"
