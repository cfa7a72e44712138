"""The compiler's last pass: the activation (`rasplang.backend.gelu`) and the norm
(`rasplang.backend.normalize`) the caller asked for, applied to the assembled weights,
with the spaces the build gave every residual direction."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from rasplang.analysis import Analysis
from rasplang.backend import gelu, normalize
from rasplang.backend.build import Built
from rasplang.backend.chambers import attention
from rasplang.backend.model import CompiledModel
from rasplang.backend.spaces import SOpSpace
from rasplang.validation import UnsupportedProgramError

#: Error bound assumed for a SelectorWidth's scratch direction (its head's leakage is
#: held near 1e-12; the discretisation that reads it allows far more).
SCRATCH_ERROR = 1e-6


def check_options(norm: Any, activation: Any) -> None:
    """A ValueError naming the allowed values for an unknown ``norm`` or ``activation``."""
    if norm not in normalize.NORMS:
        raise ValueError(f"norm must be one of {list(normalize.NORMS)}, got {norm!r}")
    if activation not in normalize.ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(normalize.ACTIVATIONS)}, "
                         f"got {activation!r}")


def residual_spaces(analysis: Analysis, built: Built) -> list[SOpSpace]:
    """Every space that holds residual directions: the SOps', tokens, indices and each
    SelectorWidth's scratch direction (``-1 / (w + 1)``)."""
    spaces = [built.tokens, built.indices, *built.spaces.values()]
    n = analysis.max_seq_len
    values = tuple(attention.scratch_value(w) for w in range(n + 1))
    for b in built.blocks:
        if b.scratch is not None:
            spaces.append(SOpSpace(str(b.scratch), True, values, (b.scratch,), -np.ones(1),
                                   error=SCRATCH_ERROR))
    return spaces


def finish(model: CompiledModel, analysis: Analysis, built: Built, *, norm: str | None,
           activation: str) -> CompiledModel:
    """``model`` with ``activation`` ("relu": as built; "gelu": every unit scaled, see
    `rasplang.backend.gelu`) and ``norm`` (None, "layernorm", "rmsnorm"). Raises
    `UnsupportedProgramError` naming the nodes it cannot make exact."""
    check_options(norm, activation)
    spaces = residual_spaces(analysis, built)
    if activation == "gelu":
        rows = gelu.RowSpaces(model.residual_labels, spaces, str(built.bos))
        cfg = model.config
        weights, problems = gelu.to_gelu(model.weights, cfg.n_layers, rows,
                                         gelu.unit_labels(model.circuit, cfg.n_layers,
                                                          cfg.d_mlp))
        if problems:
            raise UnsupportedProgramError(problems)
        model = _with(model, attrs.evolve(cfg, act_fn="gelu_new"), weights)
    if norm is not None:
        try:
            model, why32 = normalize.normalized(model, norm, spaces, extra=2)
        except ValueError as exc:
            label = analysis.labels[analysis.program]
            raise UnsupportedProgramError([(label, f"{norm}: {exc}")]) from None
        if why32 and not model.config.float64_only:
            model = _with(model, attrs.evolve(model.config, float64_only=why32), model.weights)
    return model


def _with(model: CompiledModel, config: Any, weights: dict[str, Any]) -> CompiledModel:
    """A new model (with its own caches) with ``config`` and ``weights``."""
    return CompiledModel(config, weights, model.residual_labels, model.input_encoder,
                         model.output_encoder, model.circuit, model.program)
