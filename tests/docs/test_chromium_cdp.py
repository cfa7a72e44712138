"""The DevTools pipe helper works in a fresh process, where fds 3 and 4 are free."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from chromium_cdp import find_chromium

HERE = Path(__file__).resolve().parent

# Run in a new interpreter: pytest holds fds 3 and 4, a plain script does not, and then
# os.pipe returns 3 and 4 themselves.
FRESH = """
import os, sys
sys.path.insert(0, {here!r})
for fd in (3, 4):
    try:
        os.fstat(fd)
    except OSError:
        continue
    raise SystemExit(f"fd {{fd}} is open: the test needs it free")
"""


def run_fresh(body: str) -> str:
    """Run ``body`` in a new Python with fds 3 and 4 free; return its stdout."""
    code = FRESH.format(here=str(HERE)) + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_pipes_reach_fds_3_and_4_when_they_are_free() -> None:
    """A child started by spawn_with_pipes reads fd 3 and writes fd 4, even when os.pipe
    handed out 3 and 4 (dup2 onto the same fd would leave close-on-exec set)."""
    out = run_fresh("""
        from chromium_cdp import spawn_with_pipes
        proc, to_child, from_child = spawn_with_pipes(
            ["sh", "-c", 'read -r line <&3; echo "got $line" >&4']
        )
        print("pipe fds", sorted([to_child, from_child]))
        os.write(to_child, b"hello\\n")
        print(os.read(from_child, 100).decode().strip())
        print("exit", proc.wait(timeout=30))
    """)
    assert "got hello" in out
    assert "exit 0" in out


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_browser_outside_pytest() -> None:
    """Browser drives Chromium from a plain script (no BrokenPipeError)."""
    out = run_fresh("""
        from chromium_cdp import Browser, find_chromium
        with Browser(find_chromium()) as browser:
            print("value", browser.load("about:blank", "6 * 7").value)
    """)
    assert "value 42" in out
