"""The Hugging Face export's tokenizer, and the checks on what reaches the model.

The tokenizer is a ``tokenizers`` WordLevel vocabulary saved as tokenizer.json, so
``AutoTokenizer.from_pretrained(path)`` loads it with no custom code. Its ids are the
compiled model's embedding rows: the vocabulary's tokens (each as ``str``), BOS, PAD,
then one more, UNK (``[UNK]``, or that with ``_`` appended until no token prints so):

- text is split on whitespace; the template prepends BOS; padding appends PAD on the
  right (``padding_side="right"``);
- a word outside the vocabulary becomes UNK, and so does a special token written in
  the text (BOS, PAD or UNK: ``split_special_tokens=True`` keeps the text's specials
  from being read as specials, and a normalizer turns each such word into UNK). The
  model's embedding row for UNK is NaN, so such an input gives NaN logits (every logit
  of that text; the batch's other texts are not affected), which
  `rasplang.backend.hf.decode` refuses, naming the position and the word. The tokenizer
  itself cannot refuse the word without custom code: a WordLevel model without an UNK
  token fails without naming the word, and TransformerLens needs the UNK token (below);
- ``model_max_length`` is ``max_seq_len + 1`` (BOS included): a longer text gets
  transformers' warning that the model will fail on it, and `encode` refuses it.

TransformerLens 4's bridge probes the tokenizer with the word ``"a"``, which needs an
UNK token; the NaN row keeps that word from giving a plausible answer.

`encode` is the checked way in: it names an unknown word, a special token in the text
and a text longer than the model's ``max_seq_len`` before the model runs. `check_inputs`
makes the same checks on ids: BOS first, PAD only at the end (left padding moves every
position, which position-dependent programs read), no UNK.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from rasplang.backend.extras import import_extra

UNK = "[UNK]"


def token_strings(model: Any) -> list[str]:
    """Each embedding row's token as the tokenizer writes it (``str``: the vocabulary,
    BOS, PAD), checked to be distinct and free of whitespace."""
    cfg = model.config
    return strings([*cfg.vocab, cfg.bos, cfg.pad])


def strings(tokens: list[Any]) -> list[str]:
    """`token_strings` of the tokens (vocabulary, BOS, PAD: the embedding's rows)."""
    text = [str(t) for t in tokens]
    seen: dict[str, Any] = {}
    for tok, s in zip(tokens, text):
        if not s or any(c.isspace() for c in s):
            raise ValueError(f"token {tok!r} prints as {s!r}, which a whitespace-split "
                             "tokenizer cannot hold; pass input ids to the model instead")
        if s in seen:
            raise ValueError(f"tokens {seen[s]!r} and {tok!r} both print as {s!r}; the "
                             "tokenizer needs distinct strings")
        seen[s] = tok
    return text


def unk_string(text: list[str]) -> str:
    """The UNK token's string: ``[UNK]``, with ``_`` appended until no token has it."""
    unk = UNK
    while unk in text:
        unk += "_"
    return unk


def tokenizer(model: Any) -> Any:
    """A ``PreTrainedTokenizerFast`` over the model's tokens (see the module docstring)."""
    return build(token_strings(model), model.config.max_seq_len)


def tokenizer_from_config(config: Any) -> Any:
    """`tokenizer` rebuilt from an exported model's ``config.rasplang`` (the same
    vocabulary, BOS, PAD and UNK, so the same ids)."""
    from rasplang.backend.metadata import from_json

    info = config.rasplang
    tokens = [*(from_json(v, "vocab") for v in info["vocab"]), from_json(info["bos"], "bos"),
              from_json(info["pad"], "pad")]
    return build(strings(tokens), int(info["max_seq_len"]))


def build(text: list[str], max_seq_len: int) -> Any:
    """The tokenizer over ``text`` (the vocabulary, then BOS and PAD; UNK comes next)."""
    transformers, = import_extra("the Hugging Face tokenizer", "hf", "transformers")
    import_extra("the Hugging Face tokenizer", "hf", "tokenizers")
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    bos, pad, unk = text[-2], text[-1], unk_string(text)
    ids = {s: i for i, s in enumerate([*text, unk])}
    tok = Tokenizer(models.WordLevel(ids, unk_token=unk))
    specials = "|".join(re.escape(s) for s in (bos, pad, unk))
    tok.normalizer = normalizers.Replace(Regex(rf"(?<!\S)(?:{specials})(?!\S)"), unk)
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, ids[bos])])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, pad_token=pad, unk_token=unk,
        padding_side="right", split_special_tokens=True, model_max_length=max_seq_len + 1)


def encode(tokenizer: Any, texts: str | list[str], **kwargs: Any) -> Any:
    """``tokenizer(texts, padding=True, return_tensors="pt")`` padded on the right, after
    checking every word: a ValueError names a word outside the vocabulary, a special
    token inside the text, or a text longer than the model's ``max_seq_len``
    (``tokenizer.model_max_length - 1``). ``kwargs`` go to the tokenizer."""
    batch = [texts] if isinstance(texts, str) else list(texts)
    special = {tokenizer.bos_token, tokenizer.pad_token, tokenizer.unk_token}
    known = set(tokenizer.get_vocab()) - special
    limit = tokenizer.model_max_length - 1
    for i, text in enumerate(batch):
        words = text.split()
        for j, word in enumerate(words):
            if word in special:
                raise ValueError(f"text {i} ({text!r}) holds the special token {word!r} at "
                                 f"word {j}: BOS is prepended by the tokenizer, PAD added by "
                                 "padding; write only the program's tokens")
            if word not in known:
                raise ValueError(f"text {i} ({text!r}): word {j}, {word!r}, is not in the "
                                 f"model's vocabulary {sorted(known)}")
        if len(words) > limit:
            raise ValueError(f"text {i} has {len(words)} words, more than the model's "
                             f"max_seq_len {limit}")
    kwargs = {"padding": True, "return_tensors": "pt", **kwargs, "padding_side": "right"}
    return tokenizer(batch, **kwargs)


def check_inputs(info: dict[str, Any], input_ids: Any, attention_mask: Any = None) -> np.ndarray:
    """The number of ids of each row (BOS included) after checking what the model read:
    BOS first and nowhere else, no UNK, PAD only after the last token and the attention
    mask ones then zeros (right padding), at most ``max_seq_len + 1`` ids. A ValueError
    names the row, the position and what is there."""
    from rasplang.backend.metadata import from_json

    ids = _array(input_ids).astype(np.int64)
    if ids.ndim == 1:
        ids = ids[None]
    n_vocab = len(info["vocab"])
    bos, pad, unk = n_vocab, n_vocab + 1, n_vocab + 2
    mask = (ids != pad) if attention_mask is None else _array(attention_mask).astype(bool)
    if mask.shape != ids.shape:
        raise ValueError(f"the attention mask has shape {mask.shape}, the input ids "
                         f"{ids.shape}")
    lengths = mask.sum(axis=1)
    names = [str(from_json(v, "vocab")) for v in info["vocab"]]
    for r, (row, keep, n) in enumerate(zip(ids, mask, lengths)):
        if not np.all(keep[:n]) or np.any(keep[n:]):
            raise ValueError(f"row {r} is padded on the left (attention mask "
                             f"{keep.astype(int).tolist()}): BOS must be at position 0, so "
                             "pad on the right (tokenizer.padding_side = 'right')")
        if n == 0 or row[0] != bos:
            first = "nothing" if n == 0 else _name(row[0], names)
            raise ValueError(f"row {r} starts with {first}, not BOS: the tokenizer prepends "
                             "BOS; pass add_special_tokens=True")
        for p in range(1, n):
            if row[p] == unk:
                raise ValueError(f"row {r}, position {p} is UNK: a word outside the model's "
                                 f"vocabulary {names}, or a special token inside the text")
            if row[p] in (bos, pad) or not 0 <= row[p] < n_vocab:
                raise ValueError(f"row {r}, position {p} holds {_name(row[p], names)}, not "
                                 f"one of the model's tokens {names}")
        if n > info["max_seq_len"] + 1:
            raise ValueError(f"row {r} has {n - 1} tokens, more than the model's "
                             f"max_seq_len {info['max_seq_len']}")
    return lengths


def _name(i: int, names: list[str]) -> str:
    """How `check_inputs` names id ``i``."""
    specials = {len(names): "BOS", len(names) + 1: "PAD", len(names) + 2: "UNK"}
    if 0 <= i < len(names):
        return repr(names[i])
    return specials.get(int(i), f"id {int(i)}")


def _array(a: Any) -> np.ndarray:
    """A torch tensor or array-like as a numpy array."""
    return np.asarray(a.detach().cpu() if hasattr(a, "detach") else a)
