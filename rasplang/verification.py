"""Verification: is this compiled model exactly this program?

`verify` analyses the program once (`rasplang.analyze`), gives that analysis to the
batched interpreter (`rasplang.interpreter.Plan`) and to the compiler, so no function of
the program is called twice on a value, then runs the interpreter and the model's
batched forward pass on the same inputs and compares their outputs: categorical
outputs exactly with ``==`` (the analysis's notion of one value: ``1``, ``1.0`` and
``True`` are one value, which a compiled model stores in one direction; None matches
only None), numerical ones within `NUMERICAL_TOLERANCE`. Inputs (`rasplang.verify_inputs`)
are every sequence of every length ``1..max_seq_len`` when there are at most
`EXHAUSTIVE_LIMIT` of them, else a seeded random sample with lengths spread uniformly.
A run of more than `MAX_INPUTS` inputs (``4`` tokens up to length 20 is about 1.5e12)
is refused before anything is compiled, unless ``max_inputs`` allows it.
They are generated batch by batch (memory does not grow with the number of inputs);
each batch holds sequences of one length, so the model never sees padding.

For the first `MAX_REPORTED` mismatching inputs the report locates the first node
whose value, decoded from the residual stream right after the sublayer that writes
it, differs from `rasplang.evaluate_all`'s: that node's layer is where the model and
the program part.

Ctrl-C during the run stops it and raises `VerifyInterrupted`, a KeyboardInterrupt
that holds the report of the inputs checked so far (``interrupted=True``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

import attrs
import numpy as np

from rasplang.analysis import analyze, typed_key
from rasplang.divergence import (
    NUMERICAL_TOLERANCE,
    NUMERICAL_TOLERANCE32,
    Divergence,
    _same,
    first_divergence,
)
from rasplang.domain import Exhaustive
from rasplang.evaluator import EvaluationError, evaluate
from rasplang.nodes import RASPExpr
from rasplang.verify_inputs import (  # noqa: F401  (re-exported)
    EXHAUSTIVE_LIMIT,
    MAX_INPUTS,
    TooManyInputsError,
    _all_inputs,
    _random_inputs,
    check_input_count,
    count_inputs,
)

#: How many random inputs `verify` checks when it samples and no ``samples`` is given.
DEFAULT_SAMPLES = 10_000
#: Largest attention-score tensor (elements) one forward call may build.
FORWARD_ELEMENTS = 1 << 22
#: How many counterexamples a report keeps (all mismatches are counted).
MAX_REPORTED = 20
#: The progress bar appears only after this many seconds (and only on a terminal).
PROGRESS_DELAY_S = 1.0


@attrs.frozen
class Mismatch:
    """One input on which the model's output differs from the program's."""

    input: list[Any]
    expected: list[Any]
    got: list[Any]
    divergence: Divergence | None

    def __str__(self) -> str:
        text = f"input {self.input!r}: expected {self.expected!r}, got {self.got!r}"
        if self.divergence is not None:
            text += f"\n    first divergence: {self.divergence}"
        return text


@attrs.define(eq=False)
class VerifyReport:
    """What `verify` found.

    ``checked`` inputs were compared (of ``total`` planned); ``n_mismatches`` of them
    disagree and ``mismatches`` keeps the first `MAX_REPORTED`; ``skipped`` inputs make
    `rasplang.evaluate` raise (they are outside the program's domain and are not
    compared; ``undefined`` keeps the first `MAX_REPORTED` of them with the error, e.g.
    a categorical Aggregate that selects several different values); ``interrupted`` is
    True after Ctrl-C. Times are in seconds.
    """

    program: str
    vocab: tuple[Any, ...]
    max_seq_len: int
    causal: bool
    exhaustive: bool
    total: int
    checked: int = 0
    skipped: int = 0
    n_mismatches: int = 0
    mismatches: list[Mismatch] = attrs.field(factory=list)
    undefined: list[tuple[list[Any], str]] = attrs.field(factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    compile_seconds: float | None = None
    model: Any = attrs.field(default=None, repr=False)

    @property
    def agrees(self) -> bool:
        """No mismatch, and every planned input was checked (or skipped): the model agrees
        with the program wherever the program is defined, also when that is nowhere."""
        return (self.n_mismatches == 0 and not self.interrupted
                and self.checked + self.skipped == self.total)

    @property
    def ok(self) -> bool:
        """The verdict: `agrees`, and at least one input was checked (a program that raises
        on every input proves nothing about its model)."""
        return self.agrees and self.checked > 0

    def summary(self) -> str:
        """A few lines for people: counts, time, verdict, then the counterexamples.

        The verdict is ``OK`` when every input was checked and agrees, ``OK on N inputs;
        M raise in the program`` when the program raises on some (they are skipped),
        ``nothing checked`` when it raises on all (or none was planned), and ``MISMATCH``
        or ``INCOMPLETE`` otherwise."""
        how = "every input" if self.exhaustive else "random inputs"
        lines = [
            f"verified {self.program!r} on {self.checked:,} of {plural(self.total, 'input')} "
            f"({how} of length 1..{self.max_seq_len} over {plural(len(self.vocab), 'token')}"
            f"{', causal' if self.causal else ''}) in {self.seconds:.2f} s: "
            f"{plural(self.n_mismatches, 'mismatch', 'mismatches')}"
            + (f", {plural(self.skipped, 'input')} skipped (evaluate raises)"
               if self.skipped else "")
            + (" [interrupted]" if self.interrupted else ""),
            self._verdict(),
        ]
        if self.n_mismatches > len(self.mismatches):
            lines.append(f"first {len(self.mismatches)} counterexamples:")
        lines += [f"  {m}" for m in self.mismatches]
        if self.undefined:
            lines.append(f"first {len(self.undefined)} inputs where evaluate raises:")
            lines += [f"  {xs!r}: {error}" for xs, error in self.undefined]
        return "\n".join(lines)

    def _verdict(self) -> str:
        if not self.agrees:
            return "INCOMPLETE" if self.n_mismatches == 0 else "MISMATCH"
        if not self.checked:
            return (f"nothing checked: all {plural(self.skipped, 'input')} raise in the program"
                    if self.skipped else "nothing checked: no input was planned")
        if not self.skipped:
            return "OK"
        return f"OK on {plural(self.checked, 'input')}; {self.skipped:,} raise in the program"

    def __str__(self) -> str:
        return self.summary()


def plural(n: int, word: str, many: str | None = None) -> str:
    """``n`` and ``word`` in the right number: ``1 layer``, ``2 layers``, ``1,364 inputs``."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


class VerifyInterrupted(KeyboardInterrupt):
    """Ctrl-C during `verify`: a KeyboardInterrupt (so a script stops) whose ``report``
    covers the inputs checked before it."""

    def __init__(self, report: VerifyReport):
        super().__init__(f"verify interrupted after {plural(report.checked, 'input')} "
                         f"checked of {report.total:,}")
        self.report = report


def verify(
    program: RASPExpr,
    vocab: Iterable[Any],
    max_seq_len: int,
    *,
    model: Any = None,
    causal: bool = False,
    exhaustive: bool | None = None,
    samples: int | None = None,
    seed: int = 0,
    batch_size: int = 8192,
    progress: bool | None = None,
    max_inputs: int | None = MAX_INPUTS,
    client: Any = None,
    dtype: Any = np.float64,
) -> VerifyReport:
    """Check that ``model`` (compiled from ``program`` when None) computes ``program``.

    Compares the batched interpreter with the model's forward pass on every input of
    length ``1..max_seq_len`` over ``vocab`` (``exhaustive=True``), on ``samples``
    seeded random inputs (``False``, or ``samples`` given), or, with neither given, on
    every input when there are at most `EXHAUSTIVE_LIMIT` of them and on 10,000 random
    inputs otherwise. Returns a
    `VerifyReport`; ``report.ok`` is the verdict. ``progress`` forces the progress bar
    on or off (default: shown on a terminal when the run takes over a second).

    A run of more than ``max_inputs`` inputs (default `MAX_INPUTS`, 10^7; None for no
    limit) raises `TooManyInputsError`, a ValueError that gives the count, before
    anything is compiled or run: every input of length 1..20 over 4 tokens is about
    1.5e12 inputs. Errors of the compiler (`UnsupportedProgramError`, ...) propagate.

    ``dtype`` is the float type the model runs in (``np.float32`` as TransformerLens
    and torch users run it; a model exact only in float64 refuses it with a
    ValueError saying why). Numerical outputs are compared within
    `NUMERICAL_TOLERANCE` in float64 and `NUMERICAL_TOLERANCE32` in float32.

    ``model`` may also be a ``transformers`` model exported by ``save_pretrained`` (and
    loaded back with ``from_pretrained``): it then runs as its users run it, text through
    the tokenizer saved beside it, the model in the dtype it was loaded in, and
    `rasplang.backend.hf.decode` (`rasplang.backend.hf_verify`; ``dtype`` and ``client``
    do not apply).

    ``client`` (a ``dask.distributed.Client``) checks the inputs on its workers, in
    shards (`rasplang.scale`); the report is the one a single process gives. Without it
    nothing imports Dask.

    >>> import rasplang as rl
    >>> report = rl.verify(rl.Map(lambda x: x + 1, rl.tokens), [1, 2, 3], 3)
    >>> report.ok, report.checked, report.n_mismatches
    (True, 39, 0)
    """
    from rasplang.interpreter import Plan

    if max_seq_len < 1:
        raise ValueError(f"max_seq_len must be at least 1, got {max_seq_len}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if exhaustive is None and samples is not None:
        exhaustive = False  # samples asked for: check that many, as the CLI does
    samples = DEFAULT_SAMPLES if samples is None else samples
    if samples < 0:
        raise ValueError(f"samples must be non-negative, got {samples}")
    vocab = tuple(vocab)
    exhaustive, total = check_input_count(len(vocab), max_seq_len, exhaustive, samples,
                                          max_inputs)
    analysis = analyze(program, vocab, max_seq_len)  # the one analysis of this run
    plan = Plan(program, vocab, max_seq_len, causal, analysis=analysis)
    compile_seconds = None
    if model is None:
        from rasplang.backend import compile as compile_program

        start = time.perf_counter()
        model = compile_program(program, plan.vocab, max_seq_len, causal=causal,
                                analysis=analysis)
        compile_seconds = time.perf_counter() - start
    checker = _checker(plan, model, dtype, client)
    _check_same_program(analysis, model)
    n_vocab = len(plan.vocab)
    if exhaustive:
        batches = _all_inputs(n_vocab, max_seq_len, batch_size)
    else:
        batches = _random_inputs(n_vocab, max_seq_len, samples, seed, batch_size)
    report = VerifyReport(plan.labels[program], plan.vocab, max_seq_len, bool(causal),
                          bool(exhaustive), total, compile_seconds=compile_seconds, model=model)
    bar = _progress_bar(total, progress)
    start = time.perf_counter()
    try:
        if client is not None:
            from rasplang.scale import verify_sharded
            from rasplang.verify_inputs import sampled_domain

            domain = (Exhaustive(n_vocab, tuple(range(1, max_seq_len + 1))) if exhaustive
                      else sampled_domain(n_vocab, max_seq_len, samples, seed))
            verify_sharded(client, checker, report, domain, batch_size, bar)
        else:
            for codes in batches:
                tally(checker, codes, report)
                if bar is not None:
                    bar.update(len(codes))
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        if bar is not None:
            bar.close()
        report.seconds = time.perf_counter() - start
    if report.interrupted:  # stop the caller too, with the inputs checked so far
        raise VerifyInterrupted(report)
    return report


def tally(checker: _Checker, codes: np.ndarray, report: VerifyReport) -> None:
    """Check one batch of inputs (codes ``[b, n]``) and add its counts to ``report``."""
    bad, skipped = checker.check(codes)
    report.checked += len(codes) - len(skipped)
    report.skipped += len(skipped)
    report.n_mismatches += len(bad)
    for row in bad[: MAX_REPORTED - len(report.mismatches)]:
        report.mismatches.append(checker.explain(codes[row]))
    for row in skipped[: MAX_REPORTED - len(report.undefined)]:
        report.undefined.append(checker.undefined(codes[row]))


def _progress_bar(total: int, progress: bool | None) -> Any:
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a convenience
        return None
    return tqdm(total=total, unit="seq", unit_scale=True, delay=PROGRESS_DELAY_S,
                desc="verify", file=sys.stderr)


# ---------------------------------------------------------------------- comparing


def _check_same_program(analysis: Any, model: Any) -> None:
    """Refuse a model whose recorded program fingerprint is not ``analysis``'s program's.

    Fingerprints are comparable only on the model's own domain (the same vocabulary, in
    the same order, and length); elsewhere the comparison is left to the inputs."""
    from rasplang.fingerprint import fingerprint

    cfg = model.config
    recorded = getattr(cfg, "program_sha256", "")
    if not recorded or tuple(analysis.vocab) != tuple(cfg.vocab) or \
            analysis.max_seq_len != cfg.max_seq_len:
        return
    if fingerprint(analysis) != recorded:
        label = analysis.labels[analysis.program]
        raise ValueError(f"this model was compiled from another program than {label!r} (its "
                         f"program fingerprint {recorded[:12]}... differs); compile {label!r} "
                         "again, or verify the program the model was compiled from")


def _checker(plan: Any, model: Any, dtype: Any, client: Any) -> Any:
    """The checker for ``model``: `_Checker` for a compiled model, or for a model exported
    to Hugging Face (`rasplang.backend.hf_verify`) one that runs it as a user does."""
    from rasplang.backend import hf_verify

    if not hf_verify.is_exported(model):
        return _Checker(plan, model, dtype)
    if client is not None:
        raise ValueError("verify runs an exported Hugging Face model in this process only; "
                         "pass client=None")
    return hf_verify.ExportChecker(plan, model)


class _Checker:
    """The program's interpreter plan and the model's weights, ready to compare batches."""

    def __init__(self, plan: Any, model: Any, dtype: Any = np.float64):
        cfg = model.config
        if bool(cfg.causal) != plan.causal:
            raise ValueError(f"the model was compiled with causal={cfg.causal} but "
                             f"verify was asked for causal={plan.causal}")
        if plan.max_seq_len > cfg.max_seq_len:
            raise ValueError(f"max_seq_len {plan.max_seq_len} exceeds the model's "
                             f"max_seq_len {cfg.max_seq_len}")
        ids = model.input_encoder.encoding_map
        missing = [t for t in plan.vocab if t not in ids or t in (cfg.bos, cfg.pad)]
        if missing:
            raise ValueError(f"tokens {missing!r} are not in the model's vocabulary "
                             f"{list(cfg.vocab)}")
        self.plan = plan
        self.model = model
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float64, np.float32):
            raise ValueError(f"dtype must be float64 or float32, got {self.dtype}")
        model.forward(np.zeros((1, 1), dtype=np.int64) + model.input_encoder.bos_id,
                      dtype=self.dtype)  # a model exact in float64 only refuses float32 here
        self.tolerance = NUMERICAL_TOLERANCE if self.dtype == np.float64 else \
            NUMERICAL_TOLERANCE32
        self.n_heads = max(1, cfg.n_heads)
        self.token_ids = np.array([ids[t] for t in plan.vocab], dtype=np.int64)
        self.bos_id = model.input_encoder.bos_id
        self.numerical = cfg.output_encoding == "numerical"
        self.values = tuple(model.output_encoder.values)
        self._equal: tuple[Any, np.ndarray] | None = None
        self._analysis: Any = None

    def logits(self, codes: np.ndarray) -> np.ndarray:
        """The model's output logits ``[b, n, d_vocab_out]`` (BOS dropped).

        Runs the forward pass on slices whose attention scores ``[b, H, T, T]`` stay
        under `FORWARD_ELEMENTS`, so long sequences do not blow up memory.
        """
        n_pos = codes.shape[1] + 1
        step = max(1, FORWARD_ELEMENTS // (self.n_heads * n_pos * n_pos))
        parts = []
        for start in range(0, len(codes), step):
            part = codes[start:start + step]
            ids = np.empty((part.shape[0], n_pos), dtype=np.int64)  # (b, 1 + n)
            ids[:, 0] = self.bos_id
            ids[:, 1:] = self.token_ids[part]
            logits = self.model.forward(ids, dtype=self.dtype)  # the structured forward
            parts.append(np.asarray(logits)[:, 1:])  # (b, n, d_vocab_out)
        return np.concatenate(parts)

    def expected(self, codes: np.ndarray) -> tuple[np.ndarray, Any]:
        """The rows where the program is defined, and the interpreter's output on them
        (None when it is defined on none)."""
        keep = np.arange(len(codes))
        try:
            out = self.plan.run_arrays(codes, np.full(len(codes), codes.shape[1])).output
        except EvaluationError:
            keep = np.array([i for i in range(len(codes)) if self._defined(codes[i])],
                            dtype=np.int64)
            if keep.size == 0:
                return keep, None
            out = self.plan.run_arrays(codes[keep], np.full(len(keep), codes.shape[1])).output
        return keep, out

    def check(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows that disagree, and the rows skipped (evaluate raises there)."""
        keep, out = self.expected(codes)
        if out is None:
            return np.zeros(0, dtype=np.int64), np.arange(len(codes))
        logits = self.logits(codes[keep])
        if self.numerical:
            expected = out.values  # (b, n), NaN for None
            got = logits[..., 0]
            none = logits[..., 1] > 0.5 if logits.shape[-1] > 1 else np.isnan(got)  # flag
            tol = self.tolerance * np.maximum(1.0, np.abs(expected))
            close = np.where(np.isnan(expected), none, ~none & (np.abs(got - expected) <= tol))
            bad = ~close.all(axis=1)
        else:
            bad = ~self._agrees(logits, out).all(axis=1)
        return keep[np.flatnonzero(bad)], np.setdiff1d(np.arange(len(codes)), keep)

    def _agrees(self, logits: np.ndarray, out: Any) -> np.ndarray:
        """``[b, n]`` bool: the model's decoded value ``==`` the interpreter's.

        Categorical values compare with ``==``, the analysis's notion of one value (a
        compiled model keeps one direction for ``1``, ``1.0`` and ``True``).
        """
        k = len(self.values)
        if k == 0:
            idx = np.full(logits.shape[:2], 0)
        else:
            idx = logits.argmax(axis=-1)  # (b, n)
            best = np.take_along_axis(logits, idx[..., None], axis=-1)[..., 0]
            idx = np.where(best > 0.5, idx, k)
        return self._equal_table(out.table)[idx, out.codes]

    def _equal_table(self, table: Any) -> np.ndarray:
        """``[k + 1, len(table)]``: model value (None last) ``==`` table value."""
        if self._equal is None or self._equal[0] is not table:
            equal = np.array([[_same(t, v, False) for t in table.values]
                              for v in (*self.values, None)], dtype=bool)
            self._equal = (table, equal.reshape(len(self.values) + 1, len(table.values)))
        return self._equal[1]

    def _defined(self, row: np.ndarray) -> bool:
        return self._error(row) is None

    def _error(self, row: np.ndarray) -> str | None:
        """What `evaluate` raises on this input, or None where it is defined."""
        try:
            evaluate(self.plan.program, self._tokens(row), causal=self.plan.causal)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def undefined(self, row: np.ndarray) -> tuple[list[Any], str]:
        """A skipped input and the error `evaluate` raises on it."""
        return self._tokens(row), self._error(row) or "evaluate raised"

    def _tokens(self, row: np.ndarray) -> list[Any]:
        return [self.plan.vocab[c] for c in row.tolist()]

    def explain(self, row: np.ndarray) -> Mismatch:
        """The counterexample for one input: outputs and the first divergence."""
        xs = self._tokens(row)
        expected = evaluate(self.plan.program, xs, causal=self.plan.causal)
        logits = self.logits(row[None, :])
        got = self.model.output_encoder.decode(logits)[0].tolist()
        if self._analysis is None:
            self._analysis = self.plan.analysis
            cfg = self.model.config
            if cfg.max_seq_len != self._analysis.max_seq_len or set(map(typed_key, cfg.vocab)) \
                    != set(map(typed_key, self._analysis.vocab)):  # a model for another domain
                self._analysis = analyze(self.plan.program, cfg.vocab, cfg.max_seq_len)
        divergence = first_divergence(self.model, self.plan.program, xs, analysis=self._analysis)
        return Mismatch(xs, expected, got, divergence)
