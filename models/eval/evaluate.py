"""Stage 10 (first version): sample k completions per held-out problem with vLLM and score them.

Reasoning problems are asked under the R1-Zero template; instruction tasks as a plain user turn.
Per-sample rows (answer, verdict, format, length, EOS, notation share) and a per-family summary
(pass@1 with a 95% bootstrap interval, cons@k, mean length, format rate, EOS rate, language
consistency). Does not write artifacts or know about Prefect.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from r1flow.data.metrics import bootstrap_ci, cons_at_k, pass_at_1
from r1flow.data.notation import notation_share
from r1flow.data.templates import prompt_messages
from r1flow.data.verify import extract_answer, format_ok, normalize, reasoning_text, verify
from r1flow.models.rollout.engine import EngineConfig, RolloutEngine, SamplingConfig


class EvalConfig(BaseModel):
    """Stage 10 (`evaluate`): sampling and scope."""

    model_config = ConfigDict(extra="forbid")

    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(n=8),
                                     description="k samples per problem; R1 evaluation temperature/top-p.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine settings.")
    max_per_family: int = Field(64, ge=1, description="Held-out problems per family.")
    families: list[str] | None = Field(None, description="Families to evaluate (default: all).")
    n_boot: int = Field(1000, ge=100, description="Bootstrap resamples for the 95% interval.")


def build_prompt(row: dict, tokenizer) -> str:
    return tokenizer.apply_chat_template(prompt_messages(row["question"], row["kind"]), add_generation_prompt=True,
                                         tokenize=False)


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


def score(rows: list[dict], completions: list[list], label: str) -> list[dict]:
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
            })
    return samples


REASONING_ALL = "reasoning (all)"


def summarize(samples: list[dict], n_boot: int = 1000) -> list[dict]:
    """One row per family, plus a pooled row over every reasoning problem (its interval resamples
    problems across families)."""
    by_family: dict[str, dict[str, list]] = {}
    for s in samples:
        f = by_family.setdefault(s["family"], {})
        f.setdefault(s["problem_id"], []).append(s)
        if s["kind"] == "reasoning":
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


def evaluate(engine: RolloutEngine, tokenizer, rows: list[dict], cfg: EvalConfig, label: str) -> tuple[list, list]:
    rows = select(rows, cfg)
    prompts = [build_prompt(r, tokenizer) for r in rows]
    completions = engine.generate(prompts, cfg.sampling)
    samples = score(rows, completions, label)
    return samples, summarize(samples, cfg.n_boot)
