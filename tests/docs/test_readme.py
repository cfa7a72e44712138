"""The README's example runs and prints what its comments say."""

import contextlib
import io
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_readme_example_runs():
    """Execute the README's python block; check its printed lines against the comments."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1, 0.5, 0.666")
    assert lines[1] == "1 13"
    assert lines[-1] == "True"
    assert len(block.splitlines()) <= 16
