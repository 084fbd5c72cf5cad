"""Stage 2 `r1_zero`: GRPO straight from the base model with rule rewards (accuracy + format)."""

from __future__ import annotations

import base64
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from r1flow.data import notation, rewards, templates, verify
from r1flow.data.schemas import read_rows
from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.models import engine, fleet, grpo, plots
from r1flow.tasks.common import Progress, publish_markdown, run_stage

GRPO_MODULES = [grpo, rewards, verify, engine, fleet, templates, notation, plots]


def curves_markdown(stage: str, summary: dict, png: Path) -> str:
    """Summary table plus the curves PNG embedded as a data URI (Prefect's UI renders Markdown)."""
    img = base64.b64encode(png.read_bytes()).decode()
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                     for k, v in summary.items() if not isinstance(v, (dict, list)))
    return (f"# {stage}: accuracy and response length over RL steps\n\n![curves](data:image/png;base64,{img})\n\n"
            f"| metric | value |\n|---|---|\n{rows}\n\nFile: `{png}`\n")


def build_rl(stage: str, cfg: grpo.GRPOStageConfig, policy: ArtifactRef, world_ref: ArtifactRef, out: Path,
             summary: dict, work: Path, learned_rewards: dict | None = None) -> None:
    rows = read_rows(world_ref.file("rl.parquet"), "prompts")
    progress = Progress(stage, cfg.steps)
    summary |= grpo.run_grpo(cfg, Path(policy.path), rows, out, work, on_step=lambda m: progress.update(m["step"]),
                             stage=stage, learned_rewards=learned_rewards)
    publish_markdown(f"r1flow-{stage}-curves", curves_markdown(stage, summary, out / "r1flow" / "curves.png"),
                     f"{stage}: training curves (R1 paper Figures 2-3 analogue)")


def rl_stage(stage: str, cfg: grpo.GRPOStageConfig, policy: ArtifactRef, world_ref: ArtifactRef, store_root: str,
             mode: str, reward_model_ref: ArtifactRef | None = None, label: str | None = None) -> ArtifactRef:
    """Every GRPO stage (r1_zero, reasoning_rl, final_rl, student_rl): the policy checkpoint and the
    world's RL prompts in, a checkpoint out; with `reward_model_ref`, its scorer is the `helpfulness`
    reward. `label` names the progress and curves artifacts where one stage trains several policies."""
    from r1flow.models import reward_model

    def build(out: Path, summary: dict, work: Path) -> None:
        learned = {"helpfulness": reward_model.RewardModelScorer(reward_model_ref.path)} if reward_model_ref else {}
        build_rl(label or stage, cfg, policy, world_ref, out, summary, work, learned_rewards=learned)

    extra = [reward_model_ref] if reward_model_ref else []
    return run_stage(ArtifactStore(store_root), stage=stage, kind="checkpoint", config=cfg,
                     parents=[policy, *extra, world_ref], modules=GRPO_MODULES + ([reward_model] if extra else []),
                     build=build, mode=mode)


@task(name="r1_zero", cache_policy=NONE)
def r1_zero_task(cfg: grpo.GRPOStageConfig, pretrain_ref: ArtifactRef, world_ref: ArtifactRef, store_root: str,
                 mode: str = "run") -> ArtifactRef:
    return rl_stage("r1_zero", cfg, pretrain_ref, world_ref, store_root, mode)
