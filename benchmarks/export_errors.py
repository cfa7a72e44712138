"""How far each library program's Hugging Face export is from the program, per dtype.

Every program of `rasplang.lib.PROGRAMS` is compiled with LayerNorm (causal: the GPT-2
form, and non-causal: the BERT form), written with ``save_pretrained`` (in
`rasplang.backend.hf.default_dtype`), loaded back with ``from_pretrained`` as saved and
cast to float32 (``dtype=torch.float32``, what the export saved before numerical outputs
were float64-only), and run as a user runs it (tokenizer, model, `rasplang.backend.hf.decode`,
`rasplang.backend.hf_verify.ExportChecker.outputs`) on every input up to ``max_seq_len``
(or ``--samples`` random ones). Prints, per export, the largest error of a numerical
output against the interpreter, and the number of inputs that miss 1e-6 (numerical) or
whose decoded value differs (categorical); rasplang's own float32 forward is printed
beside it.

    python benchmarks/export_errors.py [--max-seq-len 5] [--samples N] [NAME ...]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings

import numpy as np


def _errors(outputs: list[list], want: list[list], numerical: bool) -> tuple[float, int]:
    """Largest numerical error, and the inputs that miss 1e-6 (or differ)."""
    worst, missed = 0.0, 0
    for g, w in zip(outputs, want):
        if not numerical:
            missed += list(g) != list(w)
            continue
        err = max((abs(float(a) - float(b)) if a is not None and b is not None
                   else (0.0 if a is b else np.inf) for a, b in zip(g, w)), default=0.0)
        worst = max(worst, err)
        missed += err > 1e-6
    return worst, missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--max-seq-len", type=int, default=5)
    parser.add_argument("--samples", type=int, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch
    import transformers

    import rasplang as rl
    from rasplang.backend import hf
    from rasplang.backend.hf_verify import ExportChecker
    from rasplang.interpreter import Plan
    from rasplang.lib import PROGRAMS
    from rasplang.verify_inputs import _all_inputs, _random_inputs

    print(f"{'program':<20} {'form':<5} {'dtype':<14} {'max error':>10} {'missed':>8} "
          f"{'of':>6}   rasplang float32")
    for name in args.names or sorted(PROGRAMS):
        entry = PROGRAMS[name]
        n = args.max_seq_len
        for causal in (True, False):
            program = entry.build(n)
            try:
                model = rl.compile(program, entry.vocab, n, causal=causal, norm="layernorm")
            except Exception as exc:
                print(f"{name:<20} refused: {str(exc).splitlines()[0][:60]}")
                continue
            kind = hf.architecture_for(model)
            auto = (transformers.AutoModelForCausalLM if kind == "gpt2"
                    else transformers.AutoModelForMaskedLM)
            plan = Plan(program, entry.vocab, n, causal)
            batches = (_all_inputs(len(entry.vocab), n, 4096) if args.samples is None
                       else _random_inputs(len(entry.vocab), n, args.samples, 0, 4096))
            batches = list(batches)
            ours = _ours(model, plan, batches)
            with tempfile.TemporaryDirectory() as path:
                model.save_pretrained(path)
                saved = auto.from_pretrained(path)
                cast = auto.from_pretrained(path, dtype=torch.float32)
            float32 = next(saved.parameters()).dtype == torch.float32
            for loaded in [saved] if float32 else [cast, saved]:
                checker = ExportChecker(plan, loaded)
                worst, missed, total = 0.0, 0, 0
                for codes in batches:
                    keep, out = checker.expected(codes)
                    if out is None:
                        continue
                    w, m = _errors(checker.outputs(codes[keep]), out.tolist(), checker.numerical)
                    worst, missed, total = max(worst, w), missed + m, total + len(keep)
                dtype = str(next(loaded.parameters()).dtype)[6:]
                how = "saved" if loaded is saved else "cast"
                print(f"{name:<20} {kind:<5} {dtype:<8}{how:<6} {worst:>10.3g} {missed:>8} "
                      f"{total:>6}   {ours:.3g}")


def _ours(model, plan, batches) -> float:
    """rasplang's own float32 forward: the largest numerical error (nan for a categorical
    output or a model exact in float64 only)."""
    if not model.output_encoder.numerical or model.config.float64_only:
        return float("nan")  # nothing to read, or refused in float32
    worst = 0.0
    for codes in batches:
        try:
            out = plan.run_arrays(codes, np.full(len(codes), codes.shape[1])).output
        except Exception:
            continue
        tokens = [[plan.vocab[c] for c in row] for row in codes.tolist()]
        got = model.run(tokens, dtype=np.float32)
        worst = max(worst, _errors(got, out.tolist(), True)[0])
    return worst


if __name__ == "__main__":
    main()
