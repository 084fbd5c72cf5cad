"""The r1flow DAG as Prefect flows: the whole pipeline, and one flow per stage. Wiring only.

Stages before `from_stage` are not run: their artifacts must already be in the store for the same
recipe (each is looked up by its cache key). Stages after `until_stage` are not run. Stages named
in `force` are recomputed even if cached. Every other stage reuses its cached artifact or runs.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field

from r1flow.data.lineage import mermaid_markdown
from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.recipe import Recipe
from r1flow.tasks.common import log, publish_markdown
from r1flow.tasks.distill import (distill_task, distill_teacher_task, distill_traces_task, student_pretrain_task,
                                  student_rl_task)
from r1flow.tasks.evaluate import evaluate_task
from r1flow.tasks.plan import publish_plan
from r1flow.tasks.pretrain import pretrain_task
from r1flow.tasks.r1 import (cold_start_task, final_rl_task, reasoning_rl_task, rejection_sampling_task,
                             reward_model_task, sft_cold_task, sft_mix_task)
from r1flow.tasks.r1_zero import r1_zero_task
from r1flow.tasks.report import report_task
from r1flow.tasks.tokenizer import tokenizer_task
from r1flow.tasks.world import world_task

# Stage name -> (what it does, its parent stages). Order is execution order.
STAGES: dict[str, tuple[str, list[str]]] = {
    "world": ("generate task world, pretraining corpus and held-out prompt sets", []),
    "tokenizer": ("train the BPE tokenizer with chat template and <think>/<answer> tokens", ["world"]),
    "pretrain": ("pretrain the DeepSeek-V3-style MoE base model (or import your own)", ["world", "tokenizer"]),
    "r1_zero": ("GRPO from the base with rule rewards (accuracy + format), vLLM rollouts", ["pretrain", "world"]),
    "cold_start": ("sample long CoT from R1-Zero, keep correct and readable ones, rewrite, data card",
                   ["r1_zero", "world"]),
    "sft_cold": ("SFT of the base model on the cold-start data", ["pretrain", "cold_start"]),
    "reasoning_rl": ("GRPO from sft_cold: accuracy + format + language consistency", ["sft_cold", "world"]),
    "rejection_sampling": ("sample reasoning_rl, keep correct and readable; add non-reasoning data: the SFT mixture",
                           ["reasoning_rl", "world"]),
    "sft_mix": ("SFT of the base model on the mixture", ["pretrain", "rejection_sampling"]),
    "reward_model": ("helpfulness reward model (TRL RewardTrainer) on checkable preference pairs",
                     ["sft_mix", "world"]),
    "final_rl": ("GRPO from sft_mix over all prompts: rule rewards + the reward model; the R1 checkpoint",
                 ["sft_mix", "reward_model", "world"]),
    "student_pretrain": ("pretrain each dense student (Llama/Qwen2-style) on the same corpus, or import it",
                         ["world", "tokenizer"]),
    "distill_traces": ("R1 answers the distillation prompts with vLLM; verified, readable traces plus "
                       "instruction answers", ["final_rl", "world"]),
    "distill": ("SFT of each pretrained student on R1's traces, no RL", ["student_pretrain", "distill_traces"]),
    "student_rl": ("the baseline: GRPO from each pretrained student with the R1-Zero rewards",
                   ["student_pretrain", "world"]),
    "evaluate": ("pass@1 / cons@k on held-out problems for every checkpoint",
                 ["pretrain", "r1_zero", "sft_cold", "reasoning_rl", "sft_mix", "final_rl", "student_pretrain",
                  "distill", "student_rl", "world"]),
    "report": ("one table over every checkpoint, the paper's four claims, plots: report.md", ["evaluate"]),
}
StageName = Literal["world", "tokenizer", "pretrain", "r1_zero", "cold_start", "sft_cold", "reasoning_rl",
                    "rejection_sampling", "sft_mix", "reward_model", "final_rl", "student_pretrain",
                    "distill_traces", "distill", "student_rl", "evaluate", "report"]
# Checkpoint-producing stages, in order; evaluate scores each one the run has.
CHECKPOINTS = ["pretrain", "r1_zero", "sft_cold", "reasoning_rl", "sft_mix", "final_rl"]
LABELS = {"pretrain": "base", "r1_zero": "r1_zero", "sft_cold": "sft_cold", "reasoning_rl": "reasoning_rl",
          "sft_mix": "sft_mix", "final_rl": "r1"}
RL_STAGES = ["r1_zero", "reasoning_rl", "final_rl"]
# Per-student checkpoints: refs key prefix -> evaluation label suffix.
STUDENT_CHECKPOINTS = {"student_pretrain": "", "distill": "_distill", "student_rl": "_rl"}


class RunOptions(BaseModel):
    """Which part of the DAG to run."""

    from_stage: StageName | None = Field(None, description="First stage to run; earlier ones must be cached.")
    until_stage: StageName | None = Field(None, description="Last stage to run.")
    force: list[StageName] = Field(default_factory=list, description="Stages to recompute even if cached.")

    def mode(self, stage: str) -> str:
        names = list(STAGES)
        i = names.index(stage)
        if self.until_stage and i > names.index(self.until_stage):
            return "skip"
        if self.from_stage and i < names.index(self.from_stage):
            return "cached"
        return "force" if stage in self.force else "run"


def run_dag(recipe: Recipe, opts: RunOptions) -> dict[str, ArtifactRef]:
    if opts.from_stage and opts.until_stage and list(STAGES).index(opts.from_stage) > list(STAGES).index(opts.until_stage):
        raise ValueError(f"--from {opts.from_stage} comes after --until {opts.until_stage}")
    root = recipe.store_root()
    refs: dict[str, ArtifactRef] = {}

    def go(stage: str, fn, *args) -> bool:
        return go_as(stage, stage, fn, *args)

    def go_as(key: str, stage: str, fn, *args) -> bool:
        mode = opts.mode(stage)
        if mode == "skip":
            return False
        refs[key] = fn(*args, root, mode)
        return True

    go("world", world_task, recipe.world)
    go("tokenizer", tokenizer_task, recipe.tokenizer, refs.get("world"))
    go("pretrain", pretrain_task, recipe.pretrain, refs.get("world"), refs.get("tokenizer"))
    go("r1_zero", r1_zero_task, recipe.r1_zero, refs.get("pretrain"), refs.get("world"))
    go("cold_start", cold_start_task, recipe.cold_start, refs.get("r1_zero"), refs.get("world"))
    go("sft_cold", sft_cold_task, recipe.sft_cold, refs.get("pretrain"), refs.get("cold_start"))
    go("reasoning_rl", reasoning_rl_task, recipe.reasoning_rl, refs.get("sft_cold"), refs.get("world"))
    go("rejection_sampling", rejection_sampling_task, recipe.rejection_sampling, refs.get("reasoning_rl"),
       refs.get("world"))
    go("sft_mix", sft_mix_task, recipe.sft_mix, refs.get("pretrain"), refs.get("rejection_sampling"))
    if "helpfulness" in recipe.final_rl.rewards:
        go("reward_model", reward_model_task, recipe.reward_model, refs.get("sft_mix"), refs.get("world"))
    go("final_rl", final_rl_task, recipe.final_rl, refs.get("sft_mix"), refs.get("reward_model"), refs.get("world"))
    students = recipe.distill.students
    for s in students:
        go_as(f"student_pretrain:{s.name}", "student_pretrain", student_pretrain_task, s, refs.get("world"),
              refs.get("tokenizer"))
    teacher = "final_rl"
    if students and recipe.distill.teacher_from:
        # The user's teacher replaces R1 as the traces' parent; it runs (is imported) with distill_traces.
        teacher = "distill_teacher"
        go_as(teacher, "distill_traces", distill_teacher_task, recipe.distill.teacher_from, refs.get("world"),
              refs.get("tokenizer"))
    if students:
        go("distill_traces", distill_traces_task, recipe.distill.traces, refs.get(teacher), refs.get("world"))
    for s in students:
        go_as(f"distill:{s.name}", "distill", distill_task, s.name, recipe.distill.sft,
              refs.get(f"student_pretrain:{s.name}"), refs.get("distill_traces"))
        if recipe.distill.rl_baseline:
            go_as(f"student_rl:{s.name}", "student_rl", student_rl_task, s.name, recipe.distill.rl,
                  refs.get(f"student_pretrain:{s.name}"), refs.get("world"))
    if opts.mode("evaluate") != "skip":
        checkpoints = [(LABELS[st], refs[st]) for st in CHECKPOINTS if st in refs]
        if "distill_teacher" in refs:
            checkpoints.append(("teacher", refs["distill_teacher"]))
        checkpoints += [(s.name + suffix, refs[f"{st}:{s.name}"]) for s in students
                        for st, suffix in STUDENT_CHECKPOINTS.items() if f"{st}:{s.name}" in refs]
        for label, ckpt in checkpoints:
            refs[f"evaluate:{label}"] = evaluate_task(recipe.evaluate, label, ckpt, refs["world"], root,
                                                      opts.mode("evaluate"))
        evals = {k.split(":", 1)[1]: v for k, v in refs.items() if k.startswith("evaluate:")}
        if evals and opts.mode("report") != "skip":
            curves = {st: refs[st] for st in RL_STAGES if st in refs}
            curves |= {f"{s.name}_rl": refs[f"student_rl:{s.name}"] for s in students if f"student_rl:{s.name}" in refs}
            refs["report"] = report_task(recipe.name, evals, curves, [s.name for s in students], root,
                                         opts.mode("report"))
    publish_lineage(root, refs, recipe.name)
    publish_plan(recipe, root, refs)
    for name, ref in refs.items():
        log(f"[r1flow] {name:<14} {ref.id[:12]}  {ref.path}")
    return refs


def publish_lineage(root: str, refs: dict[str, ArtifactRef], name: str) -> None:
    store = ArtifactStore(root)
    seen: dict[str, object] = {}
    for ref in refs.values():
        for m in store.ancestry(ref.id):
            seen.setdefault(m.id, m)
    if seen:
        publish_markdown("r1flow-lineage", mermaid_markdown(list(seen.values()), f"Lineage of this run ({name})"),
                         "Artifacts of this run and their parents")


def _recipe(recipe: Recipe, recipe_file: str | None) -> Recipe:
    if recipe_file is None:
        return recipe
    from r1flow.recipe import load_recipe

    return load_recipe(recipe_file)


@flow(name="r1flow-pipeline", log_prints=True)
def pipeline(recipe: Recipe = Recipe(), from_stage: StageName | None = None, until_stage: StageName | None = None,
             force: list[StageName] | None = None, recipe_file: str | None = None) -> dict[str, str]:
    """The DeepSeek-R1 recipe end to end. Returns stage -> artifact path. `recipe_file` (a YAML
    path on the worker, e.g. configs/deepseek_r1.yaml in the GPU image) replaces `recipe`."""
    refs = run_dag(_recipe(recipe, recipe_file),
                   RunOptions(from_stage=from_stage, until_stage=until_stage, force=force or []))
    return {k: v.path for k, v in refs.items()}


def _stage_flow(stage: StageName):
    def stage_flow(recipe: Recipe = Recipe(), force: bool = False, recipe_file: str | None = None) -> dict[str, str]:
        refs = run_dag(_recipe(recipe, recipe_file), RunOptions(from_stage=stage, until_stage=stage, force=[stage] if force else []))
        return {k: v.path for k, v in refs.items()}

    stage_flow.__doc__ = f"Run only the `{stage}` stage ({STAGES[stage][0]}); earlier stages must be cached."
    # Deployments import flows by module path (flows/deployments.py): the function's name must be the
    # module attribute it is bound to below.
    stage_flow.__name__ = stage_flow.__qualname__ = f"{stage}_flow"
    return flow(name=f"r1flow-{stage}", log_prints=True)(stage_flow)


world_flow = _stage_flow("world")
tokenizer_flow = _stage_flow("tokenizer")
pretrain_flow = _stage_flow("pretrain")
r1_zero_flow = _stage_flow("r1_zero")
cold_start_flow = _stage_flow("cold_start")
sft_cold_flow = _stage_flow("sft_cold")
reasoning_rl_flow = _stage_flow("reasoning_rl")
rejection_sampling_flow = _stage_flow("rejection_sampling")
sft_mix_flow = _stage_flow("sft_mix")
reward_model_flow = _stage_flow("reward_model")
final_rl_flow = _stage_flow("final_rl")
student_pretrain_flow = _stage_flow("student_pretrain")
distill_traces_flow = _stage_flow("distill_traces")
distill_flow = _stage_flow("distill")
student_rl_flow = _stage_flow("student_rl")
evaluate_flow = _stage_flow("evaluate")
report_flow = _stage_flow("report")
STAGE_FLOWS = {s: globals()[f"{s}_flow"] for s in STAGES}
