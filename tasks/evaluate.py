"""Stage 10 `evaluate`: sample and score held-out problems on one checkpoint with vLLM. One node per
checkpoint; parents by role: `checkpoint`, `world` (eval.parquet, unless `world: false`) and `data:NAME`
for every benchmark of `evaluate.benchmarks`."""

from __future__ import annotations

from r1flow.data.schemas import read_rows, write_rows
from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.models.eval import evaluate as ev
from r1flow.models.rollout.fleet import make_engine
from r1flow.tasks.common import BuildContext, Node, imported, log, publish_table


def summary_markdown(label: str, rows: list[dict]) -> str:
    head = "| family | problems | k | pass@1 | 95% CI | cons@k | mean len | format | EOS | lang. consistency |\n" \
           "|---|---|---|---|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['family']} | {r['problems']} | {r['k']} | {r['pass@1']:.3f} | [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
        f"| {r['cons@k']:.3f} | {r['mean_length']:.1f} | {r['format_rate']:.2f} | {r['eos_rate']:.2f} | "
        f"{'-' if r['lang_consistency'] is None else format(r['lang_consistency'], '.3f')} |\n" for r in rows)
    return f"# Evaluation: {label}\n\n{head}{body}"


def build_eval(b: BuildContext) -> None:
    cfg: ev.EvalConfig = b.node.config
    label, out = b.node.label, b.out
    rows = read_rows(b.parents["world"].file("eval.parquet"), "prompts") if cfg.world else []
    engine = make_engine(b.parents["checkpoint"].path, cfg.engine)
    try:
        samples, table = ev.evaluate(engine, engine.tokenizer, rows, cfg, label, benchmarks=imported(b))
    finally:
        engine.close()
    write_rows(samples, out / "samples.parquet", "eval_samples")
    write_rows(table, out / "summary.parquet", "eval_summary")
    (out / "report.md").write_text(summary_markdown(label, table))
    for r in table:
        log(f"[evaluate] {label} {r['family']:<10} pass@1 {r['pass@1']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
            f"cons@k {r['cons@k']:.3f} format {r['format_rate']:.2f} len {r['mean_length']:.1f}")
    b.summary |= {"checkpoint": label, "samples": len(samples),
                  **{f"pass@1/{r['family']}": r["pass@1"] for r in table}}


def show_eval(store: ArtifactStore, node: Node, ref: ArtifactRef) -> None:
    table = read_rows(ref.file("summary.parquet"), "eval_summary")
    publish_table(f"r1flow-eval-{node.label}", table,
                  f"Held-out evaluation of **{node.label}** (artifact `{ref.id[:12]}`)")
