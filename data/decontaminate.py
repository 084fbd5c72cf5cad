"""N-gram overlap between training prompts and benchmark problems (the check open-r1's
scripts/decontaminate.py runs, 8-grams by default): which training rows share a word n-gram with a
benchmark's problem, counted per benchmark for the data card, and optionally dropped.

Text is lowercased and split into words (`\\w+`); a text shorter than n words is one n-gram of all its
words, so a short question still matches itself. This module reads rows; it does not load or write data.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def overlaps(rows: list[dict], benchmarks: dict[str, list[dict]], n: int = 8, key: str = "id",
             text: str = "question") -> dict[str, list[str]]:
    """Benchmark name -> keys of the training `rows` whose `text` shares an n-gram with one of its problems."""
    out = {}
    for name, problems in benchmarks.items():
        grams = set().union(*(ngrams(p["question"], n) for p in problems))
        out[name] = [r[key] for r in rows if ngrams(r[text], n) & grams]
    return out
