"""Craft blocks: MLP, attention head, multi-head layer and a series on a residual stream.

These act on `VectorInBasis` batches of shape [..., T, dim] so a chamber can be tested
on its own, before assembly, with the same arithmetic the assembled model uses.
"""

from __future__ import annotations

import attrs
import numpy as np

from rasplang.backend.craft.bases import VectorInBasis, VectorSpace, join
from rasplang.backend.craft.maps import BilinearMap, LinearMap


@attrs.define(eq=False)
class MLP:
    """``second(relu(first(x)))``; ``first`` maps into the hidden space."""

    first: LinearMap
    second: LinearMap
    label: str = ""

    @property
    def residual_space(self) -> VectorSpace:
        """The directions this block reads and writes."""
        return join(self.first.input_space, self.second.output_space)

    @property
    def hidden_dim(self) -> int:
        """Number of hidden ReLU units."""
        return self.first.output_space.dim

    def __call__(self, x: VectorInBasis) -> VectorInBasis:
        hidden = self.first(x)
        hidden = VectorInBasis(hidden.space, np.maximum(hidden.magnitudes, 0.0))
        return self.second(hidden)


@attrs.define(eq=False)
class AttentionHead:
    """Softmax attention with logits ``w_qk(x_q, x_k)`` and values ``w_ov(x_k)``.

    ``causal`` masks keys after the query. Position 0 is assumed to hold BOS.
    """

    w_qk: BilinearMap
    w_ov: LinearMap
    causal: bool = False
    label: str = ""

    @property
    def residual_space(self) -> VectorSpace:
        """The directions this block reads and writes."""
        return join(self.w_qk.left_space, self.w_qk.right_space,
                    self.w_ov.input_space, self.w_ov.output_space)

    def pattern(self, x: VectorInBasis) -> np.ndarray:
        """Attention weights [..., T_query, T_key]."""
        logits = self.w_qk(x, x)
        if self.causal:
            t = logits.shape[-1]
            logits = np.where(np.tril(np.ones((t, t), bool)), logits, -np.inf)
        logits = logits - logits.max(axis=-1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=-1, keepdims=True)

    def __call__(self, x: VectorInBasis) -> VectorInBasis:
        values = self.w_ov(x)
        return VectorInBasis(values.space, self.pattern(x) @ values.magnitudes)
