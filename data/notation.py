"""The task world's two notations ("languages"): digits and symbols vs spelled-out English words.

`sym`:  3 + 4 * 2 = 11
`word`: three plus four times two equals eleven

The R1 paper reports that R1-Zero mixes languages inside one chain of thought; writing every
problem and solution in one of two notations lets the same thing happen here and be measured
(`notation_share`). This module covers rendering and parsing numbers and expressions in either
notation; it does not know about tasks, prompts or rewards.
"""

from __future__ import annotations

import re
from typing import Literal

Notation = Literal["sym", "word"]
NOTATIONS: tuple[Notation, ...] = ("sym", "word")

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
         "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_WORD_VALUE = {w: i for i, w in enumerate(_ONES)} | {w: 10 * i for i, w in enumerate(_TENS) if w}

# Operator words. "minus" is the binary operator; negative numbers are spelled "negative N".
OP_WORDS = {"+": "plus", "-": "minus", "*": "times"}
_WORD_OPS = {v: k for k, v in OP_WORDS.items()}
EQUALS = {"sym": "=", "word": "equals"}

# Tokens that carry a notation; everything else (punctuation, "check", "so") is neutral.
_SYM_TOKEN = re.compile(r"\d+|[+\-*=()]")
_WORD_TOKEN = re.compile(r"[a-z]+")
WORD_VOCAB = frozenset(_WORD_VALUE) | frozenset(_WORD_OPS) | {"hundred", "negative", "equals"}


def number_to_words(n: int) -> str:
    """Spell an integer in [-999, 999] in English words ("forty two", "negative seven")."""
    if not -999 <= n <= 999:
        raise ValueError(f"number_to_words supports -999..999, got {n}")
    if n < 0:
        return "negative " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    hundreds, rest = divmod(n, 100)
    return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))


def words_to_number(text: str) -> int | None:
    """Parse a number written by `number_to_words`; None if `text` is not exactly one number."""
    words = text.strip().lower().split()
    if not words:
        return None
    sign = 1
    if words[0] == "negative":
        sign, words = -1, words[1:]
        if not words:
            return None
    total, current, seen_hundred = 0, 0, False
    last_kind = None  # enforce the grammar number_to_words produces: [ones hundred] [tens] [ones]
    for w in words:
        if w == "hundred":
            if last_kind != "ones" or seen_hundred or current == 0 or current >= 10:
                return None
            total, current, seen_hundred, last_kind = current * 100, 0, True, "hundred"
        elif w in _WORD_VALUE:
            v = _WORD_VALUE[w]
            if v >= 20:  # a tens word
                if last_kind in ("tens", "ones", "teen"):
                    return None
                current, last_kind = v, "tens"
            else:
                if last_kind in ("ones", "teen") or (last_kind == "tens" and v >= 10) or \
                        (last_kind == "tens" and v == 0):
                    return None
                current += v
                last_kind = "teen" if v >= 10 else "ones"
        else:
            return None
    return sign * (total + current)


def parse_number(text: str) -> int | None:
    """An integer written in either notation ("42", "-7", "forty two"); None if it is not one."""
    s = text.strip().rstrip(".").strip()
    if re.fullmatch(r"-?\d+", s):
        return int(s)
    return words_to_number(s)


def render_number(n: int, notation: Notation) -> str:
    return str(n) if notation == "sym" else number_to_words(n)


def render_expr(tokens: list[int | str], notation: Notation) -> str:
    """Render a flat expression token list like [3, '+', 4, '*', 2] in a notation."""
    out = []
    for t in tokens:
        if isinstance(t, int):
            out.append(render_number(t, notation))
        else:
            out.append(t if notation == "sym" else OP_WORDS[t])
    return " ".join(out)


def words_to_expr(text: str) -> str | None:
    """Translate a word-notation expression into symbols ("three times four" -> "3 * 4").

    Digits and symbols pass through unchanged, so mixed-notation text is translated too.
    Returns None if some word is neither a number word nor an operator word.
    """
    out: list[str] = []
    pending: list[str] = []

    def flush() -> bool:
        if pending:
            n = words_to_number(" ".join(pending))
            if n is None:
                return False
            out.append(str(n))
            pending.clear()
        return True

    for tok in re.findall(r"\d+|[a-z]+|[+\-*/()]", text.lower()):
        if tok in _WORD_OPS:
            if not flush():
                return None
            out.append(_WORD_OPS[tok])
        elif tok in WORD_VOCAB:
            pending.append(tok)
        elif re.fullmatch(r"\d+|[+\-*/()]", tok):
            if not flush():
                return None
            out.append(tok)
        else:
            return None
    if not flush():
        return None
    return " ".join(out)


def notation_counts(text: str) -> dict[str, int]:
    """Count notation-bearing tokens of each notation in `text` (neutral words are ignored)."""
    sym = len(_SYM_TOKEN.findall(text))
    word = sum(1 for w in _WORD_TOKEN.findall(text.lower()) if w in WORD_VOCAB)
    return {"sym": sym, "word": word}


def notation_share(text: str, target: Notation) -> float | None:
    """Share of notation-bearing tokens written in `target` (R1 sec. 2.3.2's language-consistency
    reward is the share of target-language words in the CoT). None when the text has none, or when
    `target` is no notation (imported problems have none)."""
    if target not in NOTATIONS:
        return None
    counts = notation_counts(text)
    total = counts["sym"] + counts["word"]
    return None if total == 0 else counts[target] / total


def dominant_notation(text: str) -> Notation | None:
    counts = notation_counts(text)
    if counts["sym"] == counts["word"]:
        return None
    return "sym" if counts["sym"] > counts["word"] else "word"
