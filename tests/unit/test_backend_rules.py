"""Every node kind has a rule in every compiler pass that dispatches on node types."""

from __future__ import annotations

import numpy as np

import rasplang as rl
from rasplang import lib
from rasplang.backend import build
from rasplang.evaluator import _RULES as EVALUATOR_RULES
from rasplang.nodes import ConstantSOp, SOp


def test_every_sop_kind_has_a_build_rule():
    """The builder has a rule for every SOp kind the evaluator knows, except ConstantSOp,
    which `validate` refuses (it depends on the input length)."""
    kinds = {k for k in EVALUATOR_RULES if issubclass(k, SOp)} - {ConstantSOp}
    assert kinds <= set(build._RULES), kinds - set(build._RULES)


def test_apply_keeps_the_residual_between_sublayers():
    """apply's residual after each attention sublayer is the embedding plus the outputs
    so far (kept, not rebuilt by subtraction)."""
    model = rl.compile(lib.make_hist(), ["a", "b"], 4)
    result = model.apply(["BOS", "a", "b", "a"])
    x = result.residuals[0]
    for i, out in enumerate(result.layer_outputs):
        x = x + out
        assert np.array_equal(result.residuals[i + 1], x)
