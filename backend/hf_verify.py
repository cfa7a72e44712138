"""`rasplang.verify` of a model exported to Hugging Face, run the way its users run it.

`rasplang.verify(program, vocab, max_seq_len, model=hf_model)` (or
`rasplang.backend.hf.verify(program, hf_model)`) takes a ``transformers`` model written by
`rasplang.backend.hf.save_pretrained` and loaded back with ``from_pretrained``. Each batch
of inputs goes through the whole path a user takes: the words joined by spaces, the
tokenizer (which prepends BOS), the model's ``forward`` on ``input_ids`` and
``attention_mask``, then `rasplang.backend.hf.decode` on its logits. The decoded outputs
are compared with the interpreter's (`rasplang.evaluate`'s semantics) as `verify`
compares a compiled model's: categorical values with ``==``, numerical ones within
`NUMERICAL_TOLERANCE` when the model's parameters are float64 and
`NUMERICAL_TOLERANCE32` otherwise. The model runs in the dtype it was loaded in.

The tokenizer is the one saved beside the model (``AutoTokenizer`` on the model's
``name_or_path``) when the model was loaded from a directory that has one, else the
tokenizer rebuilt from ``config.rasplang`` (`rasplang.backend.hf.tokenizer_from_config`),
or the one passed to `rasplang.backend.hf.verify`.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from rasplang.divergence import NUMERICAL_TOLERANCE, NUMERICAL_TOLERANCE32, _same
from rasplang.evaluator import evaluate
from rasplang.verification import FORWARD_ELEMENTS, Mismatch, _check_same_program, _Checker


@attrs.frozen
class Exported:
    """An exported ``transformers`` model and the tokenizer to run it with."""

    model: Any
    tokenizer: Any

    @property
    def config(self) -> Any:
        """The model's config (``config.rasplang`` describes the export)."""
        return self.model.config


def is_exported(model: Any) -> bool:
    """Whether ``model`` is an exported Hugging Face model (its config has ``rasplang``)."""
    if isinstance(model, Exported):
        return True
    return isinstance(getattr(getattr(model, "config", None), "rasplang", None), dict)


def saved_tokenizer(model: Any) -> Any:
    """The tokenizer saved beside ``model`` when it was loaded from a directory that has
    one, else the one rebuilt from its ``config.rasplang``."""
    from rasplang.backend import hf

    transformers, _ = hf._import_hf()
    path = getattr(model, "name_or_path", "") or ""
    if path and (Path(path) / "tokenizer.json").is_file():
        return transformers.AutoTokenizer.from_pretrained(path)
    return hf.tokenizer_from_config(model.config)


class ExportChecker(_Checker):
    """`verify`'s checker for an exported model: tokenizer, model, `hf.decode`."""

    def __init__(self, plan: Any, model: Any):
        from rasplang.backend import hf

        _, self.torch = hf._import_hf()
        exported = model if isinstance(model, Exported) else Exported(model,
                                                                      saved_tokenizer(model))
        self.plan = plan
        self.model, self.tokenizer = exported.model, exported.tokenizer
        self.config = self.model.config
        info = self.config.rasplang
        if bool(info["causal"]) != plan.causal:
            raise ValueError(f"the exported model was compiled with causal={info['causal']} "
                             f"but verify was asked for causal={plan.causal}")
        if plan.max_seq_len > info["max_seq_len"]:
            raise ValueError(f"max_seq_len {plan.max_seq_len} exceeds the exported model's "
                             f"max_seq_len {info['max_seq_len']}")
        self.words = [str(t) for t in plan.vocab]
        known = self.tokenizer.get_vocab()
        special = {self.tokenizer.bos_token, self.tokenizer.pad_token,
                   self.tokenizer.unk_token}
        missing = [t for t, w in zip(plan.vocab, self.words) if w not in known or w in special]
        if missing:
            raise ValueError(f"tokens {missing!r} are not in the exported model's tokenizer "
                             f"(its words: {sorted(set(known) - special)})")
        _check_same_program(plan.analysis, types.SimpleNamespace(config=types.SimpleNamespace(
            program_sha256=info.get("program_sha256", ""), max_seq_len=info["max_seq_len"],
            vocab=tuple(hf.config_vocab(self.config)))))
        dtype = next(self.model.parameters()).dtype
        if dtype in (self.torch.float16, self.torch.bfloat16):
            raise ValueError(f"the exported model is loaded in {str(dtype)[6:]}: it is exact in "
                             "float32 and float64 only (its LayerNorm epsilon and weights do "
                             "not fit in 16 bits); load it without dtype=, as it was saved")
        self.tolerance = (NUMERICAL_TOLERANCE if dtype == self.torch.float64
                          else NUMERICAL_TOLERANCE32)
        self.numerical = bool(info["numerical"])
        self.n_heads = max(1, int(getattr(self.config, "num_attention_heads", 1) or 1))
        self._analysis = None

    def outputs(self, codes: np.ndarray) -> list[list[Any]]:
        """The decoded outputs on inputs ``codes [b, n]``: text, tokenizer, model, decode
        (in slices whose attention scores stay under `FORWARD_ELEMENTS`). The tokenizer's
        ids are checked as `hf.decode` checks them; an input whose logits are not finite
        gets NaN outputs, a mismatch."""
        from rasplang.backend import hf

        n = codes.shape[1]
        step = max(1, FORWARD_ELEMENTS // (self.n_heads * (n + 1) ** 2))
        device = next(self.model.parameters()).device
        got: list[list[Any]] = []
        for start in range(0, len(codes), step):
            text = [" ".join(self.words[c] for c in row) for row in codes[start:start + step]]
            enc = self.tokenizer(text, return_tensors="pt", padding=True,
                                 padding_side="right")
            if enc["input_ids"].shape[1] != n + 1:
                raise ValueError(f"the tokenizer gives {enc['input_ids'].shape[1]} ids for {n} "
                                 f"words ({text[0]!r}); the exported model needs BOS and one "
                                 "id per token")
            hf.check_inputs(self.config.rasplang, enc["input_ids"], enc["attention_mask"])
            with self.torch.no_grad():
                logits = hf.as_array(self.model(**enc.to(device)).logits)
            rows = hf.outputs(self.config.rasplang, logits)
            for r, bad in enumerate(hf.not_finite(self.config.rasplang, logits, [n] * len(rows))):
                if len(bad):
                    rows[r] = [float("nan")] * n
            got += [row[:n] for row in rows]
        return got

    def check(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows that disagree, and the rows skipped (evaluate raises there)."""
        keep, out = self.expected(codes)
        skipped = np.setdiff1d(np.arange(len(codes)), keep)
        if out is None:
            return np.zeros(0, dtype=np.int64), skipped
        got = self.outputs(codes[keep])
        bad = [i for i, (g, w) in enumerate(zip(got, out.tolist())) if not self._agree(g, w)]
        return keep[np.asarray(bad, dtype=np.int64)], skipped

    def _agree(self, got: list[Any], want: list[Any]) -> bool:
        """One input's decoded outputs are the program's (numerical within tolerance)."""
        if len(got) != len(want):
            return False
        if not self.numerical:
            return all(_same(g, w, False) for g, w in zip(got, want))
        for g, w in zip(got, want):
            if g is None or w is None:
                if g is not w:
                    return False
            elif not abs(float(g) - float(w)) <= self.tolerance * max(1.0, abs(float(w))):
                return False
        return True

    def explain(self, row: np.ndarray) -> Mismatch:
        """The counterexample for one input (no divergence: the residual stream of an
        exported model is not decoded here)."""
        xs = self._tokens(row)
        expected = evaluate(self.plan.program, xs, causal=self.plan.causal)
        return Mismatch(xs, expected, self.outputs(row[None, :])[0], None)
