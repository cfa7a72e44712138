"""Helpers of the documentation tests: paths, and the docs' hook modules loaded by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
HOOKS = DOCS / "hooks"


def load_hook_module(name: str) -> ModuleType:
    """Import docs/hooks/<name>.py under the name the mkdocs hook gives it."""
    key = f"rasplang_docs_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HOOKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
