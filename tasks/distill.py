"""Stage 9, distillation (R1 sec. 2.4) and its RL-only baseline (R1 sec. 4.1): Prefect tasks over
the code of earlier stages (models/distill.py says which).

Several students train in one run, so each task takes the student's name: it is part of the cache
key (`student_pretrain`, `distill`) or of the policy's parents (`student_rl`), and it names the
progress and curve artifacts.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.models import collect, grpo, sft
from r1flow.models.distill import StudentConfig
from r1flow.models.pretrain import PretrainConfig
from r1flow.tasks.common import run_stage
from r1flow.tasks.pretrain import pretrain_stage
from r1flow.tasks.r1 import COLLECT_MODULES, SFT_MODULES, build_rejection, build_sft
from r1flow.tasks.r1_zero import rl_stage


@task(name="student_pretrain", cache_policy=NONE)
def student_pretrain_task(student: StudentConfig, world_ref: ArtifactRef, tok_ref: ArtifactRef, store_root: str,
                          mode: str = "run") -> ArtifactRef:
    return pretrain_stage("student_pretrain", student.pretrain, world_ref, tok_ref, store_root, mode,
                          key_config=student, label=f"student_pretrain-{student.name}")


@task(name="distill_teacher", cache_policy=NONE)
def distill_teacher_task(source: str, world_ref: ArtifactRef, tok_ref: ArtifactRef, store_root: str,
                         mode: str = "run") -> ArtifactRef:
    """`distill.teacher_from`: import the user's teacher into the store, as stage 1 imports a base."""
    return pretrain_stage("distill_teacher", PretrainConfig(import_from=source), world_ref, tok_ref, store_root, mode,
                          key_config={"import_from": source}, label="distill_teacher")


@task(name="distill_traces", cache_policy=NONE)
def distill_traces_task(cfg: collect.RejectionConfig, teacher_ref: ArtifactRef, world_ref: ArtifactRef,
                        store_root: str, mode: str = "run") -> ArtifactRef:
    """teacher_ref: the run's R1 (final_rl), or the imported `distill_teacher`."""
    return run_stage(ArtifactStore(store_root), stage="distill_traces", kind="dataset", config=cfg,
                     parents=[teacher_ref, world_ref], modules=COLLECT_MODULES,
                     build=lambda out, s, _w: build_rejection(cfg, teacher_ref, world_ref, out, s,
                                                              stage="distill_traces"),
                     mode=mode)


@task(name="distill", cache_policy=NONE)
def distill_task(name: str, cfg: sft.SFTStageConfig, student_ref: ArtifactRef, traces_ref: ArtifactRef,
                 store_root: str, mode: str = "run") -> ArtifactRef:
    label = f"distill-{name}"
    return run_stage(ArtifactStore(store_root), stage="distill", kind="checkpoint",
                     config={"student": name, "sft": cfg.model_dump(mode="json")},
                     parents=[student_ref, traces_ref], modules=SFT_MODULES,
                     build=lambda out, s, w: build_sft(label, cfg, student_ref, traces_ref, out, s, w), mode=mode)


@task(name="student_rl", cache_policy=NONE)
def student_rl_task(name: str, cfg: grpo.GRPOStageConfig, student_ref: ArtifactRef, world_ref: ArtifactRef,
                    store_root: str, mode: str = "run") -> ArtifactRef:
    return rl_stage("student_rl", cfg, student_ref, world_ref, store_root, mode, label=f"student_rl-{name}")
