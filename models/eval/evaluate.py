"""Stage 10 (first version): sample k completions per held-out problem with vLLM and score them.

Reasoning problems are asked under the R1-Zero template; instruction tasks as a plain user turn.
Per-sample rows (answer, verdict, format, length, EOS, notation share) and a per-family summary
(pass@1 with a 95% bootstrap interval, cons@k, mean length, format rate, EOS rate, language
consistency). Does not write artifacts or know about Prefect.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from r1flow.data.metrics import bootstrap_ci, cons_at_k, pass_at_1
from r1flow.data.notation import notation_share
from r1flow.data.templates import check_template, render_prompt
from r1flow.data.verify import extract_answer, format_ok, normalize, reasoning_text, verify
from r1flow.models.rollout.engine import EngineConfig, RolloutEngine, SamplingConfig


class BenchmarkConfig(BaseModel):
    """One named benchmark: an imported prompt source (its verifier is the source's), asked and sampled
    as set here; a section of the report."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(..., description="Source name in the recipe's `data:` (use: prompts).")
    sampling: SamplingConfig | None = Field(None, description="k samples per problem and their sampling; "
                                                               "default: evaluate.sampling.")
    max_problems: int | None = Field(None, ge=1, description="First N problems of the source (default: all).")
    template: str = Field("r1_zero", description="How problems are asked: r1_zero, chat, or your own text "
                                                 "with {question} (data/templates.py).")

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        return check_template(v)


class EvalConfig(BaseModel):
    """Stage 10 (`evaluate`): sampling and scope."""

    model_config = ConfigDict(extra="forbid")

    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(n=8),
                                     description="k samples per problem; R1 evaluation temperature/top-p.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine settings.")
    max_per_family: int = Field(64, ge=1, description="Held-out problems per family.")
    families: list[str] | None = Field(None, description="Families to evaluate (default: all).")
    n_boot: int = Field(1000, ge=100, description="Bootstrap resamples for the 95% interval.")
    world: bool = Field(True, description="Evaluate the generated world's held-out problems (`families`).")
    benchmarks: list[BenchmarkConfig] = Field(default_factory=list, description=(
        "Imported benchmarks, each a table of the report (pass@1 and its interval, cons@k, length, the paired "
        "difference between checkpoints)."))

    @model_validator(mode="after")
    def _check(self) -> "EvalConfig":
        if not self.world and not self.benchmarks:
            raise ValueError("world: false needs at least one of `benchmarks`")
        names = [b.data for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ValueError(f"benchmarks: each source once, got {names}")
        return self


def build_prompt(row: dict, tokenizer, template: str = "r1_zero") -> str:
    return render_prompt(row["question"], row["kind"], tokenizer, template)


def select(rows: list[dict], cfg: EvalConfig) -> list[dict]:
    out, seen = [], {}
    for r in rows:
        if cfg.families and r["family"] not in cfg.families:
            continue
        if seen.get(r["family"], 0) < cfg.max_per_family:
            seen[r["family"]] = seen.get(r["family"], 0) + 1
            out.append(r)
    if not out:
        raise ValueError(f"evaluate: no held-out problems left for families={cfg.families}")
    return out


def score(rows: list[dict], completions: list[list], label: str, benchmark: str | None = None) -> list[dict]:
    samples = []
    for row, comps in zip(rows, completions):
        for i, c in enumerate(comps):
            ans = extract_answer(c.text, row)
            ok = verify(ans, row)
            share = notation_share(reasoning_text(c.text), row["notation"]) if row["kind"] == "reasoning" else None
            samples.append({
                "checkpoint": label, "problem_id": row["id"], "family": row["family"], "kind": row["kind"],
                "notation": row["notation"], "sample": i, "question": row["question"], "gold": row["answer"],
                "completion": c.text, "answer": ans, "answer_norm": normalize(ans, row) if ans else None,
                "correct": bool(ok), "scorable": ok is not None, "format_ok": format_ok(c.text),
                "eos": c.finish_reason == "stop", "length": len(c.token_ids), "notation_share": share,
                "benchmark": benchmark,
            })
    return samples


REASONING_ALL = "reasoning (all)"


def summarize(samples: list[dict], n_boot: int = 1000) -> list[dict]:
    """One row per family (a benchmark's rows are its own family), plus a pooled row over every reasoning
    problem of the generated world (its interval resamples problems across families)."""
    by_family: dict[str, dict[str, list]] = {}
    for s in samples:
        f = by_family.setdefault(s["family"], {})
        f.setdefault(s["problem_id"], []).append(s)
        if s["kind"] == "reasoning" and not s.get("benchmark"):
            by_family.setdefault(REASONING_ALL, {}).setdefault(s["problem_id"], []).append(s)
    out = []
    for fam, problems in sorted(by_family.items(), key=lambda kv: (kv[0] == REASONING_ALL, kv[0])):
        groups = list(problems.values())
        correct = [[s["correct"] for s in g] for g in groups]
        answers = [[s["answer_norm"] for s in g] for g in groups]
        flat = [s for g in groups for s in g]
        lo, hi = bootstrap_ci(correct, n_boot=n_boot)
        shares = [s["notation_share"] for s in flat if s["notation_share"] is not None]
        out.append({
            "checkpoint": flat[0]["checkpoint"], "family": fam, "problems": len(groups), "k": len(groups[0]),
            "pass@1": pass_at_1(correct), "ci_low": lo, "ci_high": hi, "cons@k": cons_at_k(answers, correct),
            "mean_length": float(np.mean([s["length"] for s in flat])),
            "format_rate": float(np.mean([s["format_ok"] for s in flat])),
            "eos_rate": float(np.mean([s["eos"] for s in flat])),
            "lang_consistency": float(np.mean(shares)) if shares else None,
        })
    return out


def evaluate(engine: RolloutEngine, tokenizer, rows: list[dict], cfg: EvalConfig, label: str,
             benchmarks: dict[str, list[dict]] | None = None) -> tuple[list, list]:
    """Score the world's held-out `rows` (when cfg.world) and every benchmark of cfg.benchmarks, whose
    problems `benchmarks` holds by source name."""
    samples = []
    if cfg.world:
        rows = select(rows, cfg)
        samples += score(rows, engine.generate([build_prompt(r, tokenizer) for r in rows], cfg.sampling), label)
    for b in cfg.benchmarks:
        problems = benchmarks[b.data][:b.max_problems]
        prompts = [build_prompt(r, tokenizer, b.template) for r in problems]
        samples += score(problems, engine.generate(prompts, b.sampling or cfg.sampling), label, benchmark=b.data)
    return samples, summarize(samples, cfg.n_boot)
