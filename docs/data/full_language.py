"""Measure the "Full language" tables of docs/performance.md: what each construct tracr
refuses costs in a compiled model, and the shapes of the RASP paper's programs.

Run: ``python docs/data/full_language.py`` (a few seconds). Prints
``layers / d_model / d_mlp`` with and without each construct at max_seq_len 8, then
``layers / d_model / n_heads / d_mlp`` of four paper programs at max_seq_len 5 and 16.
tests/docs/test_performance_page.py checks the page's tables against `constructs` and
`paper_programs`.
"""

from __future__ import annotations

import warnings

import rasplang as rl
from rasplang import lib

N = 8
PAPER = ("sort_stable", "sort_by_most_freq", "dyck1", "dyck2")


def _examples() -> list[tuple[str, rl.SOp, rl.SOp, object]]:
    """(construct, program with it, closest program without it, vocabulary)."""
    num = rl.numerical(rl.tokens)
    frac = lib.make_frac_prevs(rl.tokens == "x")
    eq = rl.select(rl.tokens, rl.tokens, "==")
    lt = rl.select(rl.indices, rl.indices, "<")
    shift = rl.select(rl.indices, rl.indices - 1, "==")
    prefix = rl.select(rl.indices, rl.indices, "<=")
    mean = rl.numerical(rl.Aggregate(prefix, num, default=0))
    previous = rl.select(rl.indices, rl.indices, lambda k, q: q == k + 1)
    return [
        ("& of selectors on different SOps", rl.selector_width(eq & lt),
         rl.selector_width(eq), "abcd"),
        ("| of selectors on different SOps",
         rl.selector_width(rl.select(rl.tokens, rl.tokens, "<") | (eq & lt)),
         rl.selector_width(rl.select(rl.tokens, rl.tokens, "<=")), "abcd"),
        ("numerical keys and queries", rl.selector_width(rl.select(frac, frac, "==")),
         frac, "xy"),
        ("Aggregate default", rl.Aggregate(shift, rl.tokens, default="_"),
         rl.Aggregate(shift, rl.tokens), "abc"),
        ("mean of non-binary numbers, then a Map", rl.Map(lambda m: m > 2.2, mean),
         None, (1, 2, 3, 5)),
        ("non-linear SequenceMap of a numerical SOp",
         rl.SequenceMap(lambda f, i: round(f * (i + 1)), frac, rl.indices), frac, "xy"),
        ("numerical None", lib.make_prev_sum(),
         rl.numerical(rl.LinearSequenceMap(
             num, rl.numerical(rl.Aggregate(previous, num, default=0)), 1, 1)), (1, 2, 3)),
        ("categorical Aggregate, spread selection", rl.Aggregate(eq, rl.tokens),
         rl.Aggregate(rl.select(rl.indices, rl.indices, "=="), rl.tokens), "abc"),
    ]


def _shape(program: rl.SOp, vocab: object, n: int, causal: bool = False) -> tuple[int, ...]:
    config = rl.compile(program, vocab, n, causal=causal).config
    return config.n_layers, config.d_model, config.d_mlp


def constructs() -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """``{construct: ((layers, d_model, d_mlp) with it, the same without it)}`` at N.

    The mean's program "without" is the same program over the binary vocabulary
    ``(0, 1)``. Causal compilation gives every program here the same shape.
    """
    shapes = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, program, without, vocab in _examples():
            with_it = _shape(program, vocab, N)
            assert _shape(program, vocab, N, causal=True)[:2] == with_it[:2], name
            base = _shape(without, vocab, N) if without is not None else _shape(
                program, (0, 1), N)
            shapes[name] = (with_it, base)
    return shapes


def paper_programs() -> dict[tuple[str, int], tuple[int, int, int, int]]:
    """``{(program, max_seq_len): (layers, d_model, n_heads, d_mlp)}`` at 5 and 16."""
    shapes = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in PAPER:
            entry = lib.PROGRAMS[name]
            for n in (5, 16):
                c = rl.compile(entry.build(n), entry.vocab, n).config
                shapes[name, n] = (c.n_layers, c.d_model, c.n_heads, c.d_mlp)
    return shapes


def main() -> None:
    """Print both tables."""
    print("construct | with | without")
    for name, (with_it, base) in constructs().items():
        print(f"{name} | {' / '.join(map(str, with_it))} | {' / '.join(map(str, base))}")
    print("\nprogram | max_seq_len | layers / d_model / n_heads / d_mlp")
    for (name, n), shape in paper_programs().items():
        print(f"{name} | {n} | {' / '.join(map(str, shape))}")


if __name__ == "__main__":
    main()
