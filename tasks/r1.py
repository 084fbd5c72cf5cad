"""Stages 3-8, the R1 path (R1 sec. 2.3): cold start, SFT, reasoning RL with language consistency,
rejection sampling, SFT on the mixture, the reward model, and the final RL over all scenarios.

Each stage is a cache-keyed `run_stage` over library code: sampling and filters in
models/collect.py, SFT in models/sft.py, GRPO in models/grpo.py (the R1-Zero code, reused through
`build_rl`), the reward model in models/reward_model.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from r1flow.data import filters, notation, schemas, templates, verify
from r1flow.data.schemas import read_rows, write_rows
from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.models import collect, engine, fleet, grpo, plots, reward_model, sft
from r1flow.tasks.common import Progress, log, publish_markdown, run_stage
from r1flow.tasks.r1_zero import rl_stage

COLLECT_MODULES = [collect, filters, verify, notation, templates, engine, fleet, schemas]
SFT_MODULES = [sft, templates, plots, schemas]


def _rows(world_ref: ArtifactRef, families: list[str], n: int) -> list[dict]:
    rows = collect.per_family(read_rows(world_ref.file("rl.parquet"), "prompts"), families, n)
    if not rows:
        raise ValueError(f"{world_ref.file('rl.parquet')}: no RL prompts for families {families}")
    return rows


def _publish_card(stage: str, out: Path, title: str, counts: dict, kept: list[dict]) -> None:
    md = collect.card_markdown(title, counts, dict(Counter(s["family"] for s in kept)))
    (out / "card.md").write_text(md)
    publish_markdown(f"r1flow-{stage}-data-card", md, f"{stage}: samples kept and removed, by filter")


def _require(stage: str, kept: list[dict], minimum: int, counts: dict) -> None:
    if len(kept) < minimum:
        raise ValueError(f"{stage}: only {len(kept)} samples passed the filters (min_samples={minimum}); "
                         f"removed by reason: {counts['removed']}. Loosen {stage}.filters or sample more "
                         f"({stage}.sampling.n)")


def build_cold_start(cfg: collect.CollectConfig, policy: ArtifactRef, world_ref: ArtifactRef, out: Path,
                     summary: dict) -> None:
    rows = _rows(world_ref, cfg.families, cfg.prompts_per_family)
    log(f"[cold_start] sampling {len(rows)} prompts x {cfg.sampling.n} from {policy.stage} {policy.id[:12]}")
    [comps] = collect.sample(policy.path, [(rows, cfg.sampling)], cfg.engine)
    kept, judged, counts = collect.judge_reasoning(rows, comps, cfg, source=policy.stage)
    _require("cold_start", kept, cfg.min_samples, counts)
    write_rows(kept, out / "samples.parquet", "sft_samples")
    write_rows(judged, out / "judged.parquet", "judged_samples")
    _publish_card("cold_start", out, f"cold start (sampled from {policy.stage})", counts, kept)
    summary |= {"samples": len(kept), "judged": len(judged), "keep_rate": len(kept) / len(judged),
                **{f"removed/{k}": v for k, v in counts["removed"].items()},
                "prompts_with_a_kept_sample": counts["prompts_with_a_kept_sample"]}


def build_rejection(cfg: collect.RejectionConfig, policy: ArtifactRef, world_ref: ArtifactRef, out: Path,
                    summary: dict, stage: str = "rejection_sampling") -> None:
    """Stage 6's SFT mixture, and stage 9's distillation traces (`distill_traces`, sampled from R1)."""
    rows = _rows(world_ref, cfg.families, cfg.prompts_per_family)
    instr = collect.per_family(read_rows(world_ref.file("rl.parquet"), "prompts"), cfg.instruction_families,
                               cfg.prompts_per_family)
    log(f"[{stage}] sampling {len(rows)} reasoning prompts x {cfg.sampling.n} and "
        f"{len(instr)} instruction prompts x {cfg.instruction_sampling.n}")
    comps, icomps = collect.sample(policy.path, [(rows, cfg.sampling), (instr, cfg.instruction_sampling)],
                                   cfg.engine)
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
    summary |= {"samples": len(mixture), "reasoning": len(kept), "non_reasoning": len(general),
                "non_reasoning_share": len(general) / len(mixture), "judged": len(judged),
                "keep_rate": len(kept) / len(judged), **{f"removed/{k}": v for k, v in counts["removed"].items()},
                **{f"non_reasoning/{k}": v for k, v in gcounts.items()}}


def build_sft(stage: str, cfg: sft.SFTStageConfig, base: ArtifactRef, data: ArtifactRef, out: Path, summary: dict,
              work: Path) -> None:
    samples = read_rows(data.file("samples.parquet"), "sft_samples")
    steps = max(1, round(len(samples) * cfg.epochs / cfg.batch_size))
    progress = Progress(stage, steps)
    summary |= sft.run_sft(cfg, Path(base.path), samples, out, work, stage=stage,
                           on_step=lambda m: progress.update(m["step"]))
    summary["data_sources"] = dict(Counter(s["source"] for s in samples))


def build_reward_model(cfg: reward_model.RewardModelConfig, policy: ArtifactRef, world_ref: ArtifactRef, out: Path,
                       summary: dict, work: Path) -> None:
    import random

    rows = _rows(world_ref, cfg.families, cfg.prompts_per_family)
    [comps] = collect.sample(policy.path, [(rows, cfg.sampling)], cfg.engine)
    pairs = reward_model.preference_pairs(rows, [[c.text for c in cs] for cs in comps], cfg.seed, cfg.pairs_per_prompt)
    ids = sorted({p["problem_id"] for p in pairs})
    random.Random(cfg.seed).shuffle(ids)
    held = set(ids[: max(1, round(len(ids) * cfg.heldout_fraction))])
    for p in pairs:
        p["split"] = "heldout" if p["problem_id"] in held else "train"
    train = [p for p in pairs if p["split"] == "train"]
    heldout = [p for p in pairs if p["split"] == "heldout"]
    log(f"[reward_model] {len(train)} training and {len(heldout)} held-out preference pairs "
        f"({dict(Counter(p['source'] for p in pairs))})")
    summary |= reward_model.train_reward_model(cfg, Path(policy.path), train, heldout, out, work)
    extra = out / "r1flow"
    extra.mkdir(exist_ok=True)
    write_rows(pairs, extra / "pairs.parquet", "preference_pairs")
    summary["pair_sources"] = dict(Counter(p["source"] for p in pairs))
    log(f"[reward_model] held-out pair accuracy {summary['heldout_pair_accuracy']:.3f}")


@task(name="cold_start", cache_policy=NONE)
def cold_start_task(cfg: collect.CollectConfig, r1_zero_ref: ArtifactRef, world_ref: ArtifactRef, store_root: str,
                    mode: str = "run") -> ArtifactRef:
    return run_stage(ArtifactStore(store_root), stage="cold_start", kind="dataset", config=cfg,
                     parents=[r1_zero_ref, world_ref], modules=COLLECT_MODULES,
                     build=lambda out, s, _w: build_cold_start(cfg, r1_zero_ref, world_ref, out, s), mode=mode)


@task(name="sft_cold", cache_policy=NONE)
def sft_cold_task(cfg: sft.SFTStageConfig, pretrain_ref: ArtifactRef, cold_ref: ArtifactRef, store_root: str,
                  mode: str = "run") -> ArtifactRef:
    return run_stage(ArtifactStore(store_root), stage="sft_cold", kind="checkpoint", config=cfg,
                     parents=[pretrain_ref, cold_ref], modules=SFT_MODULES,
                     build=lambda out, s, w: build_sft("sft_cold", cfg, pretrain_ref, cold_ref, out, s, w), mode=mode)


@task(name="reasoning_rl", cache_policy=NONE)
def reasoning_rl_task(cfg: grpo.GRPOStageConfig, sft_cold_ref: ArtifactRef, world_ref: ArtifactRef, store_root: str,
                      mode: str = "run") -> ArtifactRef:
    return rl_stage("reasoning_rl", cfg, sft_cold_ref, world_ref, store_root, mode)


@task(name="rejection_sampling", cache_policy=NONE)
def rejection_sampling_task(cfg: collect.RejectionConfig, rl_ref: ArtifactRef, world_ref: ArtifactRef,
                            store_root: str, mode: str = "run") -> ArtifactRef:
    return run_stage(ArtifactStore(store_root), stage="rejection_sampling", kind="dataset", config=cfg,
                     parents=[rl_ref, world_ref], modules=COLLECT_MODULES,
                     build=lambda out, s, _w: build_rejection(cfg, rl_ref, world_ref, out, s), mode=mode)


@task(name="sft_mix", cache_policy=NONE)
def sft_mix_task(cfg: sft.SFTStageConfig, pretrain_ref: ArtifactRef, mix_ref: ArtifactRef, store_root: str,
                 mode: str = "run") -> ArtifactRef:
    return run_stage(ArtifactStore(store_root), stage="sft_mix", kind="checkpoint", config=cfg,
                     parents=[pretrain_ref, mix_ref], modules=SFT_MODULES,
                     build=lambda out, s, w: build_sft("sft_mix", cfg, pretrain_ref, mix_ref, out, s, w), mode=mode)


@task(name="reward_model", cache_policy=NONE)
def reward_model_task(cfg: reward_model.RewardModelConfig, sft_mix_ref: ArtifactRef, world_ref: ArtifactRef,
                      store_root: str, mode: str = "run") -> ArtifactRef:
    return run_stage(ArtifactStore(store_root), stage="reward_model", kind="checkpoint", config=cfg,
                     parents=[sft_mix_ref, world_ref],
                     modules=[reward_model, collect, verify, templates, schemas, engine, fleet],
                     build=lambda out, s, w: build_reward_model(cfg, sft_mix_ref, world_ref, out, s, w), mode=mode)


@task(name="final_rl", cache_policy=NONE)
def final_rl_task(cfg: grpo.GRPOStageConfig, sft_mix_ref: ArtifactRef, rm_ref: ArtifactRef | None,
                  world_ref: ArtifactRef, store_root: str, mode: str = "run") -> ArtifactRef:
    return rl_stage("final_rl", cfg, sft_mix_ref, world_ref, store_root, mode, reward_model_ref=rm_ref)
