"""The compiler pipeline: analyse -> validate -> build blocks -> schedule -> assemble."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from rasplang.analysis import Analysis, analysis_for, raise_if_unsupported, validate
from rasplang.backend.assemble import assemble
from rasplang.backend.budget import (
    DEFAULT_MAX_BYTES,
    ModelSize,
    build_bound,
    lower_bound,
    model_size,
    refuse_over,
)
from rasplang.backend.build import Built, build_blocks
from rasplang.backend.chambers.attention import COLD_LEAKAGE_TARGET
from rasplang.backend.chambers.selector import SelectorUnsupported
from rasplang.backend.derived import conversion_problems
from rasplang.backend.finish import check_options, finish
from rasplang.backend.fusion import Fusion, FusionInconsistent, choose, depth
from rasplang.backend.model import CompiledModel
from rasplang.backend.rules import backend_problems
from rasplang.backend.schedule import Schedule, schedule
from rasplang.evaluator import is_number
from rasplang.nodes import Aggregate, RASPExpr
from rasplang.selection import spread_aggregates
from rasplang.validation import UnsupportedProgramError


class CompilerWarning(UserWarning):
    """A construct compiled exactly only on inputs the analysis cannot characterise."""


def compile(
    program: RASPExpr,
    vocab: Iterable[Any],
    max_seq_len: int,
    *,
    causal: bool = False,
    compiler_bos: Any = "BOS",
    compiler_pad: Any = "PAD",
    mlp_exactness: float = 100,
    max_bytes: int = DEFAULT_MAX_BYTES,
    analysis: Analysis | None = None,
    norm: str | None = None,
    activation: str = "relu",
    optimize: bool = True,
) -> CompiledModel:
    """Compile ``program`` for inputs over ``vocab`` of length 1..``max_seq_len``.

    The model agrees with `rasplang.evaluate` on every such input (numerical outputs
    to float rounding, and by value: a numerical output is a float, so ``0``, ``0.0``
    and ``False`` are one value there; a categorical output that can be such twins is
    refused). Raises `UnsupportedProgramError` (a NotImplementedError) listing
    every node it cannot build exactly, before building any weights, and `ModelTooLarge`
    (one of those) when the weights would take more than ``max_bytes`` (default 4 GiB),
    naming the nodes that take the space, before allocating them. Every refusal that
    follows from the value sets (sizes, values too close to separate) comes before any
    block is built, so a refused program allocates nothing past its analysis; a compiled
    one peaks at its weights (at most ``max_bytes``) plus the blocks they are assembled
    from (docs/design.md, "Peak memory against max_bytes"). Warns
    (`CompilerWarning`) for each categorical Aggregate that may select several values
    (and is not proven to select one, `rasplang.selection`): it is compiled as a mean of
    one-hots, exact where one value is selected or all selected values are the same
    non-number. Warns too for a node without any value (its function raised on every
    value it was given): `evaluate` raises on every input, so nothing the model computes
    can be checked.

    ``optimize`` (default True) computes Maps and SequenceMaps inside the blocks that
    read them (fused into one MLP, folded into a head's query-key or value-output
    matrix, a SelectorWidth's count decoded inside its readers' MLPs) wherever the
    tables stay within `rasplang.backend.fusion.FUSED_TABLE_BUDGET`: fewer layers and
    residual dimensions, exact all the same. Where that saves no layer and one block per
    node has fewer parameters, that model is returned instead. ``optimize=False`` builds
    one block per node, for teaching and node-level circuits.

    ``norm`` (None, "layernorm" or "rmsnorm") adds normalisation layers that are exact
    on every residual the model produces, and ``activation`` ("relu" or "gelu") picks the
    MLPs' activation (`rasplang.backend.normalize`, `rasplang.backend.gelu`).

    ``analysis`` is ``rasplang.analyze(program, vocab, max_seq_len)`` when the caller
    already has it (`rasplang.verify` shares one with the interpreter); a ValueError
    says so when it was made for another program, vocabulary or length.
    """
    for name, flag in (("causal", causal), ("optimize", optimize)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    check_options(norm, activation)
    vocab = tuple(vocab)
    for what, token in (("compiler_bos", compiler_bos), ("compiler_pad", compiler_pad)):
        if token in vocab:
            raise ValueError(f"{what} {token!r} is also a vocabulary token; pick another")
    if compiler_bos == compiler_pad:
        raise ValueError(f"compiler_bos and compiler_pad are both {compiler_bos!r}")
    if not mlp_exactness > 1:
        raise ValueError(f"mlp_exactness must be > 1, got {mlp_exactness!r}")
    analysis = analysis_for(program, vocab, max_seq_len, analysis)
    raise_if_unsupported(validate(analysis) + backend_problems(analysis, causal))
    refuse_over(lower_bound(analysis, optimize), max_bytes)
    for node in spread_aggregates(analysis, causal):
        warnings.warn(_spread_warning(analysis, node), CompilerWarning, stacklevel=2)
    for node in nodes_without_values(analysis):
        warnings.warn(_no_value_warning(analysis, node), CompilerWarning, stacklevel=2)
    options = dict(causal=causal, bos=compiler_bos, mlp_exactness=mlp_exactness,
                   max_bytes=max_bytes)

    def build(fuse: bool) -> tuple[Built, Schedule, ModelSize]:
        # what follows from the value sets alone is refused before any block is built
        fusion = choose(analysis) if fuse else Fusion()
        raise_if_unsupported(conversion_problems(analysis, fusion, float(mlp_exactness)))
        refuse_over(build_bound(analysis, fusion), max_bytes)
        built = build_blocks(analysis, **options, optimize=fuse)
        if built.problems and not built.incurable:
            # a bound over a tolerance may be the softmax's leakage, amplified after it:
            # the same build with colder heads (the first one's weights freed before),
            # kept only if it has no problem at all
            problems, built = built.problems, None
            built = build_blocks(analysis, **options, optimize=fuse,
                                 leakage=COLD_LEAKAGE_TARGET)
            if built.problems:
                raise_if_unsupported(problems)
        raise_if_unsupported(built.problems)
        plan = schedule(built.blocks, analysis.program)
        size = model_size(analysis, built, plan)
        refuse_over(size, max_bytes)
        return built, plan, size

    try:
        chosen = build(optimize)
    except (UnsupportedProgramError, SelectorUnsupported, FusionInconsistent):
        if not optimize:
            raise
        chosen = None  # the refused build's weights go with the exception, before the next
    if chosen is None:
        chosen = build(False)  # what one block per node builds, optimize builds
    elif chosen[0].fused and chosen[2].n_layers >= _unfused_layers(analysis):
        chosen = _fewer_parameters(chosen, lambda: build(False))
    built, plan, _ = chosen
    model = assemble(analysis, built, plan, causal=causal, bos=compiler_bos, pad=compiler_pad)
    if norm is None and activation == "relu":
        return model
    return finish(model, analysis, built, norm=norm, activation=activation)


def _unfused_layers(analysis: Analysis) -> int:
    """The layers of the one-block-per-node model, as `fusion.depth` places blocks."""
    return max(1, depth(analysis, Fusion()) // 2 + 1)


def _fewer_parameters(fused: tuple[Built, Schedule, ModelSize], build_plain: Any
                      ) -> tuple[Built, Schedule, ModelSize]:
    """The cost model's last word where fusion saves no layer: the one-block-per-node
    model instead if it is as shallow, exact in float32 where the fused one is, and has
    fewer parameters (fusion may trade residual directions for wider MLPs)."""
    try:
        plain = build_plain()
    except (UnsupportedProgramError, SelectorUnsupported):  # ModelTooLarge included
        return fused

    def cost(c: tuple[Built, Schedule, ModelSize]) -> tuple[int, bool, int]:
        return c[2].n_layers, bool(c[0].float64_only), c[2].parameters
    return plain if cost(plain) < cost(fused) else fused


def compile_rasp_to_model(
    program: RASPExpr,
    vocab: Iterable[Any],
    max_seq_len: int,
    causal: bool = False,
    compiler_bos: Any = "BOS",
    compiler_pad: Any = "PAD",
    mlp_exactness: int = 100,
) -> CompiledModel:
    """tracr's ``compiling.compile_rasp_to_model`` signature; see `compile`."""
    return compile(program, vocab, max_seq_len, causal=causal, compiler_bos=compiler_bos,
                   compiler_pad=compiler_pad, mlp_exactness=mlp_exactness)


def nodes_without_values(analysis: Analysis) -> tuple[RASPExpr, ...]:
    """The SOps without any value whose inputs all have some: where the values end (the
    nodes downstream have none either, and are not listed)."""
    empty = {node for node, values in analysis.value_sets.items() if not values}
    return tuple(node for node in analysis.nodes
                 if node in empty and not any(child in empty for child in node.children))


def _no_value_warning(analysis: Analysis, node: RASPExpr) -> str:
    """What a node without values means for the model."""
    errors = analysis.dropped.get(node, ())
    first = errors[0].removesuffix("; value dropped") if errors else ""
    first = first if len(first) <= 120 else f"{first[:117]}..."
    return (f"{analysis.labels[node]}: no value on any input" + (f" ({first})" if first else "")
            + "; evaluate raises on every input, so nothing the model computes can be "
              "checked against it")


def _spread_warning(analysis: Analysis, node: Aggregate) -> str:
    """What a categorical Aggregate that may select several values computes."""
    label = analysis.labels[node]
    text = (f"{label}: categorical Aggregate may select several values; compiled as a mean "
            "of one-hots, exact only where one value is selected or all selected values are "
            "the same non-number")
    if any(is_number(v) for v in analysis.value_sets[node.sop]):
        text += (f". Its values are numbers, whose mean evaluate returns (a float, even of "
                 f"equal numbers): did you mean numerical(Aggregate(...)) for {label!r}?")
    return text
