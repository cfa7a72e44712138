"""Input and output encoders: tokens <-> embedding ids, logits -> decoded values."""

from __future__ import annotations

import itertools
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
        """[B, T] ids for sequences that start with BOS, padded with PAD.

        BOS must come first and nowhere else, and every other token must be in the
        vocabulary (PAD never is). Raises ValueError naming the sequence, the position
        and the token of the first few that are not, before returning anything; positions
        count from ``first_position`` (-1: the user's input had no BOS).
        """
        table = {t: i for i, t in enumerate(self.vocab)}
        t = length if length is not None else max((len(s) for s in sequences), default=0)
        ids = np.full((len(sequences), t), self.pad_id, dtype=np.int64)
        bad: list[tuple[int, int, Any]] = []  # (sequence, position, token), the first few
        n_bad = 0
        for b, seq in enumerate(sequences):
            if not len(seq) or lookup({self.bos: 0}, seq[0]) is None:
                got = repr(seq[0]) if len(seq) else "an empty sequence"
                raise ValueError(f"sequence {b}: expected BOS {self.bos!r} at position "
                                 f"{first_position}, got {got}")
            ids[b, 0] = self.bos_id
            try:  # one dict lookup per token, in C
                ids[b, 1:len(seq)] = list(map(table.__getitem__, itertools.islice(seq, 1, None)))
                continue
            except (KeyError, TypeError):
                pass
            for p in range(1, len(seq)):
                if lookup(table, seq[p]) is None:
                    n_bad += 1
                    if len(bad) < _SHOWN_BAD:
                        bad.append((b, p + first_position, seq[p]))
        if bad:
            raise ValueError(self._describe(bad, n_bad))
        return ids

    def _describe(self, bad: list[tuple[int, int, Any]], n_bad: int) -> str:
        """One message for tokens outside the vocabulary: the first in full, then a few."""
        b, p, tok = bad[0]
        vocab = list(self.vocab[:_SHOWN_VOCAB])
        shown = (str(vocab) if len(self.vocab) <= _SHOWN_VOCAB
                 else f"{str(vocab)[:-1]}, ...] ({len(self.vocab)} tokens)")
        message = f"sequence {b}, position {p}: token {tok!r} is not in the vocabulary {shown}"
        if any(lookup({self.bos: 0, self.pad: 0}, x) is not None for _, _, x in bad):
            message += (f" (the model adds BOS {self.bos!r} and PAD {self.pad!r} itself; "
                        "neither may appear in an input)")
        if len(bad) > 1:
            message += "; also " + "; ".join(f"sequence {b}, position {p}: {tok!r}"
                                             for b, p, tok in bad[1:])
        if n_bad > len(bad):
            message += f"; {n_bad - len(bad)} more"
        return message


_SHOWN_VOCAB = 20  # vocabulary tokens shown in an error
_SHOWN_BAD = 5     # tokens outside the vocabulary listed in an error


def lookup(table: dict[Any, int], token: Any) -> int | None:
    """``table[token]`` (found by ``==``, as a dict lookup), or None for a token that is
    absent or unhashable."""
    try:
        return table.get(token)
    except TypeError:
        return None


@attrs.frozen
class OutputEncoder:
    """Logits -> values. Categorical: argmax over ``values`` (all below 1/2 -> None).
    Numerical: the first logit is the value; with ``values == (None,)`` (an output that
    can be None) a second logit is the None flag, and above 1/2 decodes to None."""

    numerical: bool
    values: tuple[Any, ...] = ()

    @property
    def decoding_map(self) -> dict[int, Any]:
        """tracr's name: output logit index -> value (categorical outputs; empty for a
        numerical output, whose first logit is the value itself)."""
        return {} if self.numerical else dict(enumerate(self.values))

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
