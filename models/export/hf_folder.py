"""A self-contained Hugging Face model folder: what `huggingface-cli upload ORG/NAME DIR` pushes as it is.

It holds the weights (safetensors), config, tokenizer and chat template as the checkpoint has them; a
`generation_config.json` that samples the way the R1 paper recommends (temperature 0.6, top-p 0.95);
and a model card (`README.md`) with the lineage of the checkpoint (every artifact it was made from, by
stage and id), the recipe section that trained it, the data it was trained on (the world or each
imported source, with its fingerprint) and its evaluation table. Reads manifests only, never writes
outside `dst`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from r1flow.data.store import Manifest
from r1flow.models.export.ollama import R1_SAMPLING

# Checkpoint files the folder keeps; r1flow's own extras (curves, metrics, rollouts) stay in the store.
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
               "special_tokens_map.json", "generation_config.json", "vocab.json", "merges.txt", "tokenizer.model",
               "added_tokens.json")


def write_folder(ckpt: Path, dst: Path, *, name: str, manifest: Manifest, ancestry: list[Manifest],
                 eval_rows: list[dict]) -> dict:
    """Copy the model into `dst` with generation config and model card; returns what it wrote."""
    dst.mkdir(parents=True, exist_ok=True)
    files = [f for f in sorted(ckpt.iterdir()) if f.is_file() and (f.name in MODEL_FILES or
                                                                   f.name.startswith("model") and
                                                                   f.name.endswith((".safetensors", ".json")))]
    for f in files:
        shutil.copyfile(f, dst / f.name)
    gen_path = dst / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    gen.pop("_from_model_config", None)
    cfg = json.loads((ckpt / "config.json").read_text())
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if k not in gen and cfg.get(k) is not None:
            gen[k] = cfg[k]
    gen |= {"do_sample": True, **R1_SAMPLING}
    gen_path.write_text(json.dumps(gen, indent=2) + "\n")
    (dst / "README.md").write_text(model_card(name, cfg, manifest, ancestry, eval_rows))
    return {"files": sorted(p.name for p in dst.iterdir()), "architecture": (cfg.get("architectures") or ["?"])[0]}


def _sources(ancestry: list[Manifest]) -> list[str]:
    out = []
    for m in ancestry:
        if m.stage == "world":
            out.append(f"- the generated task world (r1flow `world` artifact `{m.id[:12]}`; families and sizes in its "
                       f"config: {', '.join(f'{k}={v}' for k, v in m.config.items() if isinstance(v, int | str))})")
        elif m.stage == "data_import":
            src = m.config.get("source", {})
            where = src.get("path") or src.get("hub")
            out.append(f"- `{m.summary.get('data_source', m.config.get('name'))}`: {where} "
                       f"({src.get('use', 'prompts')}, {m.summary.get('rows', '?')} rows, fingerprint "
                       f"`{str(m.config.get('fingerprint', ''))[:16]}`; artifact `{m.id[:12]}`)")
    return out or ["- (none recorded)"]


def model_card(name: str, cfg: dict, manifest: Manifest, ancestry: list[Manifest], eval_rows: list[dict]) -> str:
    arch = (cfg.get("architectures") or ["?"])[0]
    head = {"library_name": "transformers", "pipeline_tag": "text-generation",
            "tags": ["r1flow", "deepseek-r1-recipe", manifest.stage]}
    lines = ["---", yaml.safe_dump(head, sort_keys=False).strip(), "---", "", f"# {name}", "",
             (f"A `{arch}` checkpoint trained by r1flow (the DeepSeek-R1 recipe as a Prefect DAG): stage "
              f"`{manifest.stage}`, artifact `{manifest.id[:12]}`, code version `{manifest.code_version[:12]}`. "
              f"{cfg.get('num_hidden_layers', '?')} layers, hidden size {cfg.get('hidden_size', '?')}, vocabulary "
              f"{cfg.get('vocab_size', '?')}."), "",
             "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
             "tok = AutoTokenizer.from_pretrained(\"PATH\")", "model = AutoModelForCausalLM.from_pretrained(\"PATH\")",
             ("ids = tok.apply_chat_template([{\"role\": \"user\", \"content\": \"...\"}], "
              "add_generation_prompt=True, return_tensors=\"pt\")"),
             "print(tok.decode(model.generate(ids, max_new_tokens=256)[0]))  # generation_config: T 0.6, top-p 0.95",
             "```", "", "## Evaluation", ""]
    if eval_rows:
        lines += ["| family | problems | k | pass@1 | 95% CI | cons@k | mean length | format |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['family']} | {r['problems']} | {r['k']} | {r['pass@1']:.3f} | [{r['ci_low']:.3f}, "
                  f"{r['ci_high']:.3f}] | {r['cons@k']:.3f} | {r['mean_length']:.1f} | {r['format_rate']:.2f} |"
                  for r in eval_rows]
    else:
        lines.append("(no evaluation artifact was given to the export)")
    lines += ["", "## Training data", "", *_sources(ancestry), "", "## Recipe section", "",
              f"The configuration stage `{manifest.stage}` ran with:", "", "```yaml",
              yaml.safe_dump(manifest.config, sort_keys=False).strip(), "```", "", "## Lineage", "",
              "Every artifact this checkpoint was made from, parents first:", "",
              "| stage | kind | artifact | parents |", "|---|---|---|---|"]
    lines += [f"| {m.stage} | {m.kind} | `{m.id[:12]}` | {', '.join(f'`{p[:12]}`' for p in m.parents) or '-'} |"
              for m in ancestry]
    return "\n".join(lines) + "\n"
