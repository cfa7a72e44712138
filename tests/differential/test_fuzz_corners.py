"""Fuzzing the compiler's corners: a compiled model must be exact or refused.

`rasplang.fuzzing` builds adversarial programs (ulp-close floats read categorically,
1 / 1.0 / True twins, tuples, wide vocabularies, partial functions, numbers at the edge
of floating point, causal models, Aggregates and selector combinations) and classifies
each: exact, refused (a clear error naming a node or the vocabulary), warned-wrong
(wrong after a CompilerWarning), WRONG (silently), crash, slow or memory.

The default test run checks a few dozen cases on a fixed seed; a campaign runs with
``make fuzz CORNER_COUNT=... SEED=...`` (this file as a script), printing the counts
and a self-contained reproducer for every case that is neither exact nor refused.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import pytest

from rasplang.fuzzing import BAD_OUTCOMES, OUTCOMES, CaseResult, generate_case, run_campaign


def campaign(count: int, seed: int, *, workers: int = 1, start: int = 0,
             verbose: bool = False) -> list[CaseResult]:
    """Check cases ``start .. start + count - 1`` of ``seed``, in worker processes."""
    cases = [generate_case(seed, i) for i in range(start, start + count)]
    results = []
    for result in run_campaign(cases, workers=workers):
        results.append(result)
        if verbose and result.outcome in BAD_OUTCOMES | {"warned-wrong"}:
            print(f"  {result.case.name}: {result.outcome}", file=sys.stderr, flush=True)
    return sorted(results, key=lambda r: r.case.index)


def summary(results: list[CaseResult], seconds: float | None = None) -> str:
    """Counts per outcome, then a reproducer for each case neither exact nor refused."""
    counts = collections.Counter(r.outcome for r in results)
    vacuous = sum(1 for r in results if r.outcome == "exact" and r.checked == 0)
    lines = [f"{len(results)} cases" + (f" in {seconds:.1f} s" if seconds is not None else "")
             + f": {sum(r.checked for r in results):,} inputs checked, "
             f"{sum(r.skipped for r in results):,} skipped (evaluate raised)"]
    lines += [f"  {outcome:16} {counts[outcome]}" for outcome in OUTCOMES if counts[outcome]]
    if vacuous:
        lines.append(f"  ({vacuous} exact cases had no input that evaluate accepts)")
    for r in results:
        if r.outcome not in ("exact", "refused"):
            lines += ["", "# " + "-" * 70, r.report()]
    return "\n".join(lines)


def test_fuzz_corners_exact_or_refused():
    """On a fixed seed, every corner case compiles exactly or is refused clearly."""
    results = campaign(120, seed=1)
    bad = [r for r in results if r.outcome in BAD_OUTCOMES]
    if bad:
        pytest.fail(summary(bad), pytrace=False)
    assert sum(r.outcome == "exact" and r.checked > 0 for r in results) >= 40, summary(results)


@pytest.mark.slow
def test_fuzz_corners_longer_campaign():
    """A longer corner campaign: no silent mismatch, crash, hang or memory blow-up."""
    results = campaign(600, seed=2, workers=2)
    bad = [r for r in results if r.outcome in BAD_OUTCOMES]
    if bad:
        pytest.fail(summary(bad), pytrace=False)


def main(argv: list[str] | None = None) -> int:
    """``make fuzz``: run a corner campaign and print its summary; status 1 on a bad case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="index of the first case")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--show", choices=("bad", "all"), default="bad",
                        help="print reproducers for bad cases (default) or for every case")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = campaign(args.count, args.seed, workers=args.workers, start=args.start,
                       verbose=True)
    print(summary(results, time.perf_counter() - start))
    if args.show == "all":
        for r in results:
            print("\n" + r.report())
    return 1 if any(r.outcome in BAD_OUTCOMES for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
