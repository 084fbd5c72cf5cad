"""Stage 0a `world`: generate the task world, the pretraining corpus and the held-out prompt sets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from r1flow.data import notation, templates, world
from r1flow.data.schemas import write_rows
from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.tasks.common import publish_table, run_stage

HELDOUT_DOCS = 2000


def build_world(cfg: world.WorldConfig, out: Path, summary: dict) -> None:
    w = world.World(cfg)
    corpus = world.build_corpus(w, cfg)
    heldout = world.build_corpus(w, cfg, split="eval", n_docs=HELDOUT_DOCS)
    prompts = world.build_prompt_sets(w, cfg)
    write_rows(corpus, out / "corpus.parquet", "corpus")
    write_rows(heldout, out / "heldout.parquet", "corpus")
    write_rows(prompts["eval"], out / "eval.parquet", "prompts")
    write_rows(prompts["rl"], out / "rl.parquet", "prompts")
    keys = world.corpus_keys(w)
    corpus_text = "\n".join(r["text"] for r in corpus)
    leaked = sum(1 for split in ("eval", "rl") for r in prompts[split]
                 if r["kind"] == "reasoning" and f" {r['question']}\n" in corpus_text)
    summary |= {"corpus_docs": len(corpus), "corpus_problems": len(keys), "heldout_docs": len(heldout),
                "eval_prompts": len(prompts["eval"]), "rl_prompts": len(prompts["rl"]),
                "eval_questions_found_in_corpus": leaked,
                "doc_kinds": dict(Counter(r["doc_kind"] for r in corpus)),
                "eval_per_family": dict(Counter(r["family"] for r in prompts["eval"]))}


@task(name="world", cache_policy=NONE)
def world_task(cfg: world.WorldConfig, store_root: str, mode: str = "run") -> ArtifactRef:
    store = ArtifactStore(store_root)
    ref = run_stage(store, stage="world", kind="dataset", config=cfg, parents=[],
                    modules=[world, notation, templates], build=lambda out, s, _w: build_world(cfg, out, s),
                    mode=mode)
    m = store.manifest(ref.id)
    publish_table("r1flow-world-files", [{"file": k, "rows": v.rows, "columns": ", ".join(v.columns)}
                                         for k, v in m.tables.items()], "Parquet files of the task world")
    return ref
