"""`smallest_compression`: the smallest residual width at which `rasplang.compress` gives a
model that `rasplang.verify` finds exact on every input of the domain.

Bisection over ``d`` in ``1..d_model``: a width is *exact* when one of ``seeds`` trained
compressions verifies on every input; the search assumes that a width above an exact
one is exact too (true of the best ``W``, since a wider ``W`` can hold a narrower one,
though training may miss it), so it tries about ``log2(d_model)`` widths. The
uncompressed width ``d_model`` is exact by construction (the compiled model) and is not
trained.
"""

from __future__ import annotations

from typing import Any

import attrs

from rasplang.backend.model import CompiledModel


@attrs.frozen
class Trial:
    """One trained compression: its width, seed, the fraction of inputs it gets right,
    whether it is exact on every input, and its training time in seconds."""

    d: int
    seed: int
    accuracy: float
    exact: bool
    seconds: float


@attrs.frozen
class Search:
    """What `smallest_compression` found: the smallest exact width ``d`` (``d_model``
    when no compression was exact), the exact model there (the compiled model itself at
    ``d_model``), and every `Trial` in the order run."""

    d: int
    d_model: int
    model: Any
    trials: tuple[Trial, ...]

    def accuracy(self) -> dict[int, float]:
        """The best accuracy reached at each width tried (and 1.0 at ``d_model``)."""
        best: dict[int, float] = {self.d_model: 1.0}
        for t in self.trials:
            best[t.d] = max(best.get(t.d, 0.0), t.accuracy)
        return dict(sorted(best.items()))


def check(program: Any, model: Any) -> tuple[float, bool]:
    """``model``'s accuracy on every input of its domain against ``program``, and
    whether it is exact there (`rasplang.verify`, exhaustive)."""
    from rasplang.verification import verify

    cfg = model.config
    report = verify(program, cfg.vocab, cfg.max_seq_len, model=model, causal=cfg.causal,
                    exhaustive=True, progress=False)
    accuracy = 1.0 - report.n_mismatches / report.checked if report.checked else 0.0
    return accuracy, report.ok


def smallest_compression(model: CompiledModel, program: Any = None, *, seeds: int = 3,
                         low: int = 1, high: int | None = None, progress: bool = False,
                         **options: Any) -> Search:
    """The smallest ``d`` at which a compression of ``model`` is exact on every input.

    ``program`` is what the model computes (default ``model.program``; a loaded model
    has none). Each width tried trains up to ``seeds`` compressions (seeds 0, 1, ...,
    stopping at the first exact one) with `rasplang.compress` and ``options`` (``steps``,
    ``lr``, ...), and verifies each on every input of the domain. ``low``..``high``
    bound the widths searched (default ``1..d_model - 1``). Returns a `Search`.
    """
    from rasplang.compression.train import compress

    program = model.program if program is None else program
    if program is None:
        raise ValueError("smallest_compression verifies each compression against the "
                         "program, and this model has none (a loaded model): pass program=")
    d_model = model.config.d_model
    high = d_model - 1 if high is None else high
    if not 1 <= low <= high + 1 <= d_model:
        raise ValueError(f"need 1 <= low <= high + 1 <= d_model ({d_model}), got low={low}, "
                         f"high={high}")
    trials: list[Trial] = []
    best, best_d = model, d_model
    lo, hi = low, high + 1          # widths >= hi are exact (hi = high + 1: not yet known)
    while lo < hi:
        mid = (lo + hi) // 2
        found = None
        for seed in range(seeds):
            candidate = compress(model, mid, seed=seed, progress=progress, **options)
            accuracy, exact = check(program, candidate)
            trials.append(Trial(mid, seed, accuracy, exact, candidate.seconds))
            if exact:
                found = candidate
                break
        if found is not None:
            hi, best, best_d = mid, found, mid
        else:
            lo = mid + 1
    return Search(best_d, d_model, best, tuple(trials))
