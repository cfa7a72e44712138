"""Arrays returned by `Plan.run_arrays`: codes, tables, floats and None masks per node."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from rasplang.interpreter.codec import decode, decode_matrices
from rasplang.interpreter.tables import Table
from rasplang.nodes import RASPExpr


@attrs.frozen
class NodeArrays:
    """One node's outputs for a whole batch.

    For an SOp, ``codes: [B, T] int32`` index ``table.values`` (positions at or past a
    sequence's length hold 0); `values` and `none_mask` are derived from them. For a
    Selector, ``matrix: [B, T, T] uint8`` is ``[sequence, query, key]``.
    """

    label: str
    node: RASPExpr
    lengths: np.ndarray  # [B] int64
    table: Table | None = None
    codes: np.ndarray | None = None  # [B, T] int32
    matrix: np.ndarray | None = None  # [B, T, T] uint8

    @property
    def valid(self) -> np.ndarray:
        """``[B, T]`` bool: position < length."""
        n_pos = self.codes.shape[1] if self.codes is not None else self.matrix.shape[1]
        return np.arange(n_pos)[None, :] < self.lengths[:, None]

    @property
    def values(self) -> np.ndarray:
        """``[B, T]`` float64 values (NaN for None, non-numbers and padding)."""
        out = self.table.floats()[self.codes]
        out[~self.valid] = np.nan
        return out

    @property
    def none_mask(self) -> np.ndarray:
        """``[B, T]`` bool: the value is None (False on padding)."""
        return self.table.none_codes()[self.codes] & self.valid

    def tolist(self) -> list[Any]:
        """Per sequence, the list `rasplang.evaluate` returns."""
        if self.matrix is not None:
            return decode_matrices(self.matrix, self.lengths)
        return decode(self.codes, self.lengths, self.table)


@attrs.frozen
class BatchArrays:
    """Every kept node's `NodeArrays`, by label; ``output`` is the program's."""

    output: NodeArrays
    nodes: dict[str, NodeArrays]

    def __getitem__(self, label: str) -> NodeArrays:
        try:
            return self.nodes[label]
        except KeyError:
            raise KeyError(
                f"node {label!r} was not kept; kept labels are {sorted(self.nodes)} "
                "(pass outputs=[...] or outputs='all' to run_arrays)"
            ) from None
