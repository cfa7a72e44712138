"""Export and load times of compiled models with LayerNorm: Hugging Face and TransformerLens.

Run as a script (``python benchmarks/bench_export.py``): it prints the imports' time
once, then per program the median of three warm runs of ``model.to_hf()``,
``model.save_pretrained(dir)``, ``AutoModel*.from_pretrained(dir)`` with
``AutoTokenizer``, and ``model.to_transformer_lens()`` (a TransformerBridge on
TransformerLens 4), as a markdown table and as JSON rows for
docs/data/performance.json. Needs the hf and transformer-lens extras.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
import warnings

PROGRAMS = [("frac_prevs", True), ("sort", True), ("dyck2", True), ("sort_unique", False),
            ("hist", False)]


def _time(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    start = time.perf_counter()
    import torch  # noqa: F401
    import transformers

    import rasplang as rl
    from rasplang.lib import PROGRAMS as LIBRARY

    imports = time.perf_counter() - start
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    rows = []
    for name, causal in PROGRAMS:
        entry = LIBRARY[name]
        model = rl.compile(entry.build(), entry.vocab, entry.max_seq_len, causal=causal,
                           norm="layernorm")
        model.to_hf()                                    # warm transformers' lazy imports
        path = tempfile.mkdtemp(prefix="rasplang-bench-")
        cls = (transformers.AutoModelForCausalLM if causal
               else transformers.AutoModelForTokenClassification)

        def load(path=path, cls=cls):
            cls.from_pretrained(path)
            transformers.AutoTokenizer.from_pretrained(path)

        to_hf = _time(model.to_hf)
        save = _time(lambda path=path, model=model: model.save_pretrained(path))
        loaded = _time(load)
        bridge = _time(model.to_transformer_lens)
        rows.append([name, entry.max_seq_len, model.config.d_model, model.config.n_layers,
                     round(to_hf, 3), round(save, 3), round(loaded, 3), round(bridge, 3)])
    print(f"imports of torch, transformers and rasplang: {imports:.1f} s\n")
    print("| program | max_seq_len | d_model | layers | to_hf s | save_pretrained s | "
          "from_pretrained s | to_transformer_lens s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    print()
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
