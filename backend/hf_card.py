"""The model card (README.md) of a Hugging Face export: what the model computes, on
which inputs, how to run and decode it, and how it was verified.

Written by `rasplang.backend.hf.save_pretrained`, with ``huggingface_hub``'s
``ModelCard`` (a dependency of ``transformers``) when it is importable, else as the same
markdown. The metadata block names the library (``transformers``) and tags the model
``rasplang``; it names no pipeline: ``generate()``, the text-generation and the fill-mask
pipelines do not apply (the logits at each position are the program's output there, one
logit per output value, not a next or masked token).
"""

from __future__ import annotations

from typing import Any


def card(model: Any, hf: Any, report: Any = None) -> str:
    """The card's markdown for ``model`` exported as ``hf`` (its ``transformers`` model);
    ``report``, a `rasplang.verify` report, is quoted as how it was verified."""
    info = hf.config.rasplang
    kind = type(hf).__name__
    auto = "AutoModelForCausalLM" if info["causal"] else "AutoModelForMaskedLM"
    program = model.program
    label = program.label if program is not None else "(not recorded)"
    dtype = str(next(hf.parameters()).dtype).removeprefix("torch.")
    labels = hf.config.id2label
    outputs = ", ".join(f"{i}: `{labels[i]}`" for i in sorted(labels))
    cfg = model.config
    layers = f"{cfg.n_layers} layer{'s' * (cfg.n_layers != 1)}"
    text = f"""# `{label}`, a compiled RASP program

This model was compiled by [rasplang](https://rasplang.readthedocs.io) from a RASP
program: its weights are constructed, not trained, and its forward pass computes the
program. It is a `{kind}` ({dtype}) that `transformers` loads with no custom code.

| | |
| --- | --- |
| program | `{label}` (SHA-256 of its graph and tables: `{cfg.program_sha256 or "not recorded"}`) |
| vocabulary | {", ".join(f"`{v}`" for v in cfg.vocab)} |
| max_seq_len | {cfg.max_seq_len} tokens (BOS comes first: {cfg.max_seq_len + 1} ids) |
| causal | {bool(cfg.causal)} |
| output | {"numerical" if info["numerical"] else "categorical"}; logits {outputs} |
| layers, width | {layers}, hidden size {hf.config.hidden_size} |

## The program

```text
{_program_text(program)}
```

## Use

```python
import torch
from transformers import {auto}, AutoTokenizer
from rasplang.backend.hf import decode, encode

tokenizer = AutoTokenizer.from_pretrained(path)
model = {auto}.from_pretrained(path)  # in {dtype}, as saved
batch = encode(tokenizer, ["{" ".join(map(str, cfg.vocab[:min(3, cfg.max_seq_len)]))}"])
with torch.no_grad():
    logits = model(**batch).logits
decode(model.config, logits, batch)  # the program's output at each position
```

The tokenizer splits on whitespace and prepends BOS; pad on the right. {_decoding(info)}
`decode` refuses a batch that is padded on the left, lacks BOS or holds a word outside
the vocabulary, and logits of a float16 or bfloat16 model (16 bits cannot hold the
LayerNorm epsilon: the outputs are NaN); `encode` names an unknown word before the model
runs. An unknown word, and BOS or PAD inside the text, become `{info["unk"]}`, whose
embedding is NaN: the logits are NaN rather than a plausible answer. Texts longer than
{cfg.max_seq_len} tokens do not fit the position embedding.

`generate()` and the text-generation and fill-mask pipelines do not apply: the logits
at each position are the program's output there, not a next or a masked token.
`config.rasplang` holds the vocabulary, the output values and the names of the residual
stream's directions (`residual_labels`).

## Verification

{_verified(report, label)}
"""
    return _as_model_card(text)


def _program_text(program: Any) -> str:
    """The program, one node per line (`rasplang.graph.format_program`)."""
    if program is None:
        return "(this model was loaded from a file that does not hold the program)"
    from rasplang.graph import format_program

    return format_program(program).replace("```", "`‵`")


def _decoding(info: dict[str, Any]) -> str:
    """How the logits give the output, in words."""
    if info["numerical"]:
        flag = (" and, where logit 1 (the None flag) is above 1/2, None"
                if len(info["outputs"]) > 1 else "")
        return f"The output at each position is logit 0{flag}."
    none = " (the last is None: a constant 1/2)" if None in info["outputs"] else ""
    return (f"The output at each position is the argmax over the first "
            f"{len(info['outputs'])} logits, named by `config.id2label`{none}.")


def _verified(report: Any, label: str) -> str:
    """The card's verification paragraph."""
    check = ("Check this directory as it is loaded, on every input up to max_seq_len "
             "(tokenizer, model, `decode` against the program):\n\n"
             "```python\nfrom rasplang.backend.hf import verify\n\n"
             f"verify(program, model).ok  # program: the RASP program `{label}`\n```")
    compiled = ("The compiler either builds every weight exactly (each construction "
                "carries its derivation) or refuses the program; the export keeps the "
                "compiled model's logits to float rounding.")
    if report is None:
        return f"{compiled} This export was not verified when it was written. {check}"
    first = report.summary().splitlines()[0]
    return f"{compiled} When it was written: {first}. {check}"


def _as_model_card(text: str) -> str:
    """``text`` with the metadata block, through ``huggingface_hub.ModelCard`` if it is
    there."""
    meta = "library_name: transformers\ntags:\n- rasplang\n- compiled-transformer\n"
    try:
        from huggingface_hub import ModelCard, ModelCardData
    except ImportError:
        return f"---\n{meta}---\n\n{text}"
    data = ModelCardData(library_name="transformers", tags=["rasplang", "compiled-transformer"])
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}"))
