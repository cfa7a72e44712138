"""An adversarial fuzzer for the compiler's promise: a compiled model is exact or refused.

`rasplang.fuzz_cases` generates the corner cases (ulp-close floats read categorically,
type twins, tuples, wide vocabularies, partial functions, numbers at the edge of
floating point, causal), `rasplang.fuzz_float32` numerical programs aimed at float32
rounding, and ``rasplang.fold_cases`` programs that combine two of the optimizer's folds
(`CAMPAIGNS`, `case_generator`), each case as runnable source. `check_case` classifies
one case (`OUTCOMES`), running the model in float64 and, unless it is exact in float64
only, in float32, and optionally its Hugging Face export (`check_export`);
`run_campaign` runs cases in worker processes with a per-case time budget and memory
limit, so a hang or a memory blow-up is recorded rather than taking the campaign down.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import signal
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from multiprocessing.connection import wait
from typing import Any

import attrs
import numpy as np

from rasplang.divergence import NUMERICAL_TOLERANCE, NUMERICAL_TOLERANCE32
from rasplang.fuzz_cases import CASE_MAX_BYTES, THEMES, Case, generate_case
from rasplang.fuzz_float32 import generate_float32_case

__all__ = ["BAD_OUTCOMES", "CAMPAIGNS", "EXHAUSTIVE_LIMIT", "NUMERICAL_TOLERANCE",
           "NUMERICAL_TOLERANCE32", "OUTCOMES", "SAMPLES", "THEMES", "Case", "CaseResult",
           "case_generator", "check_case", "check_export", "fold_pair_case", "generate_case",
           "generate_float32_case", "run_campaign"]

#: How a case ended, in report order.
OUTCOMES = ("exact", "refused", "warned-wrong", "WRONG", "crash", "slow", "memory",
            "generator-error")
#: Outcomes that break the promise (``generator-error`` is a bug in `rasplang.fuzz_cases`).
BAD_OUTCOMES = frozenset({"WRONG", "crash", "slow", "memory", "generator-error"})
#: Check every input when the domain has at most this many, else `SAMPLES` of them.
EXHAUSTIVE_LIMIT = 2000
SAMPLES = 300
# Numerical outputs agree as verify compares them (`rasplang.divergence`):
# ``|got - expected| <= tol * max(1, |expected|)`` with ``tol`` `NUMERICAL_TOLERANCE` in
# float64 and `NUMERICAL_TOLERANCE32` in float32, the compiler's promise.

# ---------------------------------------------------------------------------- checking


@attrs.define
class CaseResult:
    """What checking one case found."""

    case: Case
    outcome: str
    detail: str = ""
    positions: tuple[int, ...] | None = None  # the first mismatching input, as vocab indices
    checked: int = 0
    skipped: int = 0
    seconds: float = 0.0
    float32: str = ""  # "exact", "float64 only (why)", or "" (not run in float32)
    export: str = ""  # the export check: "exact (...)", "refused: ...", "skipped ..." or ""

    def report(self) -> str:
        """The outcome as comments, then the reproducer."""
        header = f"{self.case.name}, max_seq_len {self.case.max_seq_len}, causal " \
                 f"{self.case.causal}: {self.outcome}: {self.detail}".rstrip()
        return "\n".join(["# " + line for line in header.splitlines()]
                         + [self.case.reproducer(self.positions)])


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def _labels(program: Any) -> set[str]:
    from rasplang.graph import topological_order, unique_labels

    return set(unique_labels(topological_order(program)).values())


def _classify_error(exc: BaseException, labels: set[str]) -> tuple[str, str]:
    from rasplang.analysis import AnalysisError, UnsupportedProgramError

    text = f"{type(exc).__name__}: {exc}"
    where = "\n" + "".join(traceback.format_exception(exc)[-4:])
    if isinstance(exc, MemoryError):
        return "memory", text + where
    if isinstance(exc, UnsupportedProgramError):
        # Problems may name a node's derived part, e.g. ``aggregate_5:categorical``, or
        # a primitive the model always embeds (ModelTooLarge lists ``tokens``).
        known = labels | {"tokens", "indices", "length"}
        named = any(str(label).split(":")[0] in known for label, _ in exc.problems)
        return ("refused" if named else "crash"), text
    if isinstance(exc, (AnalysisError, ValueError, TypeError)):
        # A clear refusal names the node it cannot build, or the vocabulary it rejects.
        named = any(label in str(exc) for label in labels) or "vocab" in str(exc)
        return ("refused" if named else "crash"), text + ("" if named else " (names no node)")
    return "crash", text + where


def _inputs(case: Case, n_vocab: int) -> Iterator[tuple[int, ...]]:
    """Every input when there are at most `EXHAUSTIVE_LIMIT`, else `SAMPLES` of them: each
    token repeated to full length (where a mean's selection is widest or narrowest), then
    seeded random inputs, half of them of full length (where softmax leaks most)."""
    domain = sum(n_vocab**n for n in range(1, case.max_seq_len + 1))
    if domain <= EXHAUSTIVE_LIMIT:
        for n in range(1, case.max_seq_len + 1):
            yield from np.ndindex(*(n_vocab,) * n)
        return
    for token in range(min(n_vocab, SAMPLES // 10)):
        yield (token,) * case.max_seq_len
    rng = np.random.default_rng([case.seed, case.index, 1])
    for k in range(SAMPLES - min(n_vocab, SAMPLES // 10)):
        n = case.max_seq_len if k % 2 else int(rng.integers(1, case.max_seq_len + 1))
        yield tuple(rng.integers(0, n_vocab, size=n).tolist())


def _strictly_equal(got: Any, expected: Any) -> bool:
    """Same type and value, recursively; NaN equals NaN (categorical outputs are exact)."""
    if type(got) is not type(expected):
        return False
    if isinstance(expected, (tuple, list)):
        return len(got) == len(expected) and all(map(_strictly_equal, got, expected))
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(got)
    try:
        return bool(got == expected)
    except Exception:
        return False


def _loosely_equal(got: Any, expected: Any) -> bool:
    """Equal by ``==`` (so 1, 1.0 and True agree), recursively; NaN equals NaN."""
    if isinstance(expected, (tuple, list)) and isinstance(got, (tuple, list)):
        return len(got) == len(expected) and all(map(_loosely_equal, got, expected))
    try:
        return bool(got == expected) or (got != got and expected != expected)
    except Exception:
        return False


def _numerically_equal(got: Any, expected: Any, tolerance: float = NUMERICAL_TOLERANCE
                       ) -> bool:
    if got is None or expected is None:
        return got is expected
    try:
        g, e = float(got), float(expected)
    except (TypeError, ValueError, OverflowError):
        return _strictly_equal(got, expected)
    if math.isnan(e) or math.isinf(e):
        return _strictly_equal(g, e)
    return abs(g - e) <= tolerance * max(1.0, abs(e))


def check_case(case: Case, *, compile_budget: float = 30.0, check_budget: float = 60.0,
               export: bool = False) -> CaseResult:
    """Compile ``case`` and compare the model with `rasplang.evaluate` (see `OUTCOMES`).

    Every input is checked in float64, then in float32 unless the model is exact in
    float64 only (``config.float64_only``): a float32 mismatch is ``WRONG`` too.
    ``export`` also checks the Hugging Face export (`check_export`).
    """
    start = time.perf_counter()
    result = _check(case, compile_budget, check_budget, export)
    result.seconds = time.perf_counter() - start
    return result


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise `_Timeout` in the body after ``seconds``."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _check(case: Case, compile_budget: float, check_budget: float, export: bool
           ) -> CaseResult:
    import rasplang as rl
    from rasplang.backend import CompilerWarning

    try:
        program, vocab = case.build()
    except Exception as exc:
        return CaseResult(case, "generator-error", f"{type(exc).__name__}: {exc}")
    labels = _labels(program)
    try:
        with _time_limit(compile_budget), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            analysis = rl.analyze(program, vocab, case.max_seq_len)
            model = rl.compile(program, vocab, case.max_seq_len, causal=case.causal,
                               max_bytes=CASE_MAX_BYTES, analysis=analysis)
    except _Timeout:
        return CaseResult(case, "slow", f"compile took over {compile_budget:g} s")
    except BaseException as exc:
        outcome, detail = _classify_error(exc, labels)
        return CaseResult(case, outcome, detail)
    warned = [str(w.message) for w in caught if issubclass(w.category, CompilerWarning)]
    numerical = rl.is_numerical(program)
    twins = bool(analysis.type_collisions.get(program))  # the type rule: one value per ==
    result = CaseResult(case, "exact")
    stage = "rasplang.evaluate"
    try:
        with _time_limit(check_budget), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch = _expected(case, program, vocab, result)
            xs = [[vocab[i] for i in p] for p, _ in batch]
            stage = "model.run"
            if _mismatch(result, batch, model.run(xs) if xs else [], warned,
                         numerical=numerical, float32=False, twins=twins):
                return result
            if model.config.float64_only:
                result.float32 = f"float64 only ({model.config.float64_only})"
            else:
                stage = "model.run(dtype=np.float32)"
                got = model.run(xs, dtype=np.float32) if xs else []
                if _mismatch(result, batch, got, warned, numerical=numerical, float32=True,
                             twins=twins):
                    return result
                result.float32 = "exact"
    except _Timeout:
        result.outcome, result.detail = "slow", f"checking took over {check_budget:g} s"
        return result
    except BaseException as exc:
        result.outcome, detail = _classify_error(exc, set())
        result.detail = f"{stage} raised {detail}"
        return result
    if export:
        try:
            with _time_limit(compile_budget + check_budget):
                check_export(case, program, vocab, batch, result, twins=twins)
        except _Timeout:
            result.outcome = "slow"
            result.detail = f"the export took over {compile_budget + check_budget:g} s"
        except BaseException as exc:
            result.outcome, detail = _classify_error(exc, set())
            result.detail = f"the export raised {detail}"
    return result


def _expected(case: Case, program: Any, vocab: list[Any], result: CaseResult,
              ) -> list[tuple[tuple[int, ...], list[Any]]]:
    """``(positions, evaluate's outputs)`` for every input checked; inputs on which
    evaluate raises are counted in ``result.skipped``."""
    import rasplang as rl

    batch = []
    for positions in _inputs(case, len(vocab)):
        try:
            batch.append((positions, rl.evaluate(program, [vocab[i] for i in positions],
                                                 causal=case.causal)))
        except Exception:
            result.skipped += 1
    result.checked = len(batch)
    return batch


def _mismatch(result: CaseResult, batch: Sequence[tuple[tuple[int, ...], list[Any]]],
              got: Sequence[Sequence[Any]], warned: Sequence[str], *, numerical: bool,
              float32: bool, where: str = "", twins: bool = False) -> bool:
    """Record the first input whose outputs differ (``WRONG``, or ``warned-wrong`` after
    a CompilerWarning) and say whether there was one. Numerical outputs agree within
    `NUMERICAL_TOLERANCE` (float64) or `NUMERICAL_TOLERANCE32` (float32, verify's),
    categorical ones exactly (value and type), or by ``==`` where the output can take
    equal values of different types (``twins``: the model holds one value per ``==``
    class, the type rule of docs/design.md)."""
    tolerance = NUMERICAL_TOLERANCE32 if float32 else NUMERICAL_TOLERANCE
    same = _loosely_equal if twins else _strictly_equal
    for (positions, expected), out in zip(batch, got):
        if len(out) == len(expected) and all(
                _numerically_equal(g, e, tolerance) if numerical else same(g, e)
                for g, e in zip(out, expected)):
            continue
        result.outcome = "warned-wrong" if warned else "WRONG"
        result.positions = positions
        by_value = len(out) == len(expected) and all(map(_loosely_equal, out, expected))
        result.detail = (where + ("in float32: " if float32 else "")
                         + f"evaluate gives {expected!r}, model gives {out!r}"
                         + (" (equal values of different types)" if by_value else "")
                         + (f" (after CompilerWarning: {warned[0]})" if warned else ""))
        return True
    return False


def check_export(case: Case, program: Any, vocab: list[Any],
                 batch: Sequence[tuple[tuple[int, ...], list[Any]]], result: CaseResult,
                 twins: bool = False) -> None:
    """Compile ``case`` with LayerNorm, write it with ``save_pretrained``, load it back with
    ``transformers`` as a user would, and compare its decoded logits with evaluate's
    outputs on ``batch``: a mismatch is ``WRONG``. Records what happened in
    ``result.export``; without torch and transformers it records that it was skipped.
    ``twins``: the output can take equal values of different types (`_mismatch`)."""
    try:
        import torch
        import transformers
    except ImportError:
        result.export = "skipped (torch and transformers are not installed)"
        return
    import rasplang as rl
    from rasplang.backend.hf import architecture_for, decode

    transformers.utils.logging.disable_progress_bar()
    with contextlib.suppress(ImportError, AttributeError):
        import huggingface_hub

        huggingface_hub.utils.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = rl.compile(program, vocab, case.max_seq_len, causal=case.causal,
                               norm="layernorm", max_bytes=CASE_MAX_BYTES)
    except (rl.UnsupportedProgramError, ValueError) as exc:
        result.export = f"refused: {str(exc).splitlines()[0]}"
        return
    kind = architecture_for(model)
    auto = transformers.AutoModelForCausalLM if kind == "gpt2" \
        else transformers.AutoModelForMaskedLM
    with tempfile.TemporaryDirectory() as path, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model.save_pretrained(path)
        except ValueError as exc:
            result.export = f"refused: {exc}"
            return
        hf = auto.from_pretrained(path)
    dtype = next(hf.parameters()).dtype
    float32 = dtype != torch.float64
    cfg = model.config
    got: list[list[Any]] = []
    for start in range(0, len(batch), 256):
        seqs = [[vocab[i] for i in positions] for positions, _ in batch[start:start + 256]]
        ids = model.input_encoder.encode([[cfg.bos, *s] for s in seqs])
        mask = torch.as_tensor(ids != cfg.pad_id, dtype=torch.long)
        with torch.no_grad():
            logits = hf(torch.as_tensor(ids), attention_mask=mask).logits
        got += [row[:len(s)] for row, s in zip(decode(hf.config, logits), seqs)]
    where = f"the {kind.upper()} export ({str(dtype).removeprefix('torch.')}): "
    if not _mismatch(result, batch, got, (), numerical=rl.is_numerical(program),
                     float32=float32, where=where, twins=twins):
        result.export = f"exact ({kind}, {str(dtype).removeprefix('torch.')})"
    else:
        result.export = "WRONG"


#: The campaigns `make fuzz` runs: each a function ``(seed, index) -> Case``.
CAMPAIGNS = ("corners", "float32", "folds")


def case_generator(campaign: str) -> Any:
    """The ``(seed, index) -> Case`` function of ``campaign`` (one of `CAMPAIGNS`).

    ``folds`` reads ``rasplang.fold_cases`` (programs that combine two of the optimizer's
    folds) and says so when that module is missing.
    """
    if campaign == "corners":
        return generate_case
    if campaign == "float32":
        return generate_float32_case
    if campaign == "folds":
        _fold_cases()
        return fold_pair_case
    raise ValueError(f"campaign must be one of {CAMPAIGNS}, got {campaign!r}")


def _fold_cases() -> Any:
    try:
        from rasplang import fold_cases
    except ModuleNotFoundError as exc:
        if exc.name != "rasplang.fold_cases":
            raise
        raise ModuleNotFoundError(
            "the 'folds' campaign needs rasplang/fold_cases.py (pair_program and CASES: "
            "programs combining two optimizer folds), which is not there") from exc
    return fold_cases


def fold_pair_case(seed: int, index: int) -> Case:
    """Case ``index`` of the fold pairs (`rasplang.fold_cases.pair_program`): every pair
    of folds side by side, then every ordered pair with the second reading the first
    (``feed``), non-causal then causal; ``index`` wraps around, and ``seed`` rotates where
    the campaign starts."""
    fold_cases = _fold_cases()
    names = list(fold_cases.CASES)
    pairs = [(a, b, False) for i, a in enumerate(names) for b in names[i:]]
    pairs += [(a, b, True) for a in names for b in names]
    combos = [(a, b, feed, causal) for causal in (False, True) for a, b, feed in pairs]
    first, second, feed, causal = combos[(index + seed * 7919) % len(combos)]
    lines = ("from rasplang.fold_cases import pair_program",
             f"program = pair_program({first!r}, {second!r}, causal={causal}, feed={feed})")
    return Case(seed, index, f"folds {first}{'>' if feed else '+'}{second}",
                repr(list(fold_cases.VOCAB)), fold_cases.MAX_SEQ_LEN, causal, lines)


# ---------------------------------------------------------------------------- campaigns


def _worker(conn: Any, memory_limit: int, options: dict[str, Any]) -> None:
    import resource

    import rasplang.backend  # noqa: F401  (import before limiting the address space)

    if options["export"]:
        with contextlib.suppress(ImportError):  # check_export says it skipped
            import torch
            import transformers  # noqa: F401

            torch.set_num_threads(1)
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    while True:
        case = conn.recv()
        if case is None:
            return
        conn.send(check_case(case, **options))


@attrs.define
class _Slot:
    process: Any
    conn: Any
    case: Case | None = None
    started: float = 0.0


def run_campaign(cases: Sequence[Case], *, workers: int = 1, compile_budget: float = 30.0,
                 check_budget: float = 60.0, memory_limit: int = 4 << 30,
                 export: bool = False) -> Iterator[CaseResult]:
    """Check ``cases`` in ``workers`` processes; yield each result as it arrives.

    Each worker has an address-space limit of ``memory_limit`` bytes (so a blow-up is a
    MemoryError) and each case a time budget; a worker that does not answer within the
    budgets plus a grace period is killed and its case recorded as ``slow`` (or
    ``memory``/``crash`` when the worker died).
    """
    context = multiprocessing.get_context("spawn")
    hard_limit = (compile_budget + check_budget) * (2 if export else 1) + 30.0
    options = {"compile_budget": compile_budget, "check_budget": check_budget,
               "export": export}
    todo = list(reversed(cases))
    slots: list[_Slot] = []

    def start() -> _Slot:
        parent, child = context.Pipe()
        process = context.Process(target=_worker, daemon=True,
                                  args=(child, memory_limit, options))
        process.start()
        child.close()
        return _Slot(process, parent)

    def feed(slot: _Slot) -> None:
        if todo:
            slot.case, slot.started = todo.pop(), time.monotonic()
            slot.conn.send(slot.case)
        else:
            slot.case = None

    try:
        for _ in range(min(workers, len(cases))):
            slots.append(start())
            feed(slots[-1])
        while any(slot.case is not None for slot in slots):
            busy = [slot for slot in slots if slot.case is not None]
            ready = wait([slot.conn for slot in busy], timeout=5.0)
            for i, slot in enumerate(slots):
                if slot.case is None:
                    continue
                if slot.conn in ready:
                    try:
                        yield slot.conn.recv()
                        feed(slot)
                        continue
                    except EOFError:
                        slot.process.join(5)
                        code = slot.process.exitcode
                        outcome = "memory" if code == -signal.SIGKILL else "crash"
                        yield CaseResult(slot.case, outcome, f"worker died (exit code {code})")
                elif time.monotonic() - slot.started > hard_limit:
                    slot.process.kill()
                    slot.process.join()
                    yield CaseResult(slot.case, "slow", f"no answer within {hard_limit:g} s",
                                     seconds=hard_limit)
                else:
                    continue
                slots[i] = start()
                feed(slots[i])
    finally:
        for slot in slots:
            if slot.process.is_alive():
                slot.process.kill()
            slot.process.join()
