"""Fuzzing the compiler: random compilable programs, each compiled and verified.

Every program `rasplang.testing.random_program` builds is compiled; the compiler may
refuse it only with `UnsupportedProgramError` (a NotImplementedError), and a model it
builds must agree with the program on every input of the domain (`rasplang.verify`,
exhaustive, in float64 and, unless the model is exact in float64 only, in float32), and
with `rasplang.evaluate` on a few inputs run through `model.run` (an independent path:
the model's own decoding against the reference evaluator).

The default test run checks a few hundred programs; a longer campaign runs with
``make fuzz COUNT=... SEED=...`` (this file as a script) and prints a summary.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings

import attrs
import numpy as np
import pytest

import rasplang as rl
from rasplang.backend import CompilerWarning
from rasplang.testing import random_program

VOCABS = (("a", "b", "c"), (1, 2, 3), (0, 1, 2, 3))


@attrs.define
class FuzzResult:
    """What a fuzz campaign found."""

    programs: int = 0
    compiled: int = 0
    float32: int = 0  # compiled models verified in float32 too
    refused: collections.Counter = attrs.field(factory=collections.Counter)
    inputs: int = 0
    failures: list[str] = attrs.field(factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"{self.programs} programs: {self.compiled} compiled and verified on "
                 f"{self.inputs:,} inputs ({self.float32} in float32 too), "
                 f"{sum(self.refused.values())} refused, "
                 f"{len(self.failures)} failures, {self.seconds:.1f} s"]
        lines += [f"  refused {n}x: {reason}" for reason, n in self.refused.most_common(5)]
        lines += self.failures
        return "\n".join(lines)


def fuzz(count: int, seed: int, *, max_depth: int = 4, lengths: tuple[int, ...] = (5,),
         causal: bool = False, spot_checks: int = 8, float32: bool = True) -> FuzzResult:
    """Compile and verify ``count`` random programs; program ``i`` uses rng ``[seed, i]``.

    A model that agrees in float64 is verified in float32 too (``float32``), unless it is
    exact in float64 only (``model.config.float64_only``)."""
    result = FuzzResult()
    start = time.perf_counter()
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        vocab = VOCABS[i % len(VOCABS)]
        max_seq_len = lengths[i % len(lengths)]
        program = random_program(rng, vocab=list(vocab), max_depth=max_depth)
        result.programs += 1
        where = f"program {i} of seed {seed} (vocab {vocab}, max_seq_len {max_seq_len}" \
                f"{', causal' if causal else ''})"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CompilerWarning)
                model = rl.compile(program, vocab, max_seq_len, causal=causal)
        except rl.UnsupportedProgramError as exc:
            for _, reason in exc.problems:
                result.refused[reason.split(";")[0]] += 1
            continue
        except Exception as exc:
            result.failures.append(f"{where}: compile raised {type(exc).__name__}: {exc}\n"
                                   f"{rl.format_program(program)}")
            continue
        result.compiled += 1
        report = rl.verify(program, vocab, max_seq_len, model=model, causal=causal,
                           exhaustive=True)
        result.inputs += report.checked
        problems = [] if report.agrees else [report.summary()]
        if report.agrees and float32 and not model.config.float64_only:
            result.float32 += 1
            report = rl.verify(program, vocab, max_seq_len, model=model, causal=causal,
                               exhaustive=True, dtype=np.float32)
            problems += [] if report.agrees else [f"in float32: {report.summary()}"]
        for n in rng.integers(1, max_seq_len + 1, size=spot_checks).tolist():
            xs = [vocab[j] for j in rng.integers(0, len(vocab), size=n).tolist()]
            try:
                expected = rl.evaluate(program, xs, causal=causal)
            except Exception:
                continue
            got = model.run([xs])[0]
            if not all(_agree(g, e) for g, e in zip(got, expected)):
                problems.append(f"model.run({xs!r}) = {got!r}, evaluate gives {expected!r}")
        if problems:
            result.failures.append(f"{where}:\n{rl.format_program(program)}\n"
                                   + "\n".join(problems))
    result.seconds = time.perf_counter() - start
    return result


def _agree(got, expected) -> bool:
    if isinstance(got, float) and expected is not None:
        return abs(got - float(expected)) <= 1e-6 * max(1.0, abs(float(expected)))
    return got is expected if expected is None or got is None else got == expected


def test_fuzz_random_programs_verify_exactly():
    """200+ random programs compile and verify exactly (in float32 too where claimed)."""
    result = fuzz(240, seed=0)
    assert not result.failures, result.summary()
    assert result.compiled >= 200, result.summary()
    assert result.inputs >= 200 * 200
    assert result.float32 >= 150, result.summary()  # most models verified in float32 too


def test_fuzz_causal_programs_verify_exactly():
    """Random programs compiled causally verify against causal evaluation."""
    result = fuzz(120, seed=1, causal=True)
    assert not result.failures, result.summary()
    assert result.compiled >= 10, result.summary()


@pytest.mark.slow
def test_fuzz_longer_campaign():
    """A longer campaign: deeper programs, several lengths."""
    result = fuzz(2000, seed=2, max_depth=5, lengths=(4, 5, 6))
    assert not result.failures, result.summary()


def main(argv: list[str] | None = None) -> int:
    """``make fuzz``: run a campaign and print its summary; status 1 on any failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-depth", type=int, default=5)
    args = parser.parse_args(argv)
    total = FuzzResult()
    for causal in (False, True):
        result = fuzz(args.count, args.seed, max_depth=args.max_depth, lengths=(4, 5, 6),
                      causal=causal)
        print(f"{'causal' if causal else 'non-causal'}: {result.summary()}")
        total.failures += result.failures
    return 1 if total.failures else 0


if __name__ == "__main__":
    sys.exit(main())
