"""Ship what the pipeline makes: GGUF files (llama.cpp's converter and quantizer), an Ollama Modelfile next
to each, self-contained Hugging Face folders, and the llama.cpp check every GGUF file passes.

- gguf.py: converter and quantizer of the pinned llama-cpp-python release, with the pre-tokenizer mapping
- check.py: llama.cpp against transformers (tokens, log-probs, greedy completions)
- ollama.py: Modelfile and the Go chat template derived from (and checked against) the Jinja one
- hf_folder.py: weights, tokenizer, generation config and model card
- export.py: one checkpoint through all of it (what the `export` stage and `r1flow export` run)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from r1flow.models.export.gguf import CONVERTER_TYPES, GGUF_TYPES


class ExportCheckConfig(BaseModel):
    """How the llama.cpp check of each GGUF file samples (check.py)."""

    model_config = ConfigDict(extra="forbid")

    prompts: int = Field(16, ge=1, description="Held-out prompts tokenized and scored by both runtimes.")
    greedy: int = Field(4, ge=0, description="Of those, how many are decoded greedily by both (must match for "
                                            "f32/f16/bf16 files).")
    max_new_tokens: int = Field(48, ge=1, description="Length of the greedy completions.")


class ExportConfig(BaseModel):
    """Which checkpoints a run exports (the `export` stage, after evaluation) and how."""

    model_config = ConfigDict(extra="forbid")

    checkpoints: list[str] | None = Field(None, description=(
        "Evaluation labels of the checkpoints to export (r1, r1_zero, teacher, STUDENT_distill, ...). Default: R1 "
        "(when the run trains it), the imported teacher, and every distilled student; [] exports nothing."))
    formats: list[Literal["gguf", "hf"]] = Field(["gguf", "hf"], min_length=1,
                                                 description="gguf: llama.cpp/Ollama; hf: a Hugging Face folder.")
    gguf_type: Literal["f32", "f16", "bf16", "q8_0"] = Field(
        "f16", description="Type the converter writes; the quantizations below are made from it.")
    quant: list[str] = Field(["q8_0", "q4_k_m"], description=f"More GGUF files, one per type ({', '.join(GGUF_TYPES)}).")
    system_prompt: bool = Field(True, description=(
        "Put the R1-Zero system prompt the models were trained with into each Modelfile (SYSTEM)."))
    check: ExportCheckConfig = Field(default_factory=ExportCheckConfig)

    @field_validator("quant")
    @classmethod
    def _quant(cls, v: list[str]) -> list[str]:
        bad = [q for q in v if q not in GGUF_TYPES]
        if bad:
            raise ValueError(f"unknown GGUF type(s) {bad}; choose from {', '.join(GGUF_TYPES)}")
        if len(set(v)) != len(v):
            raise ValueError(f"each type once, got {v}")
        return v

    def gguf_types(self) -> list[str]:
        """Every GGUF file's type, the converter's first."""
        return [self.gguf_type, *(q for q in self.quant if q != self.gguf_type)]


__all__ = ["CONVERTER_TYPES", "ExportCheckConfig", "ExportConfig"]
