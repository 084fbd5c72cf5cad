"""Stage 9 `distill` (R1 sec. 2.4): small dense students fine-tuned on R1's outputs, and the paper's
baseline, the same students trained with R1-Zero-style RL only (R1 sec. 4.1, Table 6).

Everything here is configuration: the stages reuse the code of earlier stages without copies.
- `student_pretrain`: models/train/pretrain.py with a dense `model` (models/arch/dense.py), on the same
  corpus, or `import_from` a real student (Qwen2.5-Math-1.5B, Llama-3.1-8B, any causal LM id or path).
- `distill_traces`: R1 (the `final_rl` checkpoint) answers the distillation prompts with vLLM; the
  rejection-sampling code (models/eval/collect.py) keeps verified, readable traces and adds instruction
  answers, as the paper reused its ~800k SFT samples. With `teacher_from`, a checkpoint the user
  names writes them instead (open-r1 distils from DeepSeek-R1 itself); it is imported into the store
  as `distill_teacher` and evaluated as `teacher`, and the DAG then skips stages 1-8 (r1flow/stages.py).
- `distill`: models/train/sft.py (TRL `SFTTrainer`) on those traces, no RL afterwards.
- `student_rl`: models/train/grpo.py from the pretrained student with the R1-Zero rewards.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from r1flow.models.eval.collect import RejectionConfig
from r1flow.models.arch.dense import DenseModelConfig
from r1flow.models.train.grpo import GRPOStageConfig
from r1flow.models.train.pretrain import PretrainConfig
from r1flow.models.train.sft import SFTStageConfig


class StudentConfig(BaseModel):
    """One dense student: its name in reports and how its base is made."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[a-z][a-z0-9_]*$",
                      description="Label in the evaluation (lowercase letters, digits, underscores).")
    pretrain: PretrainConfig = Field(
        ..., description="Pretraining of the student on the pipeline's corpus (a dense `model`, mtp_depth 0), "
                         "or `import_from` a Hugging Face causal LM id or path.")

    @model_validator(mode="after")
    def _dense(self) -> "StudentConfig":
        if self.pretrain.import_from is None and not isinstance(self.pretrain.model, DenseModelConfig):
            raise ValueError(f"student {self.name!r}: pretrain.model must be dense (set model.arch: llama or "
                             "qwen2) or give pretrain.import_from")
        return self


class DistillConfig(BaseModel):
    """Stage 9: students, the traces they learn from, their SFT, and the RL-only baseline."""

    model_config = ConfigDict(extra="forbid")

    students: list[StudentConfig] = Field(default_factory=list,
                                          description="Dense students; an empty list skips stage 9.")
    teacher_from: str | None = Field(
        None, description="Hugging Face causal LM id or path that writes the traces instead of this run's R1 "
                          "(final_rl); None: the run's R1. When set, stages 1-8 are not needed and do not run "
                          "(unless --until names one), and the report evaluates this teacher and the students.")
    traces: RejectionConfig = Field(
        default_factory=RejectionConfig,
        description="R1 answers the distillation prompts; verified, readable traces plus instruction answers.")
    sft: SFTStageConfig = Field(default_factory=SFTStageConfig,
                                description="Student SFT on the traces (R1: two epochs, no RL afterwards).")
    rl_baseline: bool = Field(True, description="Also train each pretrained student with RL only (the baseline).")
    rl: GRPOStageConfig = Field(default_factory=GRPOStageConfig,
                                description="The RL-only baseline: GRPO from the pretrained student, R1-Zero rewards.")

    @model_validator(mode="after")
    def _unique(self) -> "DistillConfig":
        names = [s.name for s in self.students]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"students: duplicate names {dup}")
        return self
