"""Stage 10 `evaluate`: sample and score held-out problems on one checkpoint with vLLM."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from r1flow.data import metrics, notation, verify
from r1flow.data.schemas import read_rows, write_rows
from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.models import engine as eng, evaluate as ev, fleet
from r1flow.models.fleet import make_engine
from r1flow.tasks.common import log, publish_table, run_stage


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


@task(name="evaluate", cache_policy=NONE)
def evaluate_task(cfg: ev.EvalConfig, label: str, ckpt: ArtifactRef, world_ref: ArtifactRef, store_root: str,
                  mode: str = "run") -> ArtifactRef:
    store = ArtifactStore(store_root)
    ref = run_stage(store, stage="evaluate", kind="report", config={"eval": cfg.model_dump(mode="json"), "label": label},
                    parents=[ckpt, world_ref], modules=[ev, eng, fleet, metrics, verify, notation],
                    build=lambda out, s, _w: build_eval(cfg, label, ckpt, world_ref, out, s), mode=mode)
    table = read_rows(ref.file("summary.parquet"), "eval_summary")
    publish_table(f"r1flow-eval-{label}", table, f"Held-out evaluation of **{label}** (artifact `{ref.id[:12]}`)")
    return ref
