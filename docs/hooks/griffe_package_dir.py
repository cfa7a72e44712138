"""A griffe extension: load ``rasplang.interpreter`` and ``rasplang.backend`` from their folders.

pyproject.toml maps the repository's ``interpreter/`` and ``backend/`` folders to the
subpackages ``rasplang.interpreter`` and ``rasplang.backend`` (setuptools
``package-dir``). Python's import system follows that mapping (the editable install's
finder, or the copied tree of a plain install), but griffe reads ``rasplang/`` from disk
and finds no ``rasplang/interpreter/``. This extension reads the same ``package-dir``
table and, when griffe loads ``rasplang`` without those subpackages, visits each mapped
folder as a submodule, so ``::: rasplang.interpreter`` resolves statically. With a plain
(non-editable) install the subpackages are already inside ``rasplang/`` and nothing is
added. Listed under ``plugins.mkdocstrings.handlers.python.options.extensions``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import griffe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def package_dirs(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, Path]:
    """``{"rasplang.interpreter": <repo>/interpreter, ...}`` from ``package-dir``."""
    table = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    mapping = table.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    return {
        name: (pyproject.parent / folder).resolve()
        for name, folder in mapping.items()
        if "." in name
    }


class PackageDir(griffe.Extension):
    """Attach ``package-dir`` subpackages that live outside their parent's folder."""

    def __init__(self, pyproject: str | None = None) -> None:
        self.mapping = package_dirs(Path(pyproject) if pyproject else ROOT / "pyproject.toml")

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """After griffe loads a top-level package, visit its mapped subpackages."""
        for name, folder in sorted(self.mapping.items(), key=lambda item: item[0].count(".")):
            parent_path, _, child = name.rpartition(".")
            if parent_path.split(".", 1)[0] != pkg.name:
                continue
            inner = parent_path.partition(".")[2]
            parent = pkg.get_member(inner) if inner else pkg
            if child in parent.members:
                continue
            init = folder / "__init__.py"
            if not init.exists():
                raise FileNotFoundError(
                    f"package-dir maps {name} to {folder}, which has no __init__.py"
                )
            # GriffeLoader has no public "load this path as that submodule"; _load_module is
            # what it uses itself for every submodule (it recurses into the folder).
            module = loader._load_module(child, init, submodules=True, parent=parent)
            parent.set_member(child, module)
