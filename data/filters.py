"""Quality filters for generated chain-of-thought samples (cold-start collection and rejection
sampling, R1 sec. 2.3.1 and 2.3.3): keep a sample only if it is correct and readable.

`judge(completion, row, cfg)` returns a `Verdict`: every check's outcome and the first failing
reason, in this order:
  missing_tags    not exactly <think> ... </think> <answer> ... </answer> (data/verify.py: format_ok)
  no_answer       nothing could be extracted as the answer
  wrong_answer    the task world's verifier rejects it
  mixed_notation  the reasoning's share of words/symbols in the prompt's notation is below
                  `min_notation_share` (R1's language mixing, in this world's two notations)
  repetition      an n-gram of `repeat_ngram` words occurs `max_repeats` or more times
  over_length / too_short   outside [min_tokens, max_tokens] (whitespace tokens of the completion)
`dedupe` drops repeated (prompt, normalized completion) pairs. Data cards count the reasons.
This module neither samples nor writes files.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from r1flow.data.notation import notation_share
from r1flow.data.templates import EOS
from r1flow.data.verify import extract_answer, format_ok, reasoning_text, verify

REASONS = ("missing_tags", "no_answer", "wrong_answer", "mixed_notation", "repetition", "over_length", "too_short")


class FilterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checks: list[Literal["missing_tags", "no_answer", "wrong_answer", "mixed_notation", "repetition", "over_length",
                         "too_short"]] = Field(
        default_factory=lambda: list(REASONS),
        description="Checks a kept sample must pass (default: all). Leaving one out keeps samples it would "
                    "reject, e.g. mixed_notation for single-language data.")
    min_notation_share: float = Field(1.0, ge=0, le=1, description="Share of the reasoning's notation-bearing words "
                                      "in the prompt's notation (1: one notation throughout).")
    repeat_ngram: int = Field(4, ge=2, description="n of the n-grams checked for repetition loops.")
    max_repeats: int = Field(3, ge=2, description="An n-gram seen this often is a repetition loop.")
    min_tokens: int = Field(3, ge=0, description="Shortest completion kept (whitespace tokens).")
    max_tokens: int = Field(120, ge=1, description="Longest completion kept (whitespace tokens).")


@dataclass
class Verdict:
    keep: bool
    reason: str | None  # first failing check, None when kept
    format_ok: bool
    correct: bool | None
    notation_share: float | None
    max_ngram_repeats: int
    tokens: int

    def as_row(self) -> dict:
        return {f"filter/{k}": v for k, v in asdict(self).items()}


def max_ngram_repeats(text: str, n: int) -> int:
    words = text.split()
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return max(grams.values(), default=0)


def judge(completion: str, row: dict, cfg: FilterConfig | None = None) -> Verdict:
    """Check one sample for the problem `row` (a prompt-set row: family, answer, meta, notation, kind)."""
    cfg = cfg or FilterConfig()
    text = completion.split(EOS)[0]
    fmt = format_ok(text)
    answer = extract_answer(text, row)
    correct = verify(answer, row) if answer is not None else None
    reasoning = reasoning_text(text)
    share = notation_share(reasoning, row["notation"]) if row.get("kind", "reasoning") == "reasoning" else None
    repeats = max_ngram_repeats(text, cfg.repeat_ngram)
    tokens = len(text.split())
    failed = [reason for reason, bad in (
        ("missing_tags", not fmt),
        ("no_answer", answer is None),
        ("wrong_answer", correct is False),
        ("mixed_notation", share is not None and share < cfg.min_notation_share),
        ("repetition", repeats >= cfg.max_repeats),
        ("over_length", tokens > cfg.max_tokens),
        ("too_short", tokens < cfg.min_tokens),
    ) if bad and reason in cfg.checks]
    return Verdict(keep=not failed, reason=failed[0] if failed else None, format_ok=fmt, correct=correct,
                   notation_share=share, max_ngram_repeats=repeats, tokens=tokens)


def dedupe(samples: list[dict], prompt_key: str = "problem_id", text_key: str = "completion") -> tuple[list[dict], int]:
    """Keep the first sample of each (prompt, whitespace-normalized completion); returns (kept, dropped)."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for s in samples:
        key = (s[prompt_key], " ".join(s[text_key].split()))
        if key not in seen:
            seen.add(key)
            kept.append(s)
    return kept, len(samples) - len(kept)


def card(verdicts: list[Verdict], deduped: int = 0) -> dict:
    """Counts for a data card: samples seen, kept, and removed per reason (first failing check)."""
    reasons = Counter(v.reason for v in verdicts if not v.keep)
    return {"samples": len(verdicts), "kept": sum(v.keep for v in verdicts) - deduped,
            "removed": {r: reasons.get(r, 0) for r in REASONS} | {"duplicate": deduped}}
