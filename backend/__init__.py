"""The compiler: RASP -> craft IR -> transformer weights, and the forward pass.

Pipeline (`compiler.py`): analyse (`rasplang.analysis`) -> validate (`rules.py`) ->
build blocks (`build.py`, with one chamber per construction in `chambers/`) ->
schedule (`schedule.py`) -> size check (`budget.py`) -> assemble (`assemble.py`) ->
`CompiledModel` (`model.py`), run by the hand-written forward pass (`forward.py`).
"""

from rasplang.backend.budget import ModelSize, ModelTooLarge
from rasplang.backend.compiler import CompilerWarning, compile, compile_rasp_to_model
from rasplang.backend.model import ApplyResult, CircuitStep, CompiledModel, ModelConfig

__all__ = ["ApplyResult", "CircuitStep", "CompiledModel", "CompilerWarning", "ModelConfig",
           "ModelSize", "ModelTooLarge", "compile", "compile_rasp_to_model"]
