"""Stage 0a `world`: generate the task world, the pretraining corpus and the held-out prompt sets."""

from __future__ import annotations

from collections import Counter

from r1flow.data import world
from r1flow.data.schemas import write_rows
from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.tasks.common import BuildContext, Node, publish_table

HELDOUT_DOCS = 2000


def build_world(b: BuildContext) -> None:
    cfg: world.WorldConfig = b.node.config
    w = world.World(cfg)
    corpus = world.build_corpus(w, cfg)
    heldout = world.build_corpus(w, cfg, split="eval", n_docs=HELDOUT_DOCS)
    prompts = world.build_prompt_sets(w, cfg)
    write_rows(corpus, b.out / "corpus.parquet", "corpus")
    write_rows(heldout, b.out / "heldout.parquet", "corpus")
    write_rows(prompts["eval"], b.out / "eval.parquet", "prompts")
    write_rows(prompts["rl"], b.out / "rl.parquet", "prompts")
    keys = world.corpus_keys(w)
    corpus_text = "\n".join(r["text"] for r in corpus)
    leaked = sum(1 for split in ("eval", "rl") for r in prompts[split]
                 if r["kind"] == "reasoning" and f" {r['question']}\n" in corpus_text)
    b.summary |= {"corpus_docs": len(corpus), "corpus_problems": len(keys), "heldout_docs": len(heldout),
                  "eval_prompts": len(prompts["eval"]), "rl_prompts": len(prompts["rl"]),
                  "eval_questions_found_in_corpus": leaked,
                  "doc_kinds": dict(Counter(r["doc_kind"] for r in corpus)),
                  "eval_per_family": dict(Counter(r["family"] for r in prompts["eval"]))}


def show_world(store: ArtifactStore, node: Node, ref: ArtifactRef) -> None:
    m = store.manifest(ref.id)
    publish_table("r1flow-world-files", [{"file": k, "rows": v.rows, "columns": ", ".join(v.columns)}
                                         for k, v in m.tables.items()], "Parquet files of the task world")

