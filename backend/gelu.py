"""GELU MLPs that compute exactly what the ReLU MLPs compute.

Every hidden unit of a compiled MLP computes ``relu(p)`` for a pre-activation ``p`` that
is an affine function of the residual directions it reads. The analysis knows every
state those directions can hold at a real position: a categorical SOp is one of its
one-hots (or zero where it can be None), a numerical SOp one of its values (or its None
flag), a SelectorWidth's scratch direction one of ``-1/(w+1)``, ``one`` is 1 and the BOS
direction 0. So ``p`` lies in the sum set ``P_u = C_1 + ... + C_k + c`` of each read
SOp's contributions ``C_j`` (a superset of what occurs), up to the inputs' error bound
``e_u = sum_rows |w| error``. At the BOS position every unit is gated to ``p <= -1``, or
is there already (``chambers/gated_mlp.py``).

Scaling. With ``m_u`` the smallest nonzero ``|p|`` over ``P_u`` (and 1 for the gate),
the unit is rewritten as ``gelu(K_u p) / K_u`` with ``K_u`` the power of 2 at or above
``Z / (m_u - e_u)``: its input weights times ``K_u``, its output weights divided by
``K_u``, both exact in floating point, so the model rounds as the ReLU model does.
ReLU is positively homogeneous, so the ReLU model is unchanged; for GELU:

- where the exact ``p`` is nonzero, ``|K_u p| >= Z``, and
  ``|gelu(z) - relu(z)| = |z| Phi(-|z|) <= phi(z)`` (Mills' ratio), at most
  ``phi(Z) / K_u``; with ``Z = GELU_Z = 12`` that is below ``10^-31``, and the tanh form
  (``gelu_new``, what GPT-2 and TransformerLens call it) is closer still: both round to
  ReLU exactly in float32 and float64 at ``|z| >= 12``;
- where the exact ``p`` is 0 (a lookup-table unit with one of two inputs matching), the
  unit's input is off by at most ``e_u``, and ``|gelu(z)| <= |z|`` as ``|relu(z)| <= |z|``:
  the output error the chambers bound for ReLU (at most ``|w_out| e_u``) holds as it is.

Pre-activations within `ZERO` of 0 count as 0 (the chambers build integer or
well-separated levels, never values that small). A unit whose inputs' errors reach
half of ``m_u``, or whose sum set is past `MAX_SUMS`, cannot be scaled safely: the
compiler refuses GELU for it, naming its node.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from rasplang.backend.spaces import ONE, SOpSpace

#: Every nonzero pre-activation is scaled to at least this magnitude.
GELU_Z = 12.0
#: A pre-activation this close to 0 is the exact 0 of an integer level.
ZERO = 1e-9
#: Largest sum set enumerated for one unit.
MAX_SUMS = 1 << 22
#: ``sqrt(2 / pi)`` as a Python float (it takes the dtype of the array it multiplies).
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu_new(x: Any, xp: Any = np) -> Any:
    """GPT-2's GELU (``gelu_new``: the tanh form), as transformers and TransformerLens
    compute it; large ``|x|`` saturates instead of overflowing. The constants are Python
    floats, which take ``x``'s dtype (a NumPy float64 scalar would promote float32 to
    float64 under NumPy 2), so the result has ``x``'s dtype, as torch's has."""
    with np.errstate(over="ignore", invalid="ignore"):
        inner = SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))
        return 0.5 * x * (1.0 + xp.tanh(inner))


def _contributions(space: SOpSpace, local: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Every value ``w . enc(v)`` takes on the directions ``local`` of ``space``."""
    if space.numerical:
        values = [v for v in space.values if v is not None]
        out = np.asarray([float(v) for v in values], dtype=float) / (space.scale or 1.0)
        coef = np.zeros(len(space.directions))
        coef[local] = w
        got = out * coef[0]
        if space.nullable:
            got = np.append(got, coef[1] if len(coef) > 1 else 0.0)
        return np.unique(got)
    coef = np.zeros(len(space.directions))
    coef[local] = w
    zero = space.nullable or len(local) < len(space.directions)
    return np.unique(np.append(coef, 0.0) if zero else coef)


def _smallest_nonzero(sets: list[np.ndarray], const: float) -> float:
    """The smallest ``|p| > ZERO`` with ``p = const + sum of one element of each set``
    (inf when every sum is 0); a ValueError past `MAX_SUMS`."""
    total = np.array([const])
    for s in sorted(sets, key=len):
        if len(total) * len(s) > MAX_SUMS:
            raise ValueError(f"{len(total) * len(s):,} pre-activations")
        total = np.unique((total[:, None] + s[None, :]).ravel())
    nonzero = np.abs(total)[np.abs(total) > ZERO]
    return float(nonzero.min()) if len(nonzero) else float("inf")


class RowSpaces:
    """Which SOp space (and which of its directions) each residual row belongs to."""

    def __init__(self, labels: list[str], spaces: Iterable[SOpSpace], bos_label: str):
        index = {label: i for i, label in enumerate(labels)}
        self.one = index[str(ONE)]
        self.bos = index[bos_label]
        self.rows: dict[int, tuple[SOpSpace, int]] = {}
        for space in spaces:
            for k, d in enumerate(space.directions):
                i = index.get(str(d))
                if i is not None and i not in (self.one, self.bos):
                    self.rows.setdefault(i, (space, k))

    def states(self, column: np.ndarray) -> tuple[list[np.ndarray], float, float]:
        """For one unit's input column: the contribution sets of the SOps it reads, the
        constant (``one``) and the error bound ``e_u``."""
        groups: dict[int, tuple[SOpSpace, list[int], list[float]]] = {}
        error = 0.0
        for i in np.flatnonzero(column):
            if i in (self.one, self.bos):
                continue
            if int(i) not in self.rows:
                raise ValueError(f"it reads residual direction {int(i)}, whose values the "
                                 "analysis does not give")
            space, k = self.rows[int(i)]
            entry = groups.setdefault(id(space), (space, [], []))
            entry[1].append(k)
            entry[2].append(float(column[i]))
            error += abs(float(column[i])) * space.error
        sets = [_contributions(s, np.asarray(ks), np.asarray(ws)) for s, ks, ws in groups.values()]
        return sets, float(column[self.one]), error


def gelu_scales(w_in: np.ndarray, rows: RowSpaces, unit_label: list[str],
                ) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """``K_u`` for every unit of one MLP layer (``w_in [d_model, d_mlp]``), and the
    ``(node label, reason)`` of units that cannot be scaled."""
    scales = np.ones(w_in.shape[1])
    problems: list[tuple[str, str]] = []
    for u in range(w_in.shape[1]):
        column = w_in[:, u]
        if not column.any():
            continue
        try:
            sets, const, error = rows.states(column)
            m = min(1.0, _smallest_nonzero(sets, const))
        except ValueError as exc:
            problems.append((unit_label[u], f"GELU: cannot bound the pre-activations of "
                             f"hidden unit {u} ({exc})"))
            continue
        if error >= m / 2:
            problems.append((unit_label[u], f"GELU: hidden unit {u}'s pre-activations are "
                             f"{m:.3g} from 0 but its inputs may be off by {error:.3g}"))
            continue
        scales[u] = 2.0 ** math.ceil(math.log2(GELU_Z / (m - error)))
    return scales, problems


def to_gelu(weights: dict[str, np.ndarray], n_layers: int, rows: RowSpaces,
            labels: list[list[str]]) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """The weights with every MLP unit scaled for GELU (`gelu_scales`); ``labels[i][u]``
    names the node of unit ``u`` of layer ``i``."""
    out = dict(weights)
    problems: list[tuple[str, str]] = []
    for i in range(n_layers):
        p = f"blocks.{i}.mlp."
        k, found = gelu_scales(weights[p + "W_in"], rows, labels[i])
        problems += found
        out[p + "W_in"] = weights[p + "W_in"] * k[None, :]
        out[p + "b_in"] = weights[p + "b_in"] * k
        out[p + "W_out"] = weights[p + "W_out"] / k[:, None]
    return out, list(dict.fromkeys(problems))


def unit_labels(circuit: dict[str, Any], n_layers: int, d_mlp: int) -> list[list[str]]:
    """The node label of every MLP hidden unit, from the circuit."""
    out = [["?"] * d_mlp for _ in range(n_layers)]
    for label, steps in circuit.items():
        for step in steps:
            if str(step.sublayer) == "mlp":
                for u in step.hidden:
                    out[step.layer][u] = label
    return out

