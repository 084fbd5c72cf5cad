"""Evaluation metrics over k samples per problem: pass@1 with a bootstrap interval, cons@k.

R1 paper sec. 3 (evaluation setup): pass@1 = (1/k) sum_i p_i over k sampled responses per
question, averaged over questions; cons@k = majority vote over the k answers. The 95% interval
resamples questions (not samples) with replacement. Pure functions over Python lists.
"""

from __future__ import annotations

from collections import Counter

import numpy as np


def pass_at_1(correct: list[list[bool]]) -> float:
    """correct[q][i]: sample i of question q was right (None counts as wrong)."""
    return float(np.mean([np.mean([bool(c) for c in cs]) for cs in correct])) if correct else float("nan")


def bootstrap_ci(correct: list[list[bool]], n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of pass@1 over questions."""
    if not correct:
        return float("nan"), float("nan")
    per_q = np.array([np.mean([bool(c) for c in cs]) for cs in correct])
    rng = np.random.default_rng(seed)
    means = per_q[rng.integers(0, len(per_q), size=(n_boot, len(per_q)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def cons_at_k(answers: list[list[str | None]], correct: list[list[bool]]) -> float:
    """Share of questions whose most frequent (normalised, non-None) answer is correct.
    Ties go to the answer seen first; a question with no answer counts as wrong."""
    hits = []
    for ans, cor in zip(answers, correct):
        votes = Counter(a for a in ans if a is not None)
        if not votes:
            hits.append(False)
            continue
        top = max(votes, key=lambda a: (votes[a], -ans.index(a)))
        hits.append(bool(cor[ans.index(top)]))
    return float(np.mean(hits)) if hits else float("nan")


def paired_diff_ci(new: dict[str, list[bool]], base: dict[str, list[bool]], n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float, int]:
    """pass@1(new) - pass@1(base) on the problems both were scored on, with a percentile bootstrap
    interval that resamples problems (paired: one draw picks the same problem for both). Returns
    (difference, low, high, problems). An interval above 0 is an improvement beyond sampling noise."""
    ids = sorted(set(new) & set(base))
    if not ids:
        return float("nan"), float("nan"), float("nan"), 0
    d = np.array([np.mean([bool(c) for c in new[i]]) - np.mean([bool(c) for c in base[i]]) for i in ids])
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(d.mean()), float(lo), float(hi), len(ids)
