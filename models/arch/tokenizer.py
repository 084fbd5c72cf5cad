"""Train a byte-level BPE tokenizer on the corpus and save it as a Hugging Face tokenizer.

The result loads with `AutoTokenizer.from_pretrained` (TRL, vLLM) and carries the project's chat
template and special tokens (`<think>`, `</think>`, `<answer>`, `</answer>`, bos/eos/pad). This
module covers tokenizer training only; corpus generation lives in `data/world.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from r1flow.data.templates import BOS, CHAT_TEMPLATE, EOS, PAD, REASONING_TAGS, SPECIAL_TOKENS


class TokenizerConfig(BaseModel):
    """Stage 0 (`tokenizer`): BPE training settings."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(1024, ge=300, le=262_144, description="Target vocabulary size, special tokens included.")
    min_frequency: int = Field(2, ge=1, description="Merges seen fewer times than this are not learned.")
    max_docs: int = Field(20_000, ge=10, description="Corpus documents used to train the merges.")
    hub_id: str | None = Field(
        None, description="Use this existing tokenizer (hub id or local path) instead of training one; "
                          "the project's special tokens and chat template are added to it.")


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    # Digits split one by one: numbers stay compositional for a small model (as in LLaMA/DeepSeek).
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return wrap(tok)


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    # The reasoning tags are atomic added tokens but not "special": decoding with
    # skip_special_tokens=True (TRL, vLLM defaults) must keep them, or rewards never see the format.
    hf.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TAGS])
    hf.chat_template = CHAT_TEMPLATE
    hf.model_max_length = 1 << 20
    return hf


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    missing = [t for t in SPECIAL_TOKENS if t not in tok.get_vocab()]
    if missing:
        raise ValueError(f"tokenizer at {path} lacks the special tokens {missing}")
    return tok


def adapt_tokenizer(hub_id: str) -> PreTrainedTokenizerFast:
    """An existing tokenizer with the project's special tokens and chat template added."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(hub_id)
    except OSError as e:
        raise ValueError(f"tokenizer.hub_id: cannot load tokenizer {hub_id!r}: {e}") from e
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TAGS if t not in tok.get_vocab()])
    if tok.pad_token is None:
        tok.pad_token = PAD
    tok.chat_template = CHAT_TEMPLATE.replace("{{ eos_token }}", tok.eos_token or EOS)
    return tok
