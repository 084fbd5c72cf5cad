"""Datasets sampled from a policy with vLLM and filtered (models/eval/collect.py): stage 3's
`cold_start` (long CoT from R1-Zero), stage 6's `rejection_sampling` (the SFT mixture: reasoning from
reasoning_rl plus non-reasoning answers) and stage 9's `distill_traces` (the same mixture, sampled
from R1 or the user's teacher). Parents by role: `policy` (a checkpoint), `world` (the prompts; for the mixture also
the instruction tasks) and `data:NAME` (imported prompts, the stage's `datasets`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from r1flow.data.schemas import read_rows, write_rows
from r1flow.models.eval import collect
from r1flow.tasks.common import BuildContext, imported, log, publish_markdown


def _publish_card(stage: str, out: Path, title: str, counts: dict, kept: list[dict]) -> None:
    md = collect.card_markdown(title, counts, dict(Counter(s["family"] for s in kept)))
    (out / "card.md").write_text(md)
    publish_markdown(f"r1flow-{stage}-data-card", md, f"{stage}: samples kept and removed, by filter")


def _prompts(b: BuildContext, cfg: collect.CollectConfig) -> list[dict]:
    """The reasoning prompts sampled: the world's RL split (first `prompts_per_family` of each family)
    when the stage uses it, and the first `prompts_per_family` of each imported source."""
    rows = collect.family_prompts(b.parents["world"].file("rl.parquet"), cfg.families, cfg.prompts_per_family) \
        if cfg.uses_world() and cfg.families else []
    return rows + [r for rows_ in imported(b).values() for r in rows_[:cfg.prompts_per_family]]


def _require(stage: str, kept: list[dict], minimum: int, counts: dict) -> None:
    if len(kept) < minimum:
        raise ValueError(f"{stage}: only {len(kept)} samples passed the filters (min_samples={minimum}); "
                         f"removed by reason: {counts['removed']}. Loosen {stage}.filters or sample more "
                         f"({stage}.sampling.n)")


def build_cold_start(b: BuildContext) -> None:
    cfg: collect.CollectConfig = b.node.config
    policy, out = b.parents["policy"], b.out
    rows = _prompts(b, cfg)
    log(f"[cold_start] sampling {len(rows)} prompts x {cfg.sampling.n} from {policy.stage} {policy.id[:12]}")
    [comps] = collect.sample(policy.path, [(rows, cfg.sampling)], cfg.engine, cfg.template)
    kept, judged, counts = collect.judge_reasoning(rows, comps, cfg, source=policy.stage)
    _require("cold_start", kept, cfg.min_samples, counts)
    write_rows(kept, out / "samples.parquet", "sft_samples")
    write_rows(judged, out / "judged.parquet", "judged_samples")
    _publish_card("cold_start", out, f"cold start (sampled from {policy.stage})", counts, kept)
    b.summary |= {"samples": len(kept), "judged": len(judged), "keep_rate": len(kept) / len(judged),
                  **{f"removed/{k}": v for k, v in counts["removed"].items()},
                  "prompts_with_a_kept_sample": counts["prompts_with_a_kept_sample"]}


def build_rejection(b: BuildContext) -> None:
    """Stage 6's SFT mixture, and stage 9's distillation traces (`distill_traces`)."""
    cfg: collect.RejectionConfig = b.node.config
    stage, policy, out = b.node.stage, b.parents["policy"], b.out
    rows = _prompts(b, cfg)
    instr = collect.per_family(read_rows(b.parents["world"].file("rl.parquet"), "prompts"), cfg.instruction_families,
                               cfg.prompts_per_family) if cfg.instruction_families else []
    log(f"[{stage}] sampling {len(rows)} reasoning prompts x {cfg.sampling.n} and "
        f"{len(instr)} instruction prompts x {cfg.instruction_sampling.n}")
    comps, icomps = collect.sample(policy.path, [(rows, cfg.sampling), (instr, cfg.instruction_sampling)],
                                   cfg.engine, cfg.template)
    kept, judged, counts = collect.judge_reasoning(rows, comps, cfg, source=policy.stage)
    _require(stage, kept, cfg.min_samples, counts)
    want = round(len(kept) * cfg.non_reasoning_share / (1 - cfg.non_reasoning_share))
    general, gcounts = collect.instruction_samples(instr, icomps, want, seed=cfg.sampling.seed) if instr else ([], {})
    cols = ("problem_id", "family", "kind", "notation", "question", "response", "source")
    mixture = [{k: s[k] for k in cols} | {"filter/reason": s.get("filter/reason")} for s in kept + general]
    write_rows(mixture, out / "samples.parquet", "sft_samples")
    write_rows(judged, out / "judged.parquet", "judged_samples")
    counts |= {"non_reasoning": len(general), **gcounts}
    _publish_card(stage, out, f"SFT mixture (reasoning sampled from {policy.stage})", counts, mixture)
    b.summary |= {"samples": len(mixture), "reasoning": len(kept), "non_reasoning": len(general),
                  "non_reasoning_share": len(general) / len(mixture), "judged": len(judged),
                  "keep_rate": len(kept) / len(judged), **{f"removed/{k}": v for k, v in counts["removed"].items()},
                  **{f"non_reasoning/{k}": v for k, v in gcounts.items()}}
