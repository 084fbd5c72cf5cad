"""Stage 0b `tokenizer`: BPE tokenizer trained on the world's corpus (or an existing one adapted)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from r1flow.data import templates
from r1flow.data.schemas import read_rows
from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.models import tokenizer as tk
from r1flow.tasks.common import run_stage


def build_tokenizer(cfg: tk.TokenizerConfig, world_ref: ArtifactRef, out: Path, summary: dict) -> None:
    if cfg.hub_id:
        tok = tk.adapt_tokenizer(cfg.hub_id)
    else:
        texts = [r["text"] for r in read_rows(world_ref.file("corpus.parquet"), "corpus", ["text"])[: cfg.max_docs]]
        tok = tk.train_tokenizer(texts, cfg)
    tok.save_pretrained(str(out))
    sample = read_rows(world_ref.file("heldout.parquet"), "corpus", ["text"])[:500]
    n_tok = sum(len(tok(r["text"], add_special_tokens=False)["input_ids"]) for r in sample)
    n_chr = sum(len(r["text"]) for r in sample)
    summary |= {"vocab_size": len(tok), "chars_per_token": n_chr / n_tok, "source": cfg.hub_id or "trained"}


@task(name="tokenizer", cache_policy=NONE)
def tokenizer_task(cfg: tk.TokenizerConfig, world_ref: ArtifactRef, store_root: str, mode: str = "run") -> ArtifactRef:
    return run_stage(ArtifactStore(store_root), stage="tokenizer", kind="tokenizer", config=cfg, parents=[world_ref],
                     modules=[tk, templates], build=lambda out, s, _w: build_tokenizer(cfg, world_ref, out, s),
                     mode=mode)
