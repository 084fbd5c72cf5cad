"""Pretraining and imports: stage 1 `pretrain` (the DeepSeek-V3-style base, or the user's own base
model), stage 9's `student_pretrain` (a dense student, or one the user names) and `distill_teacher`
(a teacher the user names, imported).

With `nproc > 1` the training runs under `torchrun` in a child process (tasks/torchrun.py `launch`, as every
training stage does), which forwards its output and terminates it (and its workers) if the task is
cancelled, so no orphan keeps a core or a GPU.
"""

from __future__ import annotations

from pathlib import Path

from r1flow.data.store import ArtifactRef
from r1flow.models.train import pretrain as pt
from r1flow.tasks.common import BuildContext, Progress, publish_markdown
from r1flow.tasks.torchrun import launch


def import_base(source: str, tokenizer_dir: Path, out: Path, summary: dict) -> None:
    """Copy a user's Hugging Face causal LM into the store as the base checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype="auto")
    except (OSError, ValueError) as e:
        raise ValueError(f"pretrain.import_from: cannot load causal LM {source!r}: {e}") from e
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError):
        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if len(tok) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tok))
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    summary |= {"imported_from": source, "model_type": model.config.model_type,
                "params_total": sum(p.numel() for p in model.parameters())}


def train(cfg: pt.PretrainConfig, world_ref: ArtifactRef, tok_ref: ArtifactRef, out: Path, summary: dict,
          work: Path, label: str = "pretrain") -> None:
    corpus, heldout = world_ref.file("corpus.parquet"), world_ref.file("heldout.parquet")
    progress = Progress(label, cfg.steps)
    if not cfg.launched:
        summary |= pt.pretrain(cfg, corpus, heldout, Path(tok_ref.path), out, work,
                               on_log=lambda rec: progress.update(rec["step"]))
    else:
        summary |= run_torchrun(cfg, corpus, heldout, Path(tok_ref.path), out, work, progress)
    img = out / "r1flow" / "expert_load.png"
    publish_markdown(f"r1flow-{label}-report", pretrain_markdown(summary, img),
                     f"{label}: loss vs unigram baseline, throughput, MoE balance")


def run_torchrun(cfg: pt.PretrainConfig, corpus: Path, heldout: Path, tok: Path, out: Path, work: Path,
                 progress: Progress | None = None) -> dict:
    """The workers print `[pretrain]` lines whatever the node (a student's too); `progress` is the node's."""
    return launch("pretrain", "r1flow.models.train.pretrain", cfg,
                  {"config": cfg.model_dump(mode="json"), "corpus": str(corpus), "heldout": str(heldout),
                   "tokenizer": str(tok), "out": str(out), "work": str(work)}, work, progress)


def pretrain_markdown(s: dict, img: Path) -> str:
    rows = [("parameters (total / activated)", f"{s.get('params_total', 0):,} / {s.get('params_active', 0):,}"),
            ("tokens", f"{s.get('tokens', 0):,}"),
            ("held-out loss (nats/token)", f"{s.get('heldout_loss', float('nan')):.3f}"),
            ("unigram baseline", f"{s.get('unigram_heldout_loss', float('nan')):.3f}"),
            ("tokens/s", f"{s.get('tokens_per_s') or 0:,.0f}"), ("MFU", f"{(s.get('mfu') or 0):.1%}"),
            ("model type", s.get("model_type", "-"))]
    tail = ""
    if "final_max_over_mean_load" in s:  # MoE only
        rows.append(("max/mean expert load (last 20 steps)", f"{s['final_max_over_mean_load']:.2f}"))
        tail = f"\nExpert load plot: `{img}`\n"
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"# Pretraining\n\n| metric | value |\n|---|---|\n{table}\n{tail}"


def build_pretrain(b: BuildContext) -> None:
    """Train on the world's corpus (parents: world, tokenizer), or import `import_from`."""
    cfg: pt.PretrainConfig = b.node.config
    world_ref, tok_ref = b.parents["world"], b.parents["tokenizer"]
    if cfg.import_from:
        import_base(cfg.import_from, Path(tok_ref.path), b.out, b.summary)
    else:
        train(cfg, world_ref, tok_ref, b.out, b.summary, b.work, label=b.node.name)
