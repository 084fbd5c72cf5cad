"""Answer extraction and verification for every prompt row: one entry point for rewards, the sampling
filters and evaluation.

A row names its verifier in `meta["verifier"]` (imported data: data/verifiers.py's `math`,
`multiple_choice`, `exact`, `countdown` or a user `module:function`); rows without one are the
generated world's, checked here. For the world, `extract_answer` reads the content of a single
`<answer>...</answer>` pair, else the last `Answer: ...` line (the untagged style base models use);
numeric answers are compared with `math-verify` after mapping word notation to digits; countdown
answers are checked exactly (numbers used, value).
`verify` returns True/False, or None when the answer cannot be scored (nothing extracted).
This module does not sample or aggregate metrics.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import lru_cache

from r1flow.data import verifiers
from r1flow.data.notation import parse_number, words_to_expr
from r1flow.data.templates import ANSWER_CLOSE, ANSWER_OPEN, EOS

_TAGGED = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.S)
_PLAIN = re.compile(r"Answer:[ \t]*([^\n<]*)")


def meta_of(row: dict) -> dict:
    m = row.get("meta") or {}
    return json.loads(m) if isinstance(m, str) else m


@lru_cache(maxsize=64)
def _user(spec: str) -> verifiers.Verifier:
    return verifiers.user_verifier(spec)


def verifier_of(row: dict) -> verifiers.Verifier | None:
    """The row's verifier; None for the generated world's rows (checked by this module)."""
    kind = meta_of(row).get("verifier", "world")
    if kind == "world":
        return None
    return verifiers.BUILTIN.get(kind) or _user(kind)


def extract_answer(completion: str, row: dict) -> str | None:
    """The final answer of `completion` for the problem `row`, or None."""
    v = verifier_of(row)
    return v.extract(completion) if v else _world_answer(completion, row.get("kind", "reasoning"))


def _world_answer(completion: str, kind: str) -> str | None:
    """The final answer, or None. Several answer tags, or an unclosed one, make it ambiguous: None.
    Instruction tasks are answered directly, so without tags or an `Answer:` line their answer is the
    response's first line."""
    text = completion.split(EOS)[0]
    tagged = _TAGGED.findall(text)
    if len(tagged) == 1:
        ans = tagged[0].strip()
        return ans or None
    if tagged or ANSWER_OPEN in text:
        return None
    plain = _PLAIN.findall(text)
    if plain:
        ans = plain[-1].strip()
        return ans or None
    if kind == "instruction":
        first = text.strip().split("\n")[0].strip()
        return first or None
    return None


def _math_equal(pred: str, gold: str) -> bool:
    from math_verify import parse, verify as mv_verify

    # parsing_timeout=None: math-verify's own timeout uses signal.alarm, which only works in the
    # main thread; the reward runner (issue 3) bounds every call with its own timeout instead.
    g = parse(gold, parsing_timeout=None)
    p = parse(pred, parsing_timeout=None)
    return bool(g) and bool(p) and bool(mv_verify(g, p, timeout_seconds=None))


def normalize(answer: str, row: dict) -> str | None:
    """Canonical form of an answer, for majority voting (cons@k) and comparison."""
    v = verifier_of(row)
    if v:
        return v.canon(answer, row, meta_of(row))
    family = row["family"]
    if family in ("add", "arith"):
        n = parse_number(answer)
        return None if n is None else str(n)
    if family == "countdown":
        expr = words_to_expr(answer)
        return None if expr is None else " ".join(expr.split())
    return " ".join(answer.split())


def verify(answer: str | None, row: dict) -> bool | None:
    """Is `answer` correct for the problem `row` (a prompt-set row: family, answer, meta)?"""
    if answer is None:
        return None
    v = verifier_of(row)
    if v:
        return v.check(answer, row, meta_of(row))
    family = row["family"]
    canon = normalize(answer, row)
    if canon is None:
        return False
    if family in ("add", "arith"):
        return _math_equal(canon, row["answer"])
    if family == "countdown":
        meta = meta_of(row)
        res = verifiers.eval_expression(canon, division=False)
        if res is None:
            return False
        value, nums = res
        return value == meta["target"] and Counter(nums) == Counter(meta["numbers"])
    return canon == " ".join(row["answer"].split())


_FORMAT = re.compile(r"^\s*<think>((?:(?!<think>|</think>|<answer>|</answer>).)*)</think>\s*"
                     r"<answer>((?:(?!<think>|</think>|<answer>|</answer>).)*)</answer>\s*$", re.S)


def format_ok(completion: str) -> bool:
    """Exactly `<think> ... </think> <answer> ... </answer>` (R1-Zero's format), nothing around it, and
    neither block empty: an empty think or answer block puts no reasoning or answer in the tags, and
    scoring it as formatted lets RL collapse to `<think></think><answer></answer>` (seen on the tiny recipe)."""
    m = _FORMAT.match(completion.split(EOS)[0])
    return bool(m) and bool(m.group(1).strip()) and bool(m.group(2).strip())


def reasoning_text(completion: str) -> str:
    """The chain of thought: inside <think> if present, else everything before the answer."""
    text = completion.split(EOS)[0]
    m = re.search(r"<think>(.*?)</think>", text, re.S)
    if m:
        return m.group(1)
    return re.split(r"Answer:|<answer>", text)[0]
