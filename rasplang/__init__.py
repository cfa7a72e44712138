"""rasplang: RASP programs in Python, a fast interpreter, and an exact compiler.

>>> import rasplang as rl
>>> prog = rl.numerical(rl.Aggregate(rl.select(rl.indices, rl.indices, "<="),
...                                  rl.numerical(rl.tokens == "x"), default=0))
>>> rl.evaluate(prog, list("xyx"))
[1, 0.5, 0.6666666666666666]
"""

from rasplang._version import __version__
from rasplang.analysis import (
    MAX_VALUE_SET_SIZE,
    Analysis,
    AnalysisError,
    UnsupportedProgramError,
    ValueSetTooLarge,
    analyze,
    validate,
)
from rasplang.evaluator import EvaluationError, evaluate, evaluate_all
from rasplang.graph import format_program, to_dot, topological_order
from rasplang.nodes import (
    Aggregate,
    Comparison,
    ConstantSelector,
    ConstantSOp,
    Elementwise,
    Encoding,
    Full,
    IndicesType,
    LengthType,
    LinearSequenceMap,
    Map,
    RASPExpr,
    Select,
    Selector,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    SOp,
    TokensType,
    aggregate,
    categorical,
    get_encoding,
    indices,
    is_categorical,
    is_numerical,
    length,
    numerical,
    select,
    selector_width,
    tokens,
)

__all__ = [
    "MAX_VALUE_SET_SIZE", "Aggregate", "Analysis", "AnalysisError", "Comparison",
    "ConstantSOp", "ConstantSelector", "Elementwise", "Encoding", "EvaluationError", "Full",
    "IndicesType", "LengthType", "LinearSequenceMap", "Map", "RASPExpr", "SOp", "Select",
    "Selector", "SelectorAnd", "SelectorNot", "SelectorOr", "SelectorWidth", "SequenceMap",
    "TokensType", "UnsupportedProgramError", "ValueSetTooLarge", "__version__", "aggregate",
    "analyze", "categorical", "compile", "compress", "dataset", "evaluate", "evaluate_all",
    "format_program",
    "get_encoding", "indices", "is_categorical", "is_numerical", "length", "load", "numerical",
    "select", "selector_width", "smallest_compression", "to_dot", "tokens", "topological_order",
    "validate", "verify",
]

# Lazy re-exports: importing the compiler stays out of `import rasplang`.
_LAZY = {
    "compile": "rasplang.backend",
    "compress": "rasplang.compression",
    "smallest_compression": "rasplang.compression",
    "dataset": "rasplang.datasets",
    "load": "rasplang.backend.io",
    "verify": "rasplang.verification",
}
# Subpackages and modules users reach for as attributes (``rl.lib``), imported on first use.
_SUBMODULES = ("backend", "compression", "fuzzing", "interpreter", "lib", "paper", "rasp",
               "testing", "verification", "viz")


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"rasplang.{name}")
    raise AttributeError(f"module 'rasplang' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
