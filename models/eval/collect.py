"""Sampled SFT data for the R1 path: cold-start chains of thought (R1 sec. 2.3.1) and the rejection-
sampled reasoning + non-reasoning mixture (sec. 2.3.3).

Both sample a checkpoint with vLLM (k completions per prompt), judge every completion with the
readability and correctness filters of `data/filters.py`, deduplicate, and keep at most
`max_per_prompt` per prompt. Kept chains are rewritten into the readable output format: the paper's
`|special_token|<reasoning_process>|special_token|<summary>` is, with this project's special tokens,
`<think> reasoning </think> <answer> summary </answer>`, the reasoning with its whitespace normalized
and the summary restating the answer in the problem's own notation. The mixture adds non-reasoning
data: the instruction tasks, answered by the same checkpoint and kept when the verifier accepts them;
where the checkpoint answers too few, the task world's own answers fill the share (R1 reused
DeepSeek-V3's SFT data the same way). Every row says where it came from (`source`).
No Prefect, no artifact store.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from pydantic import Field, model_validator

from r1flow.data.filters import FilterConfig, card, dedupe, judge
from r1flow.data.notation import parse_number, render_expr, render_number, words_to_expr
from r1flow.data.schemas import read_rows
from r1flow.data.sources import PromptSources
from r1flow.data.templates import EOS, tagged_response
from r1flow.data.verify import extract_answer, reasoning_text, verify
from r1flow.data.world import INSTRUCTION_FAMILIES, REASONING_FAMILIES
from r1flow.models.rollout.engine import EngineConfig, SamplingConfig


class CollectConfig(PromptSources):
    """Sampling and filtering of chain-of-thought samples from one checkpoint; prompts from the world's
    RL split (`families`) and/or imported sources (`datasets`, data/sources.py)."""

    families: list[str] = Field(default_factory=lambda: list(REASONING_FAMILIES),
                                description="Reasoning families whose RL-split prompts are sampled.")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(n=8, temperature=1.0, top_p=1.0),
                                     description="k completions per prompt.")
    filters: FilterConfig = Field(default_factory=FilterConfig, description="What a kept sample must pass.")
    prompts_per_family: int = Field(128, ge=1, description="RL-split prompts sampled per family (first N).")
    max_per_prompt: int = Field(2, ge=1, description="Most samples kept from one prompt.")
    min_samples: int = Field(16, ge=1, description="Fewer kept samples than this stops the stage with an error.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine.")

    @model_validator(mode="after")
    def _check(self) -> "CollectConfig":
        bad = set(self.families) - set(REASONING_FAMILIES)
        if bad or (not self.families and self.uses_world()):
            raise ValueError(f"families: unknown or empty {sorted(bad) or self.families}; known: {list(REASONING_FAMILIES)}")
        return self


class RejectionConfig(CollectConfig):
    """The `rejection_sampling` stage: reasoning samples plus non-reasoning data in a set ratio."""

    instruction_families: list[str] = Field(default_factory=lambda: list(INSTRUCTION_FAMILIES),
                                            description="Non-reasoning (instruction) families in the mixture.")
    non_reasoning_share: float = Field(0.25, ge=0, lt=1, description=(
        "Share of non-reasoning samples in the mixture (R1: about 200k of 800k)."))
    instruction_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(n=4, temperature=0.6, top_p=0.95, max_tokens=32),
        description="How the checkpoint answers instruction tasks.")

    @model_validator(mode="after")
    def _check_instr(self) -> "RejectionConfig":
        bad = set(self.instruction_families) - set(INSTRUCTION_FAMILIES)
        if bad:
            raise ValueError(f"instruction_families: unknown {sorted(bad)}; known: {list(INSTRUCTION_FAMILIES)}")
        return self


def per_family(rows: list[dict], families: list[str], n: int) -> list[dict]:
    """The first `n` rows of each family in `families`, in file order."""
    seen: dict[str, int] = {}
    out = []
    for r in rows:
        if r["family"] in families and seen.get(r["family"], 0) < n:
            seen[r["family"]] = seen.get(r["family"], 0) + 1
            out.append(r)
    return out


def family_prompts(path: Path, families: list[str], n: int) -> list[dict]:
    """`per_family` over a prompts Parquet file (the world's rl.parquet); an empty result is an error
    naming the file, before any sampling."""
    rows = per_family(read_rows(path, "prompts"), families, n)
    if not rows:
        raise ValueError(f"{path}: no RL prompts for families {families}")
    return rows


def restate_answer(answer: str, row: dict) -> str:
    """The answer written in the problem's notation (the readable summary)."""
    notation = row["notation"]
    if row["family"] in ("add", "arith"):
        n = parse_number(answer)
        return answer.strip() if n is None else render_number(n, notation)
    if row["family"] == "countdown":
        expr = words_to_expr(answer)
        if expr is None or "(" in expr:  # render_expr has no words for parentheses
            return " ".join(answer.split())
        return render_expr([int(t) if t.isdigit() else t for t in expr.split()], notation)
    return answer.strip()


def readable(completion: str, row: dict) -> str:
    """Rewrite a kept chain of thought into the readable output format."""
    text = completion.split(EOS)[0]
    reasoning = " ".join(reasoning_text(text).split())
    answer = extract_answer(text, row) or ""
    return tagged_response(re.sub(r"\s+([.,])", r"\1", reasoning), restate_answer(answer, row))


def sample(model_dir: str, batches: list[tuple[list[dict], SamplingConfig]], engine_cfg: EngineConfig,
           template: str = "r1_zero") -> list[list[list]]:
    """For each (rows, sampling) batch, k completions per row from one engine on `model_dir`; every row
    is asked as evaluation asks it (models/eval/evaluate.py: build_prompt, under `template`)."""
    from r1flow.models.eval.evaluate import build_prompt
    from r1flow.models.rollout.fleet import make_engine

    engine = make_engine(model_dir, engine_cfg)
    try:
        return [engine.generate([build_prompt(r, engine.tokenizer, template) for r in rows], sampling) if rows else []
                for rows, sampling in batches]
    finally:
        engine.close()


def judge_reasoning(rows: list[dict], completions: list[list], cfg: CollectConfig, source: str
                    ) -> tuple[list[dict], list[dict], dict]:
    """(kept samples, every judged sample with its verdict, data-card counts)."""
    judged, verdicts = [], []
    for row, comps in zip(rows, completions):
        for i, c in enumerate(comps):
            v = judge(c.text, row, cfg.filters)
            verdicts.append(v)
            judged.append({"problem_id": row["id"], "family": row["family"], "kind": "reasoning",
                           "notation": row["notation"], "question": row["question"], "sample": i,
                           "completion": c.text, "eos": c.finish_reason == "stop", "source": source, **v.as_row()})
    kept, dup = dedupe([s for s in judged if s["filter/keep"]])
    per_prompt: dict[str, int] = {}
    by_id = {r["id"]: r for r in rows}
    out, capped = [], 0
    for s in kept:
        if per_prompt.get(s["problem_id"], 0) >= cfg.max_per_prompt:
            capped += 1
            continue
        per_prompt[s["problem_id"]] = per_prompt.get(s["problem_id"], 0) + 1
        out.append({**s, "response": readable(s["completion"], by_id[s["problem_id"]])})
    counts = card(verdicts, dup) | {"prompts": len(rows), "prompts_with_a_kept_sample": len(per_prompt),
                                    "over_max_per_prompt": capped}
    counts["kept"] = len(out)
    return out, judged, counts


def instruction_samples(rows: list[dict], completions: list[list], want: int, seed: int = 0
                        ) -> tuple[list[dict], dict]:
    """Up to `want` non-reasoning samples: the checkpoint's verified answers first (one per prompt),
    then the world's answers to the remaining prompts."""
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    out, used, answered = [], set(), 0
    for i in order:
        row = rows[i]
        good = [c.text.split(EOS)[0].strip() for c in completions[i]
                if verify(extract_answer(c.text, row | {"kind": "instruction"}), row)]
        if good and len(out) < want:
            out.append(_instr(row, good[0], "policy"))
            used.add(i)
            answered += 1
    for i in order:
        if len(out) >= want:
            break
        if i not in used:
            out.append(_instr(rows[i], rows[i]["answer"], "world"))
    return out, {"instruction_prompts": len(rows), "from_policy": answered, "from_world": len(out) - answered}


def _instr(row: dict, response: str, source: str) -> dict:
    return {"problem_id": row["id"], "family": row["family"], "kind": "instruction", "notation": row["notation"],
            "question": row["question"], "response": response, "source": source}


def card_markdown(title: str, counts: dict, by_family: dict[str, int] | None = None) -> str:
    """A data card: what was sampled, and how many samples each filter removed and why."""
    why = {"missing_tags": "not <think> ... </think> <answer> ... </answer>", "no_answer": "no answer extracted",
           "wrong_answer": "the verifier rejects the answer",
           "mixed_notation": "reasoning not in the prompt's notation throughout",
           "repetition": "an n-gram repeats (a loop)", "over_length": "longer than the limit",
           "too_short": "shorter than the limit", "duplicate": "same prompt and text as a kept sample"}
    rows = "".join(f"| {r} | {n} | {why.get(r, '')} |\n" for r, n in counts.get("removed", {}).items())
    fam = "".join(f"| {f} | {n} |\n" for f, n in (by_family or {}).items())
    other = "".join(f"| {k} | {v} |\n" for k, v in counts.items() if k != "removed")
    return (f"# Data card: {title}\n\n| count | value |\n|---|---|\n{other}\n"
            f"## Removed, by first failing filter\n\n| reason | samples | meaning |\n|---|---|---|\n{rows}"
            + (f"\n## Kept, by family\n\n| family | samples |\n|---|---|\n{fam}" if fam else ""))
