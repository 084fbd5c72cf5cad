"""Verifiers for imported data, by kind: `math`, `multiple_choice`, `exact`, `countdown`, and a user
function named `module:function`. Rewards (data/rewards.py), the sampling filters and evaluation all
reach them through `data/verify.py`, which picks a problem's verifier from its row (`meta["verifier"]`;
the generated world's rows have none and keep the world's own verifier).

A verifier reads the final answer from a completion (`extract`), checks it against the problem row
(`check`), and writes it in a canonical form for majority voting (`canon`, cons@k). Where the final
answer is looked for, in this order: the content of a single `<answer>...</answer>` pair (R1-Zero's
template; several pairs or an unclosed one: no answer), else the text after `</think>` (a reasoning
model's chat output; an unclosed `<think>`: no answer yet), else the whole completion. An answer that
appears only inside the reasoning is therefore not an answer.

  math              math-verify (LaTeX, `\\boxed{}`, fractions vs decimals, units) on the last of:
                    `\\boxed{}` (several boxed answers that differ: ambiguous, no answer), GSM8K's
                    `#### 42`, an `Answer:` line, "the answer is ...", the answer tag's content
  multiple_choice   one option letter (GPQA: four shuffled options A-D; the row's `meta.options`),
                    written as `\\boxed{C}`, `Answer: C`, `(C)`, `C)` or the option's own text
  exact             the answer string, whitespace-normalized, equal to the gold answer
  countdown         an expression over `meta.numbers` (each used exactly once; + - * / and parentheses)
                    whose value is `meta.target` (TinyZero's Countdown); `expr = target` is accepted
  module:function   your own `fn(completion: str, row: dict) -> bool | None` (None: cannot score)
This module neither samples nor aggregates; it does not know the generated world's families.
"""

from __future__ import annotations

import ast
import importlib
import operator
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from r1flow.data.templates import ANSWER_CLOSE, ANSWER_OPEN, EOS, THINK_CLOSE, THINK_OPEN

BUILTIN_KINDS = ("math", "multiple_choice", "exact", "countdown")
LETTERS = "ABCDEFGHIJ"

_TAGGED = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.DOTALL)
_ANSWER_LINE = re.compile(r"Answer:[ \t]*([^\n<]*)", re.IGNORECASE)
_ANSWER_IS = re.compile(r"answer is[:\s]*\$?([^\n$]*?)\$?\s*(?:\.\s*)?$", re.IGNORECASE | re.MULTILINE)
_GSM8K = re.compile(r"####[ \t]*([^\n]*)")


def final_region(completion: str) -> tuple[str | None, bool]:
    """(where the final answer is, whether it came from an answer tag); None when there is none."""
    text = completion.split(EOS)[0]
    tagged = _TAGGED.findall(text)
    if len(tagged) == 1:
        return tagged[0], True
    if tagged or ANSWER_OPEN in text:
        return None, False
    if THINK_CLOSE in text:
        return text.rsplit(THINK_CLOSE, 1)[1], False
    if THINK_OPEN in text:
        return None, False
    return text, False


def boxed(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` / `\\fbox{...}`, braces balanced, in order."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end():i - 1].strip())
    return out


def _last_line(pattern: re.Pattern, text: str) -> str | None:
    found = [f.strip().rstrip(".").strip() for f in pattern.findall(text)]
    found = [f for f in found if f]
    return found[-1] if found else None


def _candidate(completion: str) -> str | None:
    """The final answer's text by the search order in the module docstring (boxed first)."""
    region, tagged = final_region(completion)
    if region is None:
        return None
    box = boxed(region)
    if box:
        filled = {" ".join(b.split()) for b in box if b}
        return filled.pop() if len(filled) == 1 else None
    for pattern in (_GSM8K, _ANSWER_LINE, _ANSWER_IS):
        found = _last_line(pattern, region)
        if found:
            return found
    return region.strip() or None if tagged else None


# ---- math ------------------------------------------------------------------------------------------------
def _parse_math(text: str):
    from math_verify import parse

    # parsing_timeout=None: math-verify's own timeout uses signal.alarm (main thread only); every reward
    # call runs under data/rewards.py: with_timeout instead.
    text = text.strip().replace(",", "") if re.fullmatch(r"[\d,]+(\.\d+)?", text.strip()) else text
    parsed = parse(f"\\boxed{{{text}}}", parsing_timeout=None)
    return parsed or parse(text, parsing_timeout=None)


def math_gold_ok(gold: str) -> bool:
    """math-verify turns the answer into an expression (its result then holds the expression and the
    text; a text it could not turn into one comes back alone, or nothing at all)."""
    return len(_parse_math(gold)) >= 2


def _math_check(answer: str, row: dict, meta: dict) -> bool:
    from math_verify import verify

    gold, pred = _parse_math(row["answer"]), _parse_math(answer)
    return bool(gold) and bool(pred) and bool(verify(gold, pred, timeout_seconds=None))


def _math_canon(answer: str, row: dict, meta: dict) -> str | None:
    parsed = _parse_math(answer)
    return str(parsed[0]) if parsed else None


# ---- multiple choice -------------------------------------------------------------------------------------
def _letter(answer: str, meta: dict) -> str | None:
    options = meta.get("options") or []
    letters = LETTERS[:len(options)] if options else LETTERS[:4]
    s = answer.strip().strip("$*").strip()
    m = re.fullmatch(rf"\(?([{letters}])\)?(?:[.):]\s*.*)?", s, re.DOTALL)
    if m:
        return m.group(1)
    norm = " ".join(s.lower().split()).rstrip(".")
    hits = [LETTERS[i] for i, o in enumerate(options) if " ".join(str(o).lower().split()).rstrip(".") == norm]
    return hits[0] if len(hits) == 1 else None


def _mc_check(answer: str, row: dict, meta: dict) -> bool:
    return _letter(answer, meta) == row["answer"].strip().upper()


def _mc_canon(answer: str, row: dict, meta: dict) -> str | None:
    return _letter(answer, meta)


def mc_gold_ok(gold: str, meta: dict) -> bool:
    n = len(meta.get("options") or []) or 4
    return gold.strip().upper() in LETTERS[:n]


# ---- exact -----------------------------------------------------------------------------------------------
def _exact_canon(answer: str, row: dict, meta: dict) -> str | None:
    return " ".join(answer.split()).rstrip(".") or None


def _exact_check(answer: str, row: dict, meta: dict) -> bool:
    return _exact_canon(answer, row, meta) == _exact_canon(row["answer"], row, meta)


# ---- countdown -------------------------------------------------------------------------------------------
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def eval_expression(expr: str, division: bool = True) -> tuple[Fraction, list[int]] | None:
    """Exact value and literal integers of a + - * (and, with `division`, /) expression with
    parentheses; None otherwise (other syntax, a non-integer literal, division by zero). The generated
    world's countdown (data/verify.py) allows no division."""
    try:
        tree = ast.parse(expr.replace("×", "*").replace("÷", "/"), mode="eval")
    except SyntaxError:
        return None
    nums: list[int] = []
    ops = _OPS if division else {k: v for k, v in _OPS.items() if k is not ast.Div}

    def ev(n: ast.AST) -> Fraction:
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.BinOp) and type(n.op) in ops:
            return ops[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.Constant) and type(n.value) is int:
            nums.append(n.value)
            return Fraction(n.value)
        raise ValueError("disallowed syntax")

    try:
        return ev(tree), nums
    except (ValueError, ZeroDivisionError, RecursionError):
        return None


def _countdown_expr(answer: str) -> str:
    expr = answer.strip().strip("$").strip()
    return expr.split("=")[0].strip() if "=" in expr else expr


def _countdown_check(answer: str, row: dict, meta: dict) -> bool:
    res = eval_expression(_countdown_expr(answer))
    if res is None:
        return False
    value, nums = res
    return value == Fraction(meta["target"]) and Counter(nums) == Counter(meta["numbers"])


def _countdown_canon(answer: str, row: dict, meta: dict) -> str | None:
    return " ".join(_countdown_expr(answer).split()) or None


def countdown_gold_ok(meta: dict) -> bool:
    return isinstance(meta.get("target"), int) and bool(meta.get("numbers")) and \
        all(isinstance(n, int) for n in meta["numbers"])


# ---- the registry ----------------------------------------------------------------------------------------
Extract = Callable[[str], "str | None"]
Check = Callable[[str, dict, dict], bool]
Canon = Callable[[str, dict, dict], "str | None"]


@dataclass(frozen=True)
class Verifier:
    """`extract(completion)` -> the answer or None; `check(answer, row, meta)` -> correct or not (None:
    cannot score); `canon(answer, row, meta)` -> the answer's canonical form for cons@k."""

    kind: str
    extract: Extract
    check: Check
    canon: Canon


BUILTIN: dict[str, Verifier] = {
    "math": Verifier("math", _candidate, _math_check, _math_canon),
    "multiple_choice": Verifier("multiple_choice", _candidate, _mc_check, _mc_canon),
    "exact": Verifier("exact", _candidate, _exact_check, _exact_canon),
    "countdown": Verifier("countdown", _candidate, _countdown_check, _countdown_canon),
}


def load_user_function(spec: str) -> Callable[[str, dict], bool | None]:
    """`module:function`, imported; the error names what could not be found."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"verifier {spec!r}: not one of {list(BUILTIN_KINDS)} and not `module:function`")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"verifier {spec!r}: cannot import module {module!r} ({e})") from e
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise ValueError(f"verifier {spec!r}: module {module!r} has no function {name!r}")  # noqa: TRY004 - pydantic reports a ValueError as the field's error
    return fn


def user_verifier(spec: str) -> Verifier:
    """A user function `fn(completion, row) -> bool | None` does its own extraction: its "answer" is
    the whole completion (up to EOS), and majority voting groups the final-answer text."""
    fn = load_user_function(spec)

    def check(answer: str, row: dict, meta: dict) -> bool | None:
        out = fn(answer, row)
        if out is not None and not isinstance(out, bool):
            raise TypeError(f"verifier {spec}: returned {type(out).__name__}, expected bool or None")
        return out

    def canon(answer: str, row: dict, meta: dict) -> str | None:
        region, _ = final_region(answer)
        return None if region is None else (" ".join(region.split()) or None)

    return Verifier(spec, lambda c: c.split(EOS)[0] or None, check, canon)


def check_kind(kind: str) -> str:
    """A verifier name from a recipe: a built-in kind, or an importable `module:function`."""
    if kind not in BUILTIN and kind != "world":
        load_user_function(kind)
    return kind
