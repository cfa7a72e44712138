"""The model card (README.md) of a Hugging Face export: what the model computes, on
which inputs, how to run and decode it, and how it was verified.

Written by `rasplang.backend.hf.save_pretrained`, with ``huggingface_hub``'s
``ModelCard`` (a dependency of ``transformers``) when it is importable, else as the same
markdown. The metadata block names the library (``transformers``) and tags the model
``rasplang``; it names no pipeline, since none gives the program's output (the logits
at each position are the program's output there, one logit per output value, not a next
or masked token). The card says what each does instead (`_pipelines`: GPT-2's
``generate()`` and text-generation run and take an output's index for a token id; BERT
has no ``generate()``; fill-mask is refused for want of a mask token) and what an
unknown word does through the tokenizer and the model (`_unknown_words`: NaN logits,
which ``torch.argmax`` reads as 0), with the check to run before reading the logits.
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
runs. Texts longer than {cfg.max_seq_len} tokens do not fit the position embedding.
`config.rasplang` holds the vocabulary, the output values and the names of the residual
stream's directions (`residual_labels`).

## Unknown words

{_unknown_words(info["unk"], model.config.d_vocab)}

## Pipelines and `generate()`

{_pipelines(kind)}

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


def _unknown_words(unk: str, unk_id: int) -> str:
    """What a word outside the vocabulary does through the tokenizer and the model."""
    return f"""The tokenizer cannot refuse a word outside the vocabulary (a `tokenizers`
vocabulary either reads it as its UNK token or fails without naming the word): such a
word, and BOS or PAD written in the text, becomes `{unk}` (id {unk_id}), whose embedding
is NaN. Every logit of that text is then NaN, at every position; the other texts of the
batch are not affected. `decode` refuses NaN logits. If you read the logits yourself,
check first: `torch.argmax` of NaN logits is 0, which reads as `id2label[0]`, a
plausible answer.

```python
unknown = (batch["input_ids"] == tokenizer.unk_token_id).any(dim=1)  # per text, before
torch.isnan(logits).any(dim=(1, 2))  # the same texts, after the model
```"""


def _pipelines(kind: str) -> str:
    """What ``generate()`` and the pipelines do with a ``kind`` ("GPT2LMHeadModel",
    "BertForMaskedLM") export."""
    first = ("No `transformers` pipeline gives the program's output, and `generate()` "
             "does not either: the logits at each position are the program's output "
             "there, one logit per output value (`config.id2label`), not scores of a next "
             "or a masked token. Read them with `decode`, as above.")
    if kind == "GPT2LMHeadModel":
        rest = ("`generate()` and the `text-generation` pipeline run, as on any "
                "`GPT2LMHeadModel`, but they take an output's index for the next token's "
                "id: the first id `generate()` appends is, for a categorical output, the "
                "index in `id2label` of the program's output at the last position, and "
                "what follows is the model reading that index as a token.")
    else:
        rest = ("`BertForMaskedLM` has no `generate()`. The `text-generation` pipeline "
                "loads this directory as `BertLMHeadModel` (transformers warns that it is "
                "not a decoder) and takes an output's index for the next token's id.")
    fill = ("The `fill-mask` pipeline refuses the model: the tokenizer has no mask "
            "token, as a program's input has no masked position.")
    return f"{first}\n\n{rest} {fill}"


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
