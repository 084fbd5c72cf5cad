"""Stage 0c `tokenizer`: BPE tokenizer trained on the world's corpus (or an existing one adapted)."""

from __future__ import annotations

from r1flow.data.schemas import read_rows
from r1flow.models.arch import tokenizer as tk
from r1flow.tasks.common import BuildContext


def build_tokenizer(b: BuildContext) -> None:
    """A BPE tokenizer trained on the world's corpus (or an existing one adapted); parent: world."""
    cfg: tk.TokenizerConfig = b.node.config
    world_ref = b.parents["world"]
    if cfg.hub_id:
        tok = tk.adapt_tokenizer(cfg.hub_id)
    else:
        texts = [r["text"] for r in read_rows(world_ref.file("corpus.parquet"), "corpus", ["text"])[: cfg.max_docs]]
        tok = tk.train_tokenizer(texts, cfg)
    tok.save_pretrained(str(b.out))
    sample = read_rows(world_ref.file("heldout.parquet"), "corpus", ["text"])[:500]
    n_tok = sum(len(tok(r["text"], add_special_tokens=False)["input_ids"]) for r in sample)
    n_chr = sum(len(r["text"]) for r in sample)
    b.summary |= {"vocab_size": len(tok), "chars_per_token": n_chr / n_tok, "source": cfg.hub_id or "trained"}
