"""Run every code block of the pages that use the interop extras, the ones the default
docs test skips included (they need the hf, transformer-lens and nnsight extras)."""

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore")

TUTORIALS = Path(__file__).parents[2] / "docs" / "tutorials"


@pytest.mark.parametrize(("page", "skipped"), [("hugging-face.md", 5),
                                               ("differential-testing.md", 1)])
def test_tutorial_runs_with_the_extras(tmp_path, page, skipped):
    """Every python block runs and its ``# ->`` outputs hold (Tutorial 5, and Tutorial 3's
    TransformerLens block on the TransformerLens installed)."""
    for extra in ("torch", "transformers", "transformer_lens", "nnsight"):
        pytest.importorskip(extra)
    import sys

    sys.path.insert(0, str(TUTORIALS.parent / "hooks"))
    try:
        from codeblocks import run_block, runnable_blocks
    finally:
        sys.path.pop(0)
    path = TUTORIALS / page
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace = {"__name__": "__docs__"}
        blocks = runnable_blocks(path.read_text(encoding="utf-8"), str(path))
        assert sum(b.skip_reason is not None for b in blocks) == skipped
        for block in blocks:
            run_block(block, namespace)
    finally:
        os.chdir(cwd)
