"""Stage 10 `evaluate`: sample and score held-out problems on one checkpoint with vLLM."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from r1flow.data import metrics, notation, verify
from r1flow.data.schemas import read_rows, write_rows
from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.models import engine as eng, evaluate as ev
from r1flow.models.fleet import make_engine
from r1flow.tasks.common import log, publish_markdown, publish_table, run_stage


def summary_markdown(label: str, rows: list[dict]) -> str:
    head = "| family | problems | k | pass@1 | 95% CI | cons@k | mean len | format | EOS | lang. consistency |\n" \
           "|---|---|---|---|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['family']} | {r['problems']} | {r['k']} | {r['pass@1']:.3f} | [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
        f"| {r['cons@k']:.3f} | {r['mean_length']:.1f} | {r['format_rate']:.2f} | {r['eos_rate']:.2f} | "
        f"{'-' if r['lang_consistency'] is None else format(r['lang_consistency'], '.3f')} |\n" for r in rows)
    return f"# Evaluation: {label}\n\n{head}{body}"


def build_eval(cfg: ev.EvalConfig, label: str, ckpt: ArtifactRef, world_ref: ArtifactRef, out: Path,
               summary: dict) -> None:
    rows = read_rows(world_ref.file("eval.parquet"), "prompts")
    engine = make_engine(ckpt.path, cfg.engine)
    try:
        samples, table = ev.evaluate(engine, engine.tokenizer, rows, cfg, label)
    finally:
        engine.close()
    write_rows(samples, out / "samples.parquet", "eval_samples")
    write_rows(table, out / "summary.parquet", "eval_summary")
    (out / "report.md").write_text(summary_markdown(label, table))
    for r in table:
        log(f"[evaluate] {label} {r['family']:<10} pass@1 {r['pass@1']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
            f"cons@k {r['cons@k']:.3f} format {r['format_rate']:.2f} len {r['mean_length']:.1f}")
    summary |= {"checkpoint": label, "samples": len(samples),
                **{f"pass@1/{r['family']}": r["pass@1"] for r in table}}


def _per_problem(samples: list[dict], family: str) -> dict[str, list[bool]]:
    out: dict[str, list[bool]] = {}
    for r in samples:
        if r["family"] == family or (family == ev.REASONING_ALL and r["kind"] == "reasoning"):
            out.setdefault(r["problem_id"], []).append(bool(r["correct"]))
    return out


def comparison_rows(evals: dict[str, dict]) -> list[dict]:
    """One row per (family, checkpoint): pass@1 with its interval, format, length, and, for every
    checkpoint after the first (the base), the paired difference to the first with its 95% interval."""
    labels = list(evals)
    first = labels[0]
    rows = []
    for r0 in evals[first]["summary"]:
        fam = r0["family"]
        for lb in labels:
            r = next((x for x in evals[lb]["summary"] if x["family"] == fam), None)
            if r is None:
                continue
            row = {"family": fam, "checkpoint": lb, "pass@1": r["pass@1"], "ci_low": r["ci_low"],
                   "ci_high": r["ci_high"], "cons@k": r["cons@k"], "format_rate": r["format_rate"],
                   "mean_length": r["mean_length"], "eos_rate": r.get("eos_rate"),
                   "lang_consistency": r.get("lang_consistency"), "delta": None, "delta_low": None, "delta_high": None}
            if lb != first:
                d, lo, hi, _ = metrics.paired_diff_ci(_per_problem(evals[lb]["samples"], fam),
                                                      _per_problem(evals[first]["samples"], fam))
                row |= {"delta": d, "delta_low": lo, "delta_high": hi}
            rows.append(row)
    return rows


def comparison_markdown(evals: dict[str, dict]) -> str:
    """pass@1 [95% CI], format rate and mean length of every evaluated checkpoint, per family, and
    each later checkpoint's paired pass@1 difference to the first (the base model)."""
    labels = list(evals)
    first = labels[0]
    head = "| family | checkpoint | pass@1 [95% CI] | vs " + first + " [95% CI] | cons@k | format | mean len | EOS " \
           "| lang. consistency |\n|---|---|---|---|---|---|---|---|---|\n"
    body = ""
    for r in comparison_rows(evals):
        delta = "-" if r["delta"] is None else (
            f"{r['delta']:+.3f} [{r['delta_low']:+.3f}, {r['delta_high']:+.3f}]"
            + (" **up**" if r["delta_low"] > 0 else " **down**" if r["delta_high"] < 0 else ""))
        lang = "-" if r["lang_consistency"] is None else f"{r['lang_consistency']:.3f}"
        eos = "-" if r["eos_rate"] is None else f"{r['eos_rate']:.3f}"
        body += (f"| {r['family']} | {r['checkpoint']} | {r['pass@1']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
                 f"| {delta} | {r['cons@k']:.3f} | {r['format_rate']:.2f} | {r['mean_length']:.1f} | {eos} | {lang} |\n")
    return (f"# Held-out evaluation, all checkpoints\n\n{head}{body}\n"
            f"'vs {first}': paired difference in pass@1 over the same problems; **up**/**down** when its 95% "
            "bootstrap interval excludes 0.\n" + vs_r1_zero_markdown(evals))


def vs_r1_zero_markdown(evals: dict[str, dict]) -> str:
    """The R1 path against R1-Zero on all reasoning problems (R1 sec. 2.3: readable, one language, at no
    loss in accuracy): paired pass@1 difference and language consistency of each later checkpoint."""
    labels = list(evals)
    if "r1_zero" not in labels or labels[-1] == "r1_zero":
        return ""
    ref = next(r for r in evals["r1_zero"]["summary"] if r["family"] == ev.REASONING_ALL)
    rows = ""
    for lb in labels[labels.index("r1_zero") + 1:]:
        r = next((x for x in evals[lb]["summary"] if x["family"] == ev.REASONING_ALL), None)
        if r is None:
            continue
        d, lo, hi, _ = metrics.paired_diff_ci(_per_problem(evals[lb]["samples"], ev.REASONING_ALL),
                                              _per_problem(evals["r1_zero"]["samples"], ev.REASONING_ALL))
        lang = "-" if r.get("lang_consistency") is None else f"{r['lang_consistency']:.3f}"
        rows += (f"| {lb} | {r['pass@1']:.3f} | {d:+.3f} [{lo:+.3f}, {hi:+.3f}] | {lang} | "
                 f"{r['format_rate']:.2f} | {r['mean_length']:.1f} |\n")
    ref_lang = "-" if ref.get("lang_consistency") is None else f"{ref['lang_consistency']:.3f}"
    return ("\n## The R1 path vs R1-Zero, all reasoning problems\n\n"
            "| checkpoint | pass@1 | vs r1_zero [95% CI] | lang. consistency | format | mean len |\n"
            "|---|---|---|---|---|---|\n"
            f"| r1_zero | {ref['pass@1']:.3f} | | {ref_lang} | {ref['format_rate']:.2f} | {ref['mean_length']:.1f} |\n"
            + rows)


def load_evals(refs: dict[str, ArtifactRef | str]) -> dict[str, dict]:
    """{checkpoint label: {"summary": rows, "samples": rows}} for every `evaluate:<label>` in refs."""
    out = {}
    for name, ref in refs.items():
        if name.startswith("evaluate:"):
            path = Path(ref.path if isinstance(ref, ArtifactRef) else ref)
            out[name.split(":", 1)[1]] = {"summary": read_rows(path / "summary.parquet", "eval_summary"),
                                          "samples": read_rows(path / "samples.parquet", "eval_samples")}
    return out


def publish_comparison(refs: dict[str, ArtifactRef]) -> None:
    evals = load_evals(refs)
    if evals:
        publish_markdown("r1flow-eval-comparison", comparison_markdown(evals),
                         "Held-out pass@1 of every checkpoint of this run, and the change from the base")


@task(name="evaluate", cache_policy=NONE)
def evaluate_task(cfg: ev.EvalConfig, label: str, ckpt: ArtifactRef, world_ref: ArtifactRef, store_root: str,
                  mode: str = "run") -> ArtifactRef:
    store = ArtifactStore(store_root)
    ref = run_stage(store, stage="evaluate", kind="report", config={"eval": cfg.model_dump(mode="json"), "label": label},
                    parents=[ckpt, world_ref], modules=[ev, eng, metrics, verify, notation],
                    build=lambda out, s, _w: build_eval(cfg, label, ckpt, world_ref, out, s), mode=mode)
    table = read_rows(ref.file("summary.parquet"), "eval_summary")
    publish_table(f"r1flow-eval-{label}", table, f"Held-out evaluation of **{label}** (artifact `{ref.id[:12]}`)")
    return ref
