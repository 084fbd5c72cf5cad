"""Stage 10's last step, `report`: one artifact with the run's whole evaluation (models/eval/report.py).

Its parents are every evaluation of the run (role `evaluate:LABEL`) and every RL checkpoint (role
`curves:LABEL`, for the curves); its config names the checkpoints, the curves and the students. On disk it is
`report.md` with its PNGs, `table.parquet` (one row per checkpoint and family), `samples.parquet`
(every scored sample of every checkpoint) and `claims.json`; in the Prefect UI a Markdown artifact
with the plots inlined and a table artifact.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from r1flow.data.schemas import read_rows, write_rows
from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.models.eval import report
from r1flow.tasks.common import BuildContext, Node, log, publish_markdown, publish_table
from r1flow.tasks.export import export_rows


def _read(path: Path) -> list[dict]:
    """A Parquet table without a data/schemas.py schema (RL metrics, the report table)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    return pq.read_table(path).to_pylist()


def training_seconds(store: ArtifactStore, evals: dict[str, ArtifactRef]) -> dict[str, float]:
    """Wall time of the stage that made each evaluated checkpoint (an evaluation's first parent), for
    the compute comparison of claim 4; read from the lineage, so it is fixed by the report's parents."""
    out = {}
    for label, ref in evals.items():
        secs = store.manifest(store.manifest(ref.id).parents[0]).summary.get("seconds")
        if secs is not None:
            out[label] = float(secs)
    return out


def load_evaluation(path: str | Path) -> dict:
    """An evaluate artifact's summary and per-sample rows, as models/eval/report.py takes them."""
    return {"summary": read_rows(Path(path) / "summary.parquet", "eval_summary"),
            "samples": read_rows(Path(path) / "samples.parquet", "eval_samples")}


def _diff(r: dict) -> str:
    if r["max |dlogp|"] is None:
        return "-"
    return f"{r['max |dlogp|']:.1e} / {r['mean |dlogp|']:.1e} ({r['bound on']} <= {r['bound']:g})"


def exports_markdown(rows: list[dict]) -> str:
    """The report's last section: every exported file, its llama.cpp check and how to run it."""
    if not rows:
        return ""
    body = "".join(f"| {r['checkpoint']} | {r['format']} {r['type']} | {r['MiB']:.2f} | {r['tokens equal']} | "
                   f"{_diff(r)} | {r['greedy equal']} | `{r['run']}` |\n" for r in rows)
    return ("\n## Exports\n\nEvery GGUF file was loaded by llama.cpp, which tokenized the held-out prompts as "
            "transformers does and matched its next-token log-probs within the bound shown (on the largest difference "
            "for unquantized files, on the mean for quantized ones); greedy completions must "
            "match for unquantized files. Run the commands from the export's `gguf/` folder.\n\n"
            "| checkpoint | file | MiB | tokens equal | abs log-prob diff, max / mean | greedy equal | run |\n"
            "|---|---|---|---|---|---|---|\n" + body)


def build_report(b: BuildContext) -> None:
    cfg, out, summary = b.node.config, b.out, b.summary
    name, students = cfg["name"], cfg["students"]
    evals = {lb: b.parents[f"evaluate:{lb}"] for lb in cfg["checkpoints"]}
    curves = {lb: b.parents[f"curves:{lb}"] for lb in cfg["curves"]}
    seconds = training_seconds(b.store, evals)
    loaded = {lb: load_evaluation(ref.path) for lb, ref in evals.items()}
    rl = {lb: _read(Path(ref.path) / "r1flow" / "metrics.parquet") for lb, ref in curves.items()}
    claims = report.check_claims(loaded, rl, students, seconds)
    images = [out / "accuracy.png"] if report.plot_accuracy(loaded, out / "accuracy.png") else []
    if rl:
        images.append(out / "rl_curves.png")
        report.plot_rl_curves(rl, images[-1])
    benchmarks = cfg.get("benchmarks", [])
    exports = [row for lb in cfg.get("exports", []) for row in export_rows(b.parents[f"export:{lb}"], lb)]
    (out / "report.md").write_text(report.report_markdown(name, loaded, claims, images, benchmarks)
                                   + exports_markdown(exports))
    if exports:
        pq.write_table(pa.Table.from_pylist(exports), out / "exports.parquet")
    pq.write_table(pa.Table.from_pylist(report.comparison_rows(loaded)), out / "table.parquet")
    write_rows([s for e in loaded.values() for s in e["samples"]], out / "samples.parquet", "eval_samples")
    (out / "claims.json").write_text(json.dumps([c.as_row() for c in claims], indent=2))
    for c in claims:
        log(f"[report] claim {c.number} {c.verdict}: {c.evidence}")
    summary |= {"checkpoints": len(loaded), **{f"claim{c.number}": c.verdict for c in claims},
                **{f"pass@1/{r['family']}/{lb}": r["pass@1"] for lb, e in loaded.items() for r in e["summary"]
                   if r["family"] in benchmarks}}


def show_report(store: ArtifactStore, node: Node, ref: ArtifactRef) -> None:
    """report.md with its PNGs inlined, and the table, as Prefect artifacts (also when cached)."""
    name, out = node.config["name"], Path(ref.path)
    md = (out / "report.md").read_text()
    for png in sorted(out.glob("*.png")):
        md = md.replace(f"]({png.name})", "](data:image/png;base64," + base64.b64encode(png.read_bytes()).decode() + ")")
    publish_markdown("r1flow-report", md, f"{name}: every checkpoint, the paper's claims, plots ({out / 'report.md'})")
    publish_table("r1flow-report-table", _read(out / "table.parquet"),
                  "Every checkpoint x family: pass@1 [95% CI], cons@k, length, format, EOS, language consistency")
    log(f"[report] {out / 'report.md'}")
