"""The ``rasplang`` command line.

User errors (an unknown program, a malformed vocabulary, a missing file, a token
outside the vocabulary) print one line to stderr and exit with status 2, without a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import rasplang


class UsageError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit 2."""


def _parse_token(text: str) -> Any:
    """A token from the command line: an int if it looks like one, else the string."""
    try:
        return int(text)
    except ValueError:
        return text


def parse_vocab(text: str) -> tuple[Any, ...]:
    """``"a,b,c"`` -> ('a', 'b', 'c'); ``"1,2,3"`` -> (1, 2, 3)."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise UsageError(f"malformed --vocab {text!r}: expected comma-separated tokens, e.g. a,b,c")
    vocab = tuple(_parse_token(p) for p in parts)
    if len(set(vocab)) != len(vocab):
        raise UsageError(f"malformed --vocab {text!r}: a token is listed twice")
    return vocab


def parse_input(text: str, vocab: Sequence[Any] | None) -> list[Any]:
    """``"a b c"`` -> tokens, matched against ``vocab`` by their text when given."""
    words = text.split()
    if vocab is None:
        return [_parse_token(w) for w in words]
    by_text = {str(v): v for v in vocab}
    tokens = []
    for pos, word in enumerate(words):
        if word not in by_text:
            raise UsageError(
                f"token {word!r} at position {pos} is not in the vocabulary "
                f"{','.join(map(str, vocab))}"
            )
        tokens.append(by_text[word])
    return tokens


def _as_program(obj: Any, spec: str) -> rasplang.SOp:
    if callable(obj) and not isinstance(obj, rasplang.RASPExpr):
        try:
            obj = obj()
        except TypeError as exc:
            raise UsageError(f"{spec}: calling it without arguments failed: {exc}") from exc
    if not isinstance(obj, rasplang.SOp):
        raise UsageError(f"{spec} is a {type(obj).__name__}, not an SOp or a function "
                         "returning one")
    return obj


def load_program(spec: str) -> tuple[rasplang.SOp, Any]:
    """Resolve SPEC: a library name, ``module:attr`` or ``path/to/file.py:attr``.

    Returns the program and its library entry (None when SPEC is not a library name).
    """
    from rasplang.lib import PROGRAMS

    name = spec.removeprefix("make_")
    if name in PROGRAMS:
        return PROGRAMS[name].build(), PROGRAMS[name]
    if ":" not in spec:
        raise UsageError(
            f"unknown program {spec!r}: expected a library name ({', '.join(PROGRAMS)}), "
            "module:attr or path/to/file.py:attr"
        )
    target, attr = spec.rsplit(":", 1)
    if target.endswith(".py"):
        path = pathlib.Path(target)
        if not path.is_file():
            raise UsageError(f"no such file: {target}")
        module_spec = importlib.util.spec_from_file_location(f"_rasplang_user_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise UsageError(f"cannot load {target} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(f"cannot import module {target!r}: {exc}") from exc
    if not hasattr(module, attr):
        raise UsageError(f"{target} has no attribute {attr!r}")
    return _as_program(getattr(module, attr), spec), None


def _cmd_lib(args: argparse.Namespace) -> int:
    from rasplang.lib import PROGRAMS

    width = max(len(name) for name in PROGRAMS)
    for name, entry in PROGRAMS.items():
        print(f"{name:<{width}}  {entry.description}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    program, entry = load_program(args.spec)
    vocab = parse_vocab(args.vocab) if args.vocab else (entry.vocab if entry else None)
    xs = parse_input(args.input, vocab)
    output = rasplang.evaluate(program, xs, causal=args.causal)
    print(" ".join(str(v) for v in output))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from rasplang.demo import main as demo_main

    return demo_main([])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subcommand per job."""
    parser = argparse.ArgumentParser(
        prog="rasplang", description="RASP programs: run, analyse, compile, verify."
    )
    parser.add_argument("--version", action="version", version=rasplang.__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("lib", help="list the library programs")
    p.set_defaults(fn=_cmd_lib)

    p = sub.add_parser("run", help="run a program on one input")
    p.add_argument("spec", help="library name, module:attr or path/to/file.py:attr")
    p.add_argument("--input", required=True, help='tokens separated by spaces, e.g. "a b c"')
    p.add_argument("--vocab", help="comma-separated vocabulary, e.g. a,b,c")
    p.add_argument("--causal", action="store_true", help="mask selectors causally")
    p.set_defaults(fn=_cmd_run)

    p = sub.add_parser("demo", help="the README's demo")
    p.set_defaults(fn=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rasplang`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except UsageError as exc:
        print(f"rasplang {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (rasplang.EvaluationError, rasplang.AnalysisError) as exc:
        print(f"rasplang {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
