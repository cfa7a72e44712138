"""The README's main job (`make demo`): run library programs and print one table.

For each program of `rasplang.lib.PROGRAMS`: build it, evaluate it on its example input
with the reference evaluator, analyse it for its vocabulary and length, and print the
program, the input, the output and the size of its graph.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import rasplang
from rasplang.lib import PROGRAMS


def _show(values: Sequence[Any]) -> str:
    def one(v: Any) -> str:
        if isinstance(v, float) and not v.is_integer():
            return f"{v:.3g}"
        return str(v)

    return "[" + " ".join(one(v) for v in values) + "]"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers), line, *(fmt.format(*r) for r in rows)])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo and print the table; returns the process exit status."""
    rows = []
    for name, entry in PROGRAMS.items():
        start = time.perf_counter()
        program = entry.build()
        output = rasplang.evaluate(program, list(entry.example))
        analysis = rasplang.analyze(program, entry.vocab, entry.max_seq_len)
        elapsed = time.perf_counter() - start
        rows.append([
            name,
            _show(entry.example),
            _show(output),
            str(len(analysis.nodes)),
            f"{elapsed * 1000:.1f}",
        ])
    print(f"rasplang {rasplang.__version__}: the program library on example inputs\n")
    print(_table(["program", "input", "output", "nodes", "ms"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
