"""Fuzzing the compiler's corners: a compiled model must be exact or refused.

`rasplang.fuzzing` builds adversarial programs (ulp-close floats read categorically,
1 / 1.0 / True twins, tuples, wide vocabularies, partial functions, numbers at the edge
of floating point, causal models, Aggregates and selector combinations; numerical
programs aimed at float32; programs combining two optimizer folds) and classifies
each: exact, refused (a clear error naming a node or the vocabulary), warned-wrong
(wrong after a CompilerWarning), WRONG (silently, in float64, in float32 where the
model claims float32, or in its Hugging Face export), crash, slow or memory.

The default test run checks a few dozen cases on fixed seeds; a campaign runs with
``make fuzz CORNER_COUNT=... FLOAT32_COUNT=... SEED=...`` (this file as a script,
``--campaign corners|float32|folds``, ``--exports``), printing the counts and a
self-contained reproducer for every case that is neither exact nor refused.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import attrs
import numpy as np
import pytest

import rasplang
from rasplang.backend import CompiledModel
from rasplang.fuzzing import (
    BAD_OUTCOMES,
    CAMPAIGNS,
    OUTCOMES,
    Case,
    CaseResult,
    case_generator,
    check_case,
    fold_pair_case,
    run_campaign,
)

#: A small numerical program (a prefix mean, shifted), exact in float64 and float32.
MEAN_CASE = Case(0, 0, "float32", "[0, 1, 2]", 3, False, (
    "x = numerical(Map(lambda t: t, tokens))",
    "m = numerical(Aggregate(Select(indices, indices, Comparison.LEQ), x, default=0))",
    "program = numerical(Map(lambda v: v + 1, m))"))


def campaign(count: int, seed: int, *, workers: int = 1, start: int = 0,
             verbose: bool = False, kind: str = "corners", export: bool = False,
             ) -> list[CaseResult]:
    """Check cases ``start .. start + count - 1`` of ``seed`` of the campaign ``kind``
    (`rasplang.fuzzing.CAMPAIGNS`), in worker processes."""
    generate = case_generator(kind)
    cases = [generate(seed, i) for i in range(start, start + count)]
    results = []
    for result in run_campaign(cases, workers=workers, export=export):
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
    exact = [r for r in results if r.outcome == "exact"]
    if exact:
        f32 = sum(r.float32 == "exact" for r in exact)
        lines.append(f"  exact cases: {f32} also exact in float32, {len(exact) - f32} exact in "
                     "float64 only (config.float64_only)")
    exports = collections.Counter(r.export.split(" ")[0].rstrip(":") for r in results
                                  if r.export)
    if exports:
        lines.append("  exports: " + ", ".join(f"{n} {what}" for what, n in
                                               sorted(exports.items())))
        skipped = next((r.export for r in results if r.export.startswith("skipped")), "")
        if skipped:
            lines.append(f"  ({skipped})")
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


def test_fuzz_float32_cases_exact_or_refused():
    """On a fixed seed, float32 cases are exact (in float32 too where claimed) or refused."""
    results = campaign(16, seed=1, kind="float32")
    bad = [r for r in results if r.outcome in BAD_OUTCOMES]
    if bad:
        pytest.fail(summary(bad), pytrace=False)
    assert sum(r.float32 == "exact" and r.checked > 0 for r in results) >= 4, summary(results)


def test_float32_is_checked_where_the_model_claims_it():
    """A model exact in float64 is run in float32 too: a float32 error is WRONG."""
    assert check_case(MEAN_CASE).float32 == "exact"
    run = CompiledModel.run

    def off_in_float32(self, batch, *, dtype=np.float64, **kwargs):
        out = run(self, batch, dtype=dtype, **kwargs)
        return [[v + 1e-3 for v in row] for row in out] if dtype == np.float32 else out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CompiledModel, "run", off_in_float32)
        result = check_case(MEAN_CASE)
    assert result.outcome == "WRONG" and result.detail.startswith("in float32: evaluate gives")


def test_float64_only_models_are_not_run_in_float32():
    """A model whose config says float64 only is checked in float64 and says why."""
    compile_ = rasplang.compile

    def float64_only(*args, **kwargs):
        model = compile_(*args, **kwargs)
        model.config = attrs.evolve(model.config, float64_only="a test's reason")
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rasplang, "compile", float64_only)
        result = check_case(MEAN_CASE)
    assert result.outcome == "exact" and result.float32 == "float64 only (a test's reason)"


def test_fold_pair_cases_exact_or_refused():
    """A few fold pairs (side by side, fed, causal) through the fuzzer: exact or refused."""
    n = len(pytest.importorskip("rasplang.fold_cases").CASES)
    total = 2 * (n * (n + 1) // 2 + n * n)  # side by side, fed; non-causal, causal
    for index in (0, 5, n * (n + 1) // 2 + 3, total - 1):
        result = check_case(fold_pair_case(0, index))
        assert result.outcome == "exact" and result.checked == 120, result.report()
    assert fold_pair_case(0, total).theme == fold_pair_case(0, 0).theme


def test_fold_pair_campaign_without_its_module_says_so(monkeypatch):
    """Without rasplang/fold_cases.py the folds campaign names the missing module."""
    monkeypatch.delattr(rasplang, "fold_cases", raising=False)
    monkeypatch.setitem(sys.modules, "rasplang.fold_cases", None)
    with pytest.raises(ModuleNotFoundError, match=r"'folds' campaign needs .*fold_cases"):
        case_generator("folds")


def test_export_check_without_torch_is_skipped(monkeypatch):
    """Without torch the export check records that it skipped, and the case stays exact."""
    monkeypatch.setitem(sys.modules, "torch", None)
    result = check_case(MEAN_CASE, export=True)
    assert result.outcome == "exact" and result.export.startswith("skipped (torch")


def test_export_check_loads_the_saved_model_back():
    """The export check saves, loads with transformers and compares every input."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    for causal in (False, True):
        result = check_case(attrs.evolve(MEAN_CASE, causal=causal), export=True)
        kind = "gpt2" if causal else "bert"
        assert result.outcome == "exact", result.report()
        assert result.export.startswith(f"exact ({kind}, "), result.export


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
    parser.add_argument("--campaign", choices=CAMPAIGNS, default="corners",
                        help="which generator: adversarial corners (default), float32, or "
                             "pairs of optimizer folds (rasplang/fold_cases.py)")
    parser.add_argument("--exports", action="store_true",
                        help="also check each exact case's Hugging Face export (needs torch "
                             "and transformers; skipped with a message without them)")
    parser.add_argument("--show", choices=("bad", "all"), default="bad",
                        help="print reproducers for bad cases (default) or for every case")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        results = campaign(args.count, args.seed, workers=args.workers, start=args.start,
                           verbose=True, kind=args.campaign, export=args.exports)
    except ModuleNotFoundError as exc:
        print(f"{args.campaign} campaign: {exc}", file=sys.stderr)
        return 1
    print(f"{args.campaign} campaign, seed {args.seed}: "
          + summary(results, time.perf_counter() - start))
    if args.show == "all":
        for r in results:
            print("\n" + r.report())
    return 1 if any(r.outcome in BAD_OUTCOMES for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
