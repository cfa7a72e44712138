"""The README's main job (`make demo`, `rasplang demo`): compile, run, verify, one table.

For each program of `rasplang.lib.PROGRAMS`: build it, compile it for its vocabulary
and length (the library's: some programs are built for that length, e.g. sort keys made
unique for it), run the model on the program's example input, and verify the model
against the program on every input (or on `SAMPLES` random ones when there are more
than `EXHAUSTIVE_UP_TO`). Prints one table
(program, example input and the model's output, layers, d_model, parameters, compile
time, inputs verified, mismatches) and the programs the compiler refuses, with why.
Exits with status 1 if any model disagrees with its program.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

import rasplang
from rasplang.cli import plural
from rasplang.lib import PROGRAMS

#: Verify exhaustively up to this many inputs, else on SAMPLES random ones.
EXHAUSTIVE_UP_TO = 50_000
SAMPLES = 20_000


def _show(values: Sequence[Any]) -> str:
    def one(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    return "[" + " ".join(one(v) for v in values) + "]"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([fmt(headers), line, *(fmt(r) for r in rows)])


def run_one(name: str) -> list[str] | str:
    """The table row of one library program, or why the compiler refuses it."""
    from rasplang.backend import CompilerWarning

    entry = PROGRAMS[name]
    n = entry.max_seq_len
    program = entry.build(n)  # some programs depend on the length (sort's keys)
    try:
        with warnings.catch_warnings():
            # Spread Aggregates are exact where verified; the verify column shows it.
            warnings.simplefilter("ignore", CompilerWarning)
            start = time.perf_counter()
            model = rasplang.compile(program, entry.vocab, n)
            compile_s = time.perf_counter() - start
    except rasplang.UnsupportedProgramError as exc:
        by_reason: dict[str, list[str]] = {}
        for label, reason in exc.problems:
            by_reason.setdefault(reason, []).append(label)
        return "; ".join(f"{', '.join(labels)}: {reason}" for reason, labels in by_reason.items())
    output = model.run([list(entry.example)])[0]
    domain = sum(len(entry.vocab) ** k for k in range(1, n + 1))
    # No progress bar: it would stay on the terminal above the table.
    report = rasplang.verify(program, entry.vocab, n, model=model,
                             exhaustive=domain <= EXHAUSTIVE_UP_TO, samples=SAMPLES,
                             progress=False)
    cfg = model.config
    how = "all" if report.exhaustive else "random"
    return [name, _show(entry.example), _show(output), str(n), str(cfg.n_layers),
            str(cfg.d_model), f"{model.n_params:,}", f"{model.n_params_used:,}",
            f"{model.n_nonzero:,}", f"{compile_s * 1000:.1f}",
            f"{report.checked:,} {how}", f"{report.n_mismatches:,}"]


#: What the table's columns and symbols mean, and what to try next (printed below it).
LEGEND = """
params: every weight of the model, each layer padded to the widest; used: the weights
each head and MLP has at its own size (what it reads and writes); nonzero: the weights
that are not 0. inputs verified: how many inputs the model was checked on, "all" when
that is every input up to max_len. In the outputs, § fills sort_by_most_freq's
positions past its distinct tokens, _ is shift_fill's first position (its default), and
dyck's T, P and F say the prefix is balanced, open (it can still balance) or failed.

Next: rasplang compile reverse -o reverse.safetensors, then rasplang run
reverse.safetensors --input "a b c"; rasplang verify sort --max-seq-len 8; and the
tutorials at docs/tutorials/ (writing RASP, program to transformer, testing)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo and print the table; returns the process exit status."""
    start = time.perf_counter()
    rows, refused = [], []
    for name in PROGRAMS:
        row = run_one(name)
        if isinstance(row, str):
            refused.append(f"  {name}: {row}")
        else:
            rows.append(row)
    headers = ["program", "input", "model output", "max_len", "layers", "d_model", "params",
               "used", "nonzero", "compile ms", "inputs verified", "mismatches"]
    print(f"rasplang {rasplang.__version__}: library programs compiled to transformers, "
          "run, and verified against the program\n")
    print(_table(headers, rows, right=set(range(3, 12))))
    if refused:
        print("\nnot compiled (the compiler says why):")
        print("\n".join(refused))
    bad = sum(int(r[-1].replace(",", "")) for r in rows)
    print(f"\n{plural(len(rows), 'model')}, {plural(bad, 'mismatch', 'mismatches')}, "
          f"{time.perf_counter() - start:.1f} s")
    print(LEGEND)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
