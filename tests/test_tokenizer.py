"""Tokenizer: special tokens, chat template parity with the corpus renderer.   pytest tests/test_tokenizer.py"""

from __future__ import annotations

from r1flow.data import templates, world
from r1flow.models.arch.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer


def test_tokenizer_roundtrip_and_chat_template(tmp_path):
    cfg = world.WorldConfig(corpus_docs=800)
    texts = [r["text"] for r in world.build_corpus(world.World(cfg), cfg)]
    tok = train_tokenizer(texts, TokenizerConfig(vocab_size=400))
    tok.save_pretrained(tmp_path)
    tok = load_tokenizer(tmp_path)
    for t in templates.SPECIAL_TOKENS:
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1, t
    msgs = [{"role": "system", "content": templates.R1_ZERO_SYSTEM}, {"role": "user", "content": "What is 3 + 4?"},
            {"role": "assistant", "content": "<think> 3 + 4 = 7. </think> <answer> 7 </answer>"}]
    assert tok.apply_chat_template(msgs, tokenize=False) == templates.render_chat(msgs)
    assert tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True) == \
        templates.render_chat(msgs[:2], add_generation_prompt=True)
    text = templates.render_chat(msgs)
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    # Decoding as TRL and vLLM do (skip_special_tokens=True) keeps the reasoning tags, drops EOS.
    ids = tok(msgs[2]["content"] + templates.EOS, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == msgs[2]["content"]
    # Digits are split individually so numbers stay compositional.
    assert tok.tokenize("12345") == ["1", "2", "3", "4", "5"]
