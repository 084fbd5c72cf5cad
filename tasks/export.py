"""Stage `export` (after evaluation): ship a checkpoint as GGUF files with Ollama Modelfiles and as a
Hugging Face folder, each GGUF file checked by llama.cpp (models/export/). One node per exported
checkpoint (`export:LABEL`); parents by role: `checkpoint`, `evaluate` (its table goes into the model
card) and where the check's held-out prompts come from: `world` (eval.parquet) or, with
`evaluate.world: false`, the first benchmark (`data:NAME`). The report lists every export.
"""

from __future__ import annotations

import json
from pathlib import Path

from r1flow.data.schemas import read_rows
from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.models.eval.evaluate import build_prompt
from r1flow.models.export import ExportConfig
from r1flow.models.export.export import export_checkpoint
from r1flow.tasks.common import BuildContext, Node, imported, log, publish_table


def check_rows(rows: list[dict], n: int) -> list[dict]:
    """`n` held-out problems spread over the families, round-robin, in file order within a family."""
    by_family: dict[str, list[dict]] = {}
    for r in rows:
        by_family.setdefault(r["family"], []).append(r)
    out, i = [], 0
    while len(out) < n and any(i < len(v) for v in by_family.values()):
        out += [v[i] for v in by_family.values() if i < len(v)][:n - len(out)]
        i += 1
    return out


def check_prompts(b: BuildContext, tokenizer, n: int) -> list[str]:
    """The held-out prompts the llama.cpp check uses, asked as evaluation asks them."""
    template = b.node.recorded.get("template", "r1_zero")
    if "world" in b.parents:
        rows = read_rows(b.parents["world"].file("eval.parquet"), "prompts")
    else:
        rows = next(iter(imported(b).values()), [])
    rows = check_rows(rows, n)
    if not rows:
        raise ValueError(f"export {b.node.label}: no held-out prompts for the llama.cpp check")
    return [build_prompt(r, tokenizer, template) for r in rows]


def build_export(b: BuildContext) -> None:
    from transformers import AutoTokenizer

    cfg: ExportConfig = b.node.config
    rec = b.node.recorded
    ckpt = b.parents["checkpoint"]
    prompts = check_prompts(b, AutoTokenizer.from_pretrained(ckpt.path), cfg.check.prompts)
    eval_rows = read_rows(b.parents["evaluate"].file("summary.parquet"), "eval_summary") \
        if "evaluate" in b.parents else []
    res = export_checkpoint(Path(ckpt.path), b.out, b.work, cfg, name=rec["name"], prompts=prompts,
                            manifest=b.store.manifest(ckpt.id), ancestry=b.store.ancestry(ckpt.id),
                            eval_rows=eval_rows, log=log)
    b.summary |= {"checkpoint": rec["label"], "exported_from": ckpt.id[:12],
                  "gguf_files": len(res["gguf"]), "hf_folder": res["hf"] is not None,
                  **{f"max_dlogp/{g['type']}": g["max_abs_logprob_diff"] for g in res["gguf"]},
                  **{f"greedy/{g['type']}": f"{g['greedy_equal']}/{g['greedy_prompts']}" for g in res["gguf"]}}


def export_rows(ref: ArtifactRef, label: str) -> list[dict]:
    """One row per exported file of an export artifact (the report's and the UI's table)."""
    res = json.loads(ref.file("export.json").read_text())
    rows = [{"checkpoint": label, "format": "gguf", "type": g["type"], "path": f"{ref.path}/{g['path']}",
             "MiB": round(g["bytes"] / 2**20, 2), "tokens equal": f"{g['tokens_equal']}/{g['prompts']}",
             "max |dlogp|": g["max_abs_logprob_diff"], "mean |dlogp|": g["mean_abs_logprob_diff"],
             "bound on": g["bound_on"], "bound": g["bound"],
             "greedy equal": f"{g['greedy_equal']}/{g['greedy_prompts']}", "run": g["ollama"]} for g in res["gguf"]]
    if res["hf"]:
        rows.append({"checkpoint": label, "format": "hf", "type": "safetensors", "path": f"{ref.path}/hf",
                     "MiB": round(sum(p.stat().st_size for p in Path(ref.path, "hf").iterdir()) / 2**20, 2),
                     "tokens equal": "-", "max |dlogp|": None, "mean |dlogp|": None, "bound on": None,
                     "bound": None, "greedy equal": "-",
                     "run": res["hf"]["upload"]})
    return rows


def show_export(store: ArtifactStore, node: Node, ref: ArtifactRef) -> None:
    publish_table(f"r1flow-export-{node.label}", export_rows(ref, node.label),
                  f"Exports of **{node.label}** (artifact `{ref.id[:12]}`), every GGUF file checked by llama.cpp; "
                  f"run with `cd {ref.path}/gguf` then the command shown")
