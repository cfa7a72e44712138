"""docs/cli.md: every command it shows runs, prints what the page shows and exits with
the status it shows, and every subcommand and option of ``rasplang`` is on the page.

Each ``$ rasplang ...`` line of the page's ``console`` blocks runs in page order in one
folder, holding the files the page shows as ``title="NAME"`` code blocks. Its exit
status must be 0, or the number on the line after a following ``$ echo $?``; what it
prints (stdout, then stderr) must be the lines shown under it, where a line ``...``
stands for any number of lines, runs of spaces count as one, and timings (a decimal
number, a number of rows/s) may differ.
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
# A console block: ```console, or ```{ .console .rl-table } (a wide table that scrolls).
_CONSOLE = re.compile(r"^```(?:console|\{ *\.console[^}]*\})\n(?P<body>.*?)^```$",
                      re.M | re.S)


def shown_files(markdown: str) -> dict[str, str]:
    """``{name: text}`` of the code blocks with a ``title="NAME"``."""
    return {m["name"]: m["body"] for m in _TITLED.finditer(markdown)}


def shown_commands(markdown: str) -> list[tuple[int, list[str], int]]:
    """``(line, argv, exit status)`` of every ``$ rasplang ...`` line of the console blocks."""
    return [(line, argv, status) for line, argv, status, _ in shown_runs(markdown)]


def shown_runs(markdown: str) -> list[tuple[int, list[str], int, list[str]]]:
    """``(line, argv, exit status, printed lines)`` of every ``$ rasplang ...`` line of
    the console blocks: the printed lines are those up to the next ``$`` line."""
    runs: list[tuple[int, list[str], int, list[str]]] = []
    for block in _CONSOLE.finditer(markdown):
        first = markdown.count("\n", 0, block.start("body")) + 1
        lines = block["body"].splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ rasplang "):
                runs.append((first + i, shlex.split(line[2:])[1:], 0, []))
            elif line == "$ echo $?":
                assert runs, f"cli.md:{first + i}: '$ echo $?' before any command"
                where, argv, _, printed = runs[-1]
                runs[-1] = (where, argv, int(lines[i + 1]), printed)
            elif line.startswith("$ "):
                raise AssertionError(f"cli.md:{first + i}: a command that is not rasplang's")
            elif runs and not (i > 0 and lines[i - 1] == "$ echo $?"):
                runs[-1][3].append(line)
    return runs


#: A timing in the printed text: a decimal number, or a whole number of rows/s.
_TIMING = re.compile(r"\d+\.\d+|[\d,]+(?= rows/s)")


def _line_pattern(shown: str) -> re.Pattern[str]:
    """The printed lines (spaces collapsed) that ``shown``, a line on the page, stands for."""
    text = " ".join(shown.split())
    parts, end = [], 0
    for m in _TIMING.finditer(text):
        parts += [re.escape(text[end:m.start()]), r"\d+\.\d+" if "." in m.group() else r"[\d,]+"]
        end = m.end()
    return re.compile("".join([*parts, re.escape(text[end:])]))


def printed_mismatch(shown: list[str], printed: list[str]) -> str | None:
    """None when ``printed`` (the lines a command printed) is what ``shown`` (the page's
    lines, with ``...`` for any number of lines) shows, else the first line that differs."""
    patterns = [None if line == "..." else _line_pattern(line) for line in shown]
    lines = [" ".join(line.split()) for line in printed]
    # reach: each j such that the page's lines so far stand for the printed lines[:j].
    reach = {0}
    for i, pattern in enumerate(patterns):
        if pattern is None:
            reach = set(range(min(reach), len(lines) + 1)) if reach else set()
        else:
            reach = {j + 1 for j in reach if j < len(lines) and pattern.fullmatch(lines[j])}
        if not reach:
            return f"the page's line {shown[i]!r} does not match what was printed"
    if len(lines) not in reach:
        return f"it printed more than the page shows, from {printed[max(reach)]!r}"
    return None


def test_page_shows_files_and_commands() -> None:
    """The parsers find the example file and the commands of every subcommand."""
    text = PAGE.read_text(encoding="utf-8")
    assert "shift.py" in shown_files(text)
    commands = shown_commands(text)
    assert {argv[0] for _, argv, _ in commands} == set(_subcommands())
    assert any(status == 2 for _, _, status in commands)


def test_every_command_on_the_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each command, run in page order, exits with the status the page shows and prints
    the lines it shows."""
    text = PAGE.read_text(encoding="utf-8")
    for name, body in shown_files(text).items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for line, argv, want, printed in shown_runs(text):
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
        got = (out.getvalue() + err.getvalue()).splitlines()
        mismatch = printed_mismatch(printed, got)
        assert mismatch is None, (f"docs/cli.md:{line}: `{shown}`: {mismatch}; it printed:\n"
                                  + "\n".join(got[:60]))


@pytest.mark.parametrize(("shown", "printed", "ok"), [
    (["wrote a in 1.27 s (3,081 rows/s)"], ["wrote a in 0.50 s (12,000 rows/s)"], True),
    (["compiled x: 683 parameters in 1.9 ms"], ["compiled x: 624 parameters in 1.9 ms"], False),
    (["a  b", "...", "z"], ["a b", "c", "d", "z"], True),
    (["a", "..."], ["a"], True),
    (["a"], ["a", "legend"], False),
    (["a", "...", "z"], ["a", "y"], False),
    (["0.5 s"], ["7 s"], False),
])
def test_printed_text_check(shown, printed, ok) -> None:
    """The comparison lets timings and `...` vary, and nothing else."""
    assert (printed_mismatch(shown, printed) is None) == ok


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
