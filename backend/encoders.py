"""Input and output encoders: tokens <-> embedding ids, logits -> decoded values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np


@attrs.frozen
class InputEncoder:
    """Token -> row of ``embed.W_E``: the vocabulary (sorted), then BOS, then PAD."""

    vocab: tuple[Any, ...]
    bos: Any
    pad: Any

    @property
    def encoding_map(self) -> dict[Any, int]:
        """Token -> id, BOS and PAD included."""
        return {t: i for i, t in enumerate((*self.vocab, self.bos, self.pad))}

    @property
    def bos_id(self) -> int:
        """Id of the BOS token."""
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        """Id of the PAD token."""
        return len(self.vocab) + 1

    def encode(self, sequences: Sequence[Sequence[Any]], length: int | None = None,
               first_position: int = 0) -> np.ndarray:
        """[B, T] ids for sequences that already start with BOS, padded with PAD.

        Errors count positions from ``first_position`` (-1: the user's input had no BOS).
        """
        table = self.encoding_map
        t = length if length is not None else max((len(s) for s in sequences), default=0)
        ids = np.full((len(sequences), t), self.pad_id, dtype=np.int64)
        for b, seq in enumerate(sequences):
            for p, tok in enumerate(seq):
                try:
                    ids[b, p] = table[tok]
                except (KeyError, TypeError):
                    raise ValueError(
                        f"token {tok!r} at position {p + first_position} of sequence {b} "
                        "is not in the "
                        f"vocabulary {list(self.vocab)} (nor BOS {self.bos!r} / PAD "
                        f"{self.pad!r})") from None
        return ids


@attrs.frozen
class OutputEncoder:
    """Logits -> values. Categorical: argmax over ``values`` (all below 1/2 -> None).
    Numerical: the first logit is the value; with ``values == (None,)`` (an output that
    can be None) a second logit is the None flag, and above 1/2 decodes to None."""

    numerical: bool
    values: tuple[Any, ...] = ()

    def decode(self, logits: np.ndarray) -> np.ndarray:
        """[..., d_vocab_out] logits -> [...] decoded values (float or object array)."""
        logits = np.asarray(logits)
        if self.numerical:
            value = logits[..., 0].astype(float)
            if not self.values:
                return value
            out = value.astype(object)
            out[logits[..., 1] > 0.5] = None
            return out
        table = np.empty(len(self.values) + 1, dtype=object)
        table[:-1] = list(self.values)
        table[-1] = None
        if not self.values:
            return np.full(logits.shape[:-1], None, dtype=object)
        idx = logits.argmax(axis=-1)
        best = np.take_along_axis(logits, idx[..., None], axis=-1)[..., 0]
        idx = np.where(best > 0.5, idx, len(self.values))
        return table[idx]
