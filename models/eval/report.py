"""Stage 10's report: every checkpoint of a run in one table, the R1 paper's four claims with a
verdict computed from the numbers, and PNG plots. Library code: no Prefect, no store.

`evals` is {checkpoint label: {"summary": eval_summary rows, "samples": eval_samples rows}} in run
order (models/eval/evaluate.py); `curves` is {RL stage label: its metrics rows} (models/train/grpo.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from r1flow.data.metrics import paired_diff_ci  # noqa: E402
from r1flow.models.eval.evaluate import REASONING_ALL  # noqa: E402


def per_problem(samples: list[dict], family: str) -> dict[str, list[bool]]:
    out: dict[str, list[bool]] = {}
    for r in samples:
        if r["family"] == family or (family == REASONING_ALL and r["kind"] == "reasoning" and not r.get("benchmark")):
            out.setdefault(r["problem_id"], []).append(bool(r["correct"]))
    return out


def _row(evals: dict[str, dict], label: str, family: str = REASONING_ALL) -> dict | None:
    return next((r for r in evals.get(label, {}).get("summary", []) if r["family"] == family), None)


def paired(evals: dict[str, dict], new: str, base: str, family: str = REASONING_ALL) -> tuple[float, float, float]:
    d, lo, hi, _ = paired_diff_ci(per_problem(evals[new]["samples"], family), per_problem(evals[base]["samples"], family))
    return d, lo, hi


def _f(x, spec: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


# ---- the table over every checkpoint ------------------------------------------------------------
def comparison_rows(evals: dict[str, dict], families: list[str] | None = None) -> list[dict]:
    """One row per (family, checkpoint): pass@1 with its interval, cons@k, length, format, EOS,
    language consistency and, for every checkpoint after the first (the base), the paired pass@1
    difference to the first with its 95% interval. `families`: these only (default: every family and
    benchmark, in the first checkpoint's order)."""
    labels = list(evals)
    first = labels[0]
    if families is None:
        families = [r["family"] for r in evals[first]["summary"]]
        families += sorted({r["family"] for e in evals.values() for r in e["summary"]} - set(families))
    rows = []
    for fam in families:
        for lb in labels:
            r = _row(evals, lb, fam)
            if r is None:
                continue
            row = {"family": fam, "checkpoint": lb, "pass@1": r["pass@1"], "ci_low": r["ci_low"],
                   "ci_high": r["ci_high"], "cons@k": r["cons@k"], "format_rate": r["format_rate"],
                   "mean_length": r["mean_length"], "eos_rate": r.get("eos_rate"),
                   "lang_consistency": r.get("lang_consistency"), "delta": None, "delta_low": None, "delta_high": None}
            if lb != first and _row(evals, first, fam) is not None:
                d, lo, hi = paired(evals, lb, first, fam)
                row |= {"delta": d, "delta_low": lo, "delta_high": hi}
            rows.append(row)
    return rows


def _world_families(evals: dict[str, dict], benchmarks: list[str]) -> list[str]:
    return [f for f in dict.fromkeys(r["family"] for e in evals.values() for r in e["summary"]) if f not in benchmarks]


def comparison_markdown(evals: dict[str, dict], benchmarks: list[str] | None = None) -> str:
    """pass@1 [95% CI], cons@k, format rate, mean length, EOS rate and language consistency of every
    checkpoint, per family of the generated world, and each later checkpoint's paired pass@1 difference
    to the first; then one table per imported benchmark."""
    benchmarks = benchmarks or []
    first = list(evals)[0]
    families = _world_families(evals, benchmarks)
    bench_md = "".join(benchmark_markdown(evals, b) for b in benchmarks)
    if not families:
        return bench_md
    head = "| family | checkpoint | pass@1 [95% CI] | vs " + first + " [95% CI] | cons@k | format | mean len | EOS " \
           "| lang. consistency |\n|---|---|---|---|---|---|---|---|---|\n"
    body = ""
    for r in comparison_rows(evals, families):
        delta = "-" if r["delta"] is None else (
            f"{r['delta']:+.3f} [{r['delta_low']:+.3f}, {r['delta_high']:+.3f}]"
            + (" **up**" if r["delta_low"] > 0 else " **down**" if r["delta_high"] < 0 else ""))
        body += (f"| {r['family']} | {r['checkpoint']} | {r['pass@1']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
                 f"| {delta} | {r['cons@k']:.3f} | {r['format_rate']:.2f} | {r['mean_length']:.1f} | "
                 f"{_f(r['eos_rate'])} | {_f(r['lang_consistency'])} |\n")
    return (f"## Held-out evaluation, all checkpoints\n\n{head}{body}\n"
            f"'vs {first}': paired difference in pass@1 over the same problems; **up**/**down** when its 95% "
            "bootstrap interval excludes 0.\n" + vs_r1_zero_markdown(evals) + bench_md)


def _delta(d: float, lo: float, hi: float) -> str:
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" + (" **up**" if lo > 0 else " **down**" if hi < 0 else "")


def benchmark_markdown(evals: dict[str, dict], name: str) -> str:
    """One imported benchmark: every checkpoint's pass@1 [95% CI], cons@k and mean length, and its paired
    pass@1 difference to the first checkpoint and to the one before it (same problems, same k)."""
    labels = [lb for lb in evals if _row(evals, lb, name)]
    if not labels:
        return f"\n## Benchmark: {name}\n\nNo checkpoint was evaluated on it.\n"
    first, rows = labels[0], ""
    for i, lb in enumerate(labels):
        r = _row(evals, lb, name)
        vs_first = _delta(*paired(evals, lb, first, name)) if i else "-"
        vs_prev = _delta(*paired(evals, lb, labels[i - 1], name)) if i else "-"
        rows += (f"| {lb} | {r['pass@1']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {vs_first} | {vs_prev} | "
                 f"{r['cons@k']:.3f} | {r['mean_length']:.1f} | {_f(r.get('eos_rate'))} |\n")
    r0 = _row(evals, first, name)
    return (f"\n## Benchmark: {name} ({r0['problems']} problems, k={r0['k']})\n\n"
            f"| checkpoint | pass@1 [95% CI] | vs {first} [95% CI] | vs previous [95% CI] | cons@k | mean len | EOS |\n"
            f"|---|---|---|---|---|---|---|\n{rows}")


def vs_r1_zero_markdown(evals: dict[str, dict]) -> str:
    """The R1 path against R1-Zero on all reasoning problems (R1 sec. 2.3: readable, one language, at no
    loss in accuracy): paired pass@1 difference and language consistency of each later checkpoint."""
    labels = list(evals)
    ref = _row(evals, "r1_zero")
    if ref is None or labels[-1] == "r1_zero":
        return ""
    rows = ""
    for lb in labels[labels.index("r1_zero") + 1:]:
        r = _row(evals, lb)
        if r is None:
            continue
        d, lo, hi = paired(evals, lb, "r1_zero")
        rows += (f"| {lb} | {r['pass@1']:.3f} | {d:+.3f} [{lo:+.3f}, {hi:+.3f}] | {_f(r.get('lang_consistency'))} | "
                 f"{r['format_rate']:.2f} | {r['mean_length']:.1f} |\n")
    return ("\n## Every later checkpoint vs R1-Zero, all reasoning problems\n\n"
            "| checkpoint | pass@1 | vs r1_zero [95% CI] | lang. consistency | format | mean len |\n"
            "|---|---|---|---|---|---|\n"
            f"| r1_zero | {ref['pass@1']:.3f} | | {_f(ref.get('lang_consistency'))} | {ref['format_rate']:.2f} | "
            f"{ref['mean_length']:.1f} |\n" + rows)


# ---- the paper's claims -------------------------------------------------------------------------
@dataclass
class Claim:
    number: int
    claim: str
    holds: bool | None  # None: the run lacks the checkpoints to test it
    evidence: str

    @property
    def verdict(self) -> str:
        return "not measured" if self.holds is None else "holds" if self.holds else "does not hold"

    def as_row(self) -> dict:
        return {"claim": self.number, "statement": self.claim, "verdict": self.verdict, "evidence": self.evidence}


def length_trend(curve: list[dict], key: str = "rl/completion_length") -> tuple[float, float, float]:
    """(mean over the first quarter of RL steps, over the last quarter, least-squares slope per 100
    steps) of a curve's rollout completion length."""
    pts = [(r["step"], r[key]) for r in curve if r.get(key) is not None and not np.isnan(r[key])]
    if len(pts) < 4:
        return float("nan"), float("nan"), float("nan")
    steps, vals = np.array(pts, dtype=float).T
    q = max(1, len(vals) // 4)
    return float(vals[:q].mean()), float(vals[-q:].mean()), float(np.polyfit(steps, vals, 1)[0] * 100)


def check_claims(evals: dict[str, dict], curves: dict[str, list[dict]], students: list[str],
                 seconds: dict[str, float] | None = None) -> list[Claim]:
    """The four claims of issue 5, each decided by a rule stated in its evidence."""
    seconds = seconds or {}
    out = []
    # (1) RL from the base raises pass@1, and response length grows during RL.
    text = "RL from the base raises pass@1, and response length grows during RL (R1 Fig. 2-3)"
    if _row(evals, "base") and _row(evals, "r1_zero") and "r1_zero" in curves:
        d, lo, hi = paired(evals, "r1_zero", "base")
        first, last, slope = length_trend(curves["r1_zero"])
        b, z = _row(evals, "base"), _row(evals, "r1_zero")
        holds = None if np.isnan(first) else bool(lo > 0 and last > first)
        out.append(Claim(1, text, holds,
                         f"reasoning pass@1 base {b['pass@1']:.3f} -> r1_zero {z['pass@1']:.3f}, paired {d:+.3f} "
                         f"[{lo:+.3f}, {hi:+.3f}] (rule: interval above 0); rollout length over R1-Zero's steps "
                         f"{first:.1f} (first quarter) -> {last:.1f} (last quarter) tokens, slope {slope:+.1f} per "
                         f"100 steps (rule: last quarter longer); held-out mean length {b['mean_length']:.1f} -> "
                         f"{z['mean_length']:.1f}"))
    else:
        out.append(Claim(1, text, None, "needs the base and r1_zero evaluations and R1-Zero's curves"))
    # (2) The cold-start path: higher language consistency than R1-Zero at no loss in accuracy.
    text = "The cold-start path (R1) has higher language consistency than R1-Zero at no loss in pass@1"
    z, r = _row(evals, "r1_zero"), _row(evals, "r1")
    if z and r and z.get("lang_consistency") is not None and r.get("lang_consistency") is not None:
        d, lo, hi = paired(evals, "r1", "r1_zero")
        holds = r["lang_consistency"] > z["lang_consistency"] and hi >= 0
        out.append(Claim(2, text, holds,
                         f"language consistency r1 {r['lang_consistency']:.3f} vs r1_zero {z['lang_consistency']:.3f} "
                         f"(rule: higher); pass@1 r1 {r['pass@1']:.3f} vs r1_zero {z['pass@1']:.3f}, paired {d:+.3f} "
                         f"[{lo:+.3f}, {hi:+.3f}] (rule: interval not entirely below 0)"))
    else:
        out.append(Claim(2, text, None, "needs the r1_zero and r1 evaluations"))
    # (3) cons@k exceeds pass@1.
    text = "Majority vote over k samples (cons@k) exceeds pass@1 (R1 Table 2)"
    if r:
        others = ", ".join(f"{lb} {x['cons@k']:.3f}/{x['pass@1']:.3f}" for lb in evals
                           if lb != "r1" and (x := _row(evals, lb)))
        out.append(Claim(3, text, r["cons@k"] > r["pass@1"],
                         f"r1 on all reasoning problems: cons@{r['k']} {r['cons@k']:.3f} vs pass@1 {r['pass@1']:.3f} "
                         f"(rule: cons@k higher); other checkpoints (cons@k/pass@1): {others}"))
    else:
        out.append(Claim(3, text, None, "needs the r1 evaluation"))
    # (4) A distilled student beats the same student trained with RL only.
    text = "A distilled student beats the same student trained with RL only (R1 Table 6)"
    parts, verdicts = [], []
    for s in students:
        dl, rl = f"{s}_distill", f"{s}_rl"
        if _row(evals, dl) and _row(evals, rl):
            d, lo, hi = paired(evals, dl, rl)
            verdicts.append(lo > 0)
            budget = (f"; compute: distill {seconds[dl]:.0f} s vs RL {seconds[rl]:.0f} s"
                      if dl in seconds and rl in seconds else "")
            parts.append(f"{s}: distill {_row(evals, dl)['pass@1']:.3f} vs RL-only {_row(evals, rl)['pass@1']:.3f}, "
                         f"paired {d:+.3f} [{lo:+.3f}, {hi:+.3f}]{budget}")
    if verdicts:
        # The traces' writer: the run's R1, or the checkpoint `distill.teacher_from` imported as "teacher".
        source = "distill.teacher_from" if "teacher" in evals else "r1"
        row = _row(evals, "teacher" if "teacher" in evals else "r1")
        head = f"traces from {source}, pass@1 {row['pass@1']:.3f}; " if row else ""
        out.append(Claim(4, text, all(verdicts),
                         head + "; ".join(parts) + " (rule: for every student the interval is above 0)"))
    else:
        out.append(Claim(4, text, None, "needs a distilled and an RL-only evaluation of the same student"))
    return out


def claims_markdown(claims: list[Claim]) -> str:
    rows = "".join(f"| {c.number} | {c.claim} | **{c.verdict}** | {c.evidence} |\n" for c in claims)
    return "## The paper's claims in this run\n\n| # | claim | verdict | numbers |\n|---|---|---|---|\n" + rows


# ---- plots --------------------------------------------------------------------------------------
def plot_accuracy(evals: dict[str, dict], path: Path) -> bool:
    """Pass@1 on all reasoning problems of the world per checkpoint with its 95% interval, and cons@k;
    False (nothing drawn) when the world was not evaluated."""
    labels = [lb for lb in evals if _row(evals, lb)]
    if not labels:
        return False
    rows = [_row(evals, lb) for lb in labels]
    x = np.arange(len(labels))
    p = np.array([r["pass@1"] for r in rows])
    err = np.array([[r["pass@1"] - r["ci_low"] for r in rows], [r["ci_high"] - r["pass@1"] for r in rows]])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(labels) + 2), 4))
    ax.bar(x, p, color="#4c72b0", label="pass@1 (95% CI)")
    ax.errorbar(x, p, yerr=err, fmt="none", ecolor="black", capsize=3)
    ax.scatter(x, [r["cons@k"] for r in rows], color="#dd8452", zorder=3, label="cons@k")
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel("held-out reasoning accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("Every checkpoint, all reasoning families")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _smooth(v: np.ndarray, w: int) -> np.ndarray:
    if len(v) < w:
        return v
    return np.convolve(v, np.ones(w) / w, mode="valid")


def plot_rl_curves(curves: dict[str, list[dict]], path: Path, window: int = 10) -> None:
    """Rollout accuracy and completion length over the steps of every RL stage (moving mean)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    for label, rows in curves.items():
        for ax, key in ((a, "rl/accuracy"), (b, "rl/completion_length")):
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None and not np.isnan(r[key])]
            if not pts:
                continue
            s, v = np.array(pts, dtype=float).T
            w = min(window, max(1, len(v) // 4))
            ax.plot(s[w - 1:] if len(v) >= w else s, _smooth(v, w), label=label)
    a.set_title("rollout accuracy over RL steps")
    a.set_xlabel("step")
    a.set_ylabel("accuracy")
    b.set_title("rollout completion length over RL steps")
    b.set_xlabel("step")
    b.set_ylabel("tokens")
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_markdown(name: str, evals: dict[str, dict], claims: list[Claim], images: list[Path],
                    benchmarks: list[str] | None = None) -> str:
    """The whole report; it links the PNGs by file name (report.md lies next to them)."""
    pics = "\n\n".join(f"![{p.stem}]({p.name})" for p in images)
    return (f"# r1flow report: {name}\n\n{claims_markdown(claims)}\n{pics}\n\n"
            f"{comparison_markdown(evals, benchmarks)}\n"
            "Sampling as the R1 paper's evaluation unless the recipe says otherwise; pass@1 is the mean over "
            "k samples per problem, cons@k the majority answer's accuracy. Per-sample rows: `samples.parquet`.\n")
