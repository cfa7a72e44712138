"""Run every code block of the Hugging Face tutorial, the ones the default docs test
skips included (they need the hf, transformer-lens and nnsight extras)."""

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore")

PAGE = Path(__file__).parents[2] / "docs" / "tutorials" / "hugging-face.md"


def test_tutorial_runs_with_the_extras(tmp_path):
    """Every python block runs and its ``# ->`` outputs hold."""
    for extra in ("torch", "transformers", "transformer_lens", "nnsight"):
        pytest.importorskip(extra)
    import sys

    sys.path.insert(0, str(PAGE.parents[1] / "hooks"))
    try:
        from codeblocks import run_block, runnable_blocks
    finally:
        sys.path.pop(0)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace = {"__name__": "__docs__"}
        blocks = runnable_blocks(PAGE.read_text(encoding="utf-8"), str(PAGE))
        assert sum(b.skip_reason is not None for b in blocks) == 4
        for block in blocks:
            run_block(block, namespace)
    finally:
        os.chdir(cwd)
