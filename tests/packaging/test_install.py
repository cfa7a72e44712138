"""Packaging: the root folders interpreter/ and backend/ install as rasplang.* names."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import rasplang

ROOT = pathlib.Path(__file__).resolve().parents[2]

PROBE = (
    "import json, rasplang, rasplang.interpreter, rasplang.backend, pathlib;"
    "print(json.dumps({m.__name__: str(pathlib.Path(m.__file__).resolve()) "
    "for m in (rasplang, rasplang.interpreter, rasplang.backend)}))"
)


def test_editable_install_maps_root_folders():
    """In the development install the subpackages come from the root folders."""
    import rasplang.backend
    import rasplang.interpreter

    assert pathlib.Path(rasplang.interpreter.__file__).resolve().parent == ROOT / "interpreter"
    assert pathlib.Path(rasplang.backend.__file__).resolve().parent == ROOT / "backend"


def test_version_is_defined_once():
    """rasplang.__version__ comes from rasplang/_version.py and matches the metadata."""
    from importlib.metadata import version

    assert rasplang.__version__ == version("rasplang")


@pytest.mark.skipif(os.environ.get("RASPLANG_SKIP_INSTALL_TEST") == "1",
                    reason="RASPLANG_SKIP_INSTALL_TEST=1")
def test_plain_install_resolves_subpackages(tmp_path):
    """A plain (non-editable) install puts interpreter/ and backend/ under rasplang/."""
    target = tmp_path / "site"
    # Build from a clean copy: a stale build/ folder in the checkout would hide a
    # subpackage missing from pyproject.toml.
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "site", "__pycache__", ".*_cache"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr
    assert (target / "rasplang" / "py.typed").exists()
    env = {**os.environ, "PYTHONPATH": str(target)}
    # Run from an empty folder with -I-like isolation of the checkout: only `target`
    # (and the venv's site-packages for numpy/attrs) can provide `rasplang`.
    probe = subprocess.run(
        [sys.executable, "-S", "-c",
         f"import sys; sys.path[:0] = [{str(target)!r}]; import site; site.main(); " + PROBE],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    paths = json.loads(probe.stdout)
    for name in ("rasplang", "rasplang.interpreter", "rasplang.backend"):
        assert paths[name].startswith(str(target.resolve())), (name, paths[name])
    # Every module of the source folders is installed, subpackages included.
    for folder, installed in (("rasplang", "rasplang"), ("interpreter", "rasplang/interpreter"),
                              ("backend", "rasplang/backend")):
        for source in (ROOT / folder).rglob("*.py"):
            relative = source.relative_to(ROOT / folder)
            assert (target / installed / relative).exists(), f"{folder}/{relative} not installed"


def test_import_is_light():
    """`import rasplang` does not import numba, matplotlib, CuPy, safetensors or torch."""
    heavy = ["numba", "matplotlib", "cupy", "safetensors", "torch", "transformer_lens"]
    probe = subprocess.run(
        [sys.executable, "-c",
         f"import sys, rasplang; print([m for m in {heavy!r} if m in sys.modules])"],
        capture_output=True, text=True, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"
