"""A recipe: one YAML file in configs/, validated against the stages' pydantic configs.

Each stage's library module owns its config class (`WorldConfig` in data/world.py, `PretrainConfig`
in models/train/pretrain.py, ...); `Recipe` only composes them. Validation happens at load time, before
any work: unknown fields, wrong types, out-of-range values and missing files fail with the file and
the field path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from r1flow.data.sources import WORLD, DataSource
from r1flow.data.world import INSTRUCTION_FAMILIES, REASONING_FAMILIES, WorldConfig
from r1flow.models.eval.collect import CollectConfig, RejectionConfig
from r1flow.models.train.distill import DistillConfig
from r1flow.models.eval.evaluate import EvalConfig
from r1flow.models.export import ExportConfig
from r1flow.models.train.grpo import GRPOStageConfig
from r1flow.models.plan import PlanConfig
from r1flow.models.train.pretrain import MODEL_TAGS, PretrainConfig
from r1flow.models.train.reward_model import RewardModelConfig
from r1flow.models.train.sft import SFTStageConfig
from r1flow.models.train.tracking import TrackingConfig
from r1flow.models.arch.tokenizer import TokenizerConfig

DEFAULT_STORE = "./artifacts"


class RecipeError(ValueError):
    """A recipe file that cannot be used; the message names the file and the field."""


class ScheduleConfig(BaseModel):
    """Retraining schedule of the pipeline deployment (`r1flow serve`); changes no artifact."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(..., description="Cron expression, e.g. '0 3 * * 0' (Sundays at 03:00).")
    timezone: str = Field("UTC", description="IANA time zone the cron expression is read in.")
    active: bool = Field(True, description="False registers the schedule paused; switch it on in the UI.")

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from prefect.client.schemas.schedules import CronSchedule

        CronSchedule(cron=v)  # Prefect's own check: the deployment would be refused otherwise
        return v


class Recipe(BaseModel):
    """The whole pipeline's configuration: one section per stage."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("tiny", description="Recipe name, shown in run names and reports.")
    store: str | None = Field(None, description="Artifact store root (default: $R1FLOW_STORE or ./artifacts).")
    world: WorldConfig = Field(default_factory=WorldConfig, description="Stage 0: task world and corpus.")
    data: dict[str, DataSource] = Field(default_factory=dict, description=(
        "Stage 0: your own data sources by name (files, URLs, hub datasets), imported as artifacts; stages "
        "name them in `datasets` (RL, sampling, SFT) and `evaluate.benchmarks`."))
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="Stage 0: BPE tokenizer.")
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig, description="Stage 1: MoE base model.")
    r1_zero: GRPOStageConfig = Field(default_factory=GRPOStageConfig,
                                     description="Stage 2: R1-Zero, GRPO from the base with rule rewards.")
    cold_start: CollectConfig = Field(
        default_factory=CollectConfig,
        description="Stage 3: long CoT sampled from R1-Zero, kept if correct and readable, rewritten.")
    sft_cold: SFTStageConfig = Field(default_factory=SFTStageConfig,
                                     description="Stage 4: SFT of the base model on the cold-start data.")
    reasoning_rl: GRPOStageConfig = Field(
        default_factory=lambda: GRPOStageConfig(rewards={"accuracy": 1.0, "format": 1.0, "language": 1.0}),
        description="Stage 5: GRPO from sft_cold, rule rewards + language consistency.")
    rejection_sampling: RejectionConfig = Field(
        default_factory=RejectionConfig,
        description="Stage 6: reasoning samples from reasoning_rl plus non-reasoning data, the SFT mixture.")
    sft_mix: SFTStageConfig = Field(default_factory=SFTStageConfig,
                                    description="Stage 7: SFT of the base model on the mixture.")
    reward_model: RewardModelConfig = Field(
        default_factory=RewardModelConfig,
        description="Stage 8a: helpfulness reward model (TRL RewardTrainer) on checkable preference pairs.")
    final_rl: GRPOStageConfig = Field(
        default_factory=lambda: GRPOStageConfig(
            rewards={"accuracy": 1.0, "format": 1.0, "language": 1.0, "helpfulness": 1.0},
            families=list(REASONING_FAMILIES + INSTRUCTION_FAMILIES)),
        description="Stage 8: GRPO from sft_mix over all scenarios: rule rewards for reasoning prompts, the "
                    "reward model for general ones. Its output is the R1 checkpoint.")
    distill: DistillConfig = Field(
        default_factory=DistillConfig,
        description="Stage 9: dense students pretrained on the corpus, fine-tuned on R1's traces (no RL), and the "
                    "same students trained with RL only as the baseline. No students: stage 9 is skipped.")
    evaluate: EvalConfig = Field(default_factory=EvalConfig, description="Stage 10: evaluation and the report.")
    export: ExportConfig = Field(default_factory=ExportConfig, description=(
        "After evaluation: GGUF files (checked by llama.cpp) with Ollama Modelfiles and Hugging Face folders of "
        "R1 and the distilled students (or `checkpoints`), listed in the report."))
    stop_after: Literal["pretrain", "r1_zero", "sft_cold", "reasoning_rl", "sft_mix", "final_rl"] | None = Field(
        None, description="Last checkpoint of the MoE line (stages 1-8) this recipe trains; the report evaluates "
                          "the line up to it (r1_zero: an R1-Zero-only run). Default: the whole line.")
    plan: PlanConfig = Field(default_factory=PlanConfig,
                             description="Hardware and cost assumptions of `r1flow plan`; changes no artifact.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description=(
        "TensorBoard / MLflow (and W&B / trackio through TRL) for every training stage; off when empty; changes no "
        "artifact."))
    schedule: ScheduleConfig | None = Field(
        None, description="Retraining schedule of the pipeline deployment (`r1flow serve`); changes no artifact.")

    def data_uses(self) -> list[tuple[str, str, str]]:
        """(field path, source name, use it needs) of every reference to a `data:` source."""
        out = []
        for name, section in [*self, *(("distill." + k, v) for k, v in self.distill)]:
            for i, d in enumerate(getattr(section, "datasets", None) or []):
                if d != WORLD:
                    need = "sft" if isinstance(section, SFTStageConfig) else "prompts"
                    out.append((f"{name}.datasets.{i}", d, need))
        out += [(f"evaluate.benchmarks.{i}.data", b.data, "prompts") for i, b in enumerate(self.evaluate.benchmarks)]
        return out

    def benchmark_sources(self) -> list[str]:
        return [b.data for b in self.evaluate.benchmarks]

    @model_validator(mode="after")
    def _check_stop(self) -> "Recipe":
        if self.stop_after not in (None, "final_rl") and self.distill.students and not self.distill.teacher_from:
            raise ValueError(f"stop_after={self.stop_after} ends the MoE line before final_rl, whose R1 writes the "
                             "distillation traces: drop distill.students, set distill.teacher_from, or stop later")
        return self

    @model_validator(mode="after")
    def _check_data(self) -> "Recipe":
        for name in self.data:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", name):
                raise ValueError(f"data.{name}: a source name is lowercase letters, digits, _ and -")
            if name in (WORLD, *REASONING_FAMILIES, *INSTRUCTION_FAMILIES):
                raise ValueError(f"data.{name}: the name is taken by the generated world; choose another")
        for field, name, need in self.data_uses():
            if name not in self.data:
                raise ValueError(f"{field}: no source {name!r} in `data:` (sources: {sorted(self.data) or 'none'})")
            if self.data[name].use != need:
                raise ValueError(f"{field}: source {name!r} has use: {self.data[name].use}, this field needs {need}")
        training = {name for field, name, _ in self.data_uses() if not field.startswith("evaluate.")}
        both = training & set(self.benchmark_sources())
        if both:
            raise ValueError(f"data source(s) {sorted(both)} are both trained on and benchmarks; a benchmark must be "
                             "held out")
        return self

    @model_validator(mode="after")
    def _check(self) -> "Recipe":
        if self.pretrain.import_from is None:
            limit = self.pretrain.model.max_position_embeddings
            for name, section in self:  # every section that samples from the MoE line's checkpoints
                engine = getattr(section, "engine", None)
                if engine is None:
                    continue
                n = engine.max_model_len
                if n > limit:
                    raise ValueError(f"{name}.engine.max_model_len={n} exceeds "
                                     f"pretrain.model.max_position_embeddings={limit}")
        for i, st in enumerate(self.distill.students):
            if st.pretrain.import_from is not None:
                continue
            limit = st.pretrain.model.max_position_embeddings
            for name, eng in (("distill.traces", self.distill.traces.engine), ("distill.rl", self.distill.rl.engine),
                              ("evaluate", self.evaluate.engine)):
                if eng.max_model_len > limit:
                    raise ValueError(f"{name}.engine.max_model_len={eng.max_model_len} exceeds "
                                     f"distill.students.{i}.pretrain.model.max_position_embeddings={limit} "
                                     f"(student {st.name!r})")
        return self

    def store_root(self) -> str:
        return self.store or os.environ.get("R1FLOW_STORE") or DEFAULT_STORE


def _local_paths(recipe: Recipe) -> list[tuple[str, str]]:
    """(field path, value) of every field that names a local file or directory."""
    out = []
    if recipe.pretrain.import_from:
        out.append(("pretrain.import_from", recipe.pretrain.import_from))
    for i, st in enumerate(recipe.distill.students):
        if st.pretrain.import_from:
            out.append((f"distill.students.{i}.pretrain.import_from", st.pretrain.import_from))
    if recipe.distill.teacher_from:
        out.append(("distill.teacher_from", recipe.distill.teacher_from))
    if recipe.tokenizer.hub_id:
        out.append(("tokenizer.hub_id", recipe.tokenizer.hub_id))
    return out


def _is_path(value: str) -> bool:
    # Hub ids look like "org/name"; a value that starts like a path is treated as one.
    return value.startswith((".", "/", "~")) or os.path.isabs(value)


def _field_path(loc: tuple) -> str:
    """A pydantic error location as the YAML field path: `model`'s union tag (PretrainConfig.model,
    "moe" or "dense") is not a field the user wrote."""
    parts = [str(p) for i, p in enumerate(loc) if not (i and loc[i - 1] == "model" and p in MODEL_TAGS)]
    return ".".join(parts) or "<root>"


def load_recipe(path: str | Path, overrides: dict | None = None) -> Recipe:
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of stage sections, got {type(data).__name__}")
    for key, value in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        lines = [f"{path}: invalid recipe ({len(errors)} error{'s' * (len(errors) > 1)})"]
        for err in errors:
            loc = _field_path(err["loc"])
            got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
            lines.append(f"  {loc}: {err['msg']}{got}")
        raise RecipeError("\n".join(lines)) from None
    for field, value in _local_paths(recipe):
        if _is_path(value) and not Path(value).expanduser().exists():
            raise RecipeError(f"{path}: {field}: no such file or directory: {value}")
    for name, src in recipe.data.items():
        local = src.path and "://" not in src.path and not any(ch in src.path for ch in "*?[")
        if local and not Path(src.path).expanduser().exists():
            raise RecipeError(f"{path}: data.{name}.path: no such file or directory: {src.path} "
                              f"(relative paths are read from the directory r1flow runs in, {os.getcwd()})")
    return recipe
