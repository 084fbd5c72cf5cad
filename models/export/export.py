"""One checkpoint through the whole export: GGUF files (converted, quantized, each checked by llama.cpp),
a Modelfile per GGUF file, and the Hugging Face folder. What the `export` stage (tasks/export.py) and
`r1flow export` run; writes only under `out`:

    out/gguf/NAME-TYPE.gguf, out/gguf/NAME-TYPE.Modelfile    (formats: gguf)
    out/hf/                                                   (formats: hf)
    out/export.json                                           (files, check numbers, commands)
"""

from __future__ import annotations

import json
from pathlib import Path

from r1flow.data.store import Manifest
from r1flow.data.templates import R1_ZERO_SYSTEM
from r1flow.models.export import ExportConfig
from r1flow.models.export.check import _hf, check_gguf
from r1flow.models.export.gguf import CONVERTER_TYPES, ExportError, convert, quantize
from r1flow.models.export.hf_folder import write_folder
from r1flow.models.export.ollama import TemplateError, modelfile, verified_template


def export_checkpoint(ckpt: Path, out: Path, work: Path, cfg: ExportConfig, *, name: str, prompts: list[str],
                      manifest: Manifest, ancestry: list[Manifest], eval_rows: list[dict], log=print) -> dict:
    """Export checkpoint directory `ckpt` as `cfg` says; returns export.json's content. Raises ExportError
    (nothing useful is left in `out`: the caller's artifact is not sealed) on any failed step or check."""
    result: dict = {"name": name, "checkpoint": manifest.id, "stage": manifest.stage, "gguf": [], "hf": None}
    if "gguf" in cfg.formats:
        hf = _hf(ckpt)
        tok = hf[0]
        try:
            template = verified_template(tok)
        except TemplateError as e:
            raise ExportError(f"Ollama Modelfile for {name}: {e}") from e
        num_ctx = int(json.loads((ckpt / "config.json").read_text()).get("max_position_embeddings", 2048))
        first = None
        for t in cfg.gguf_types():
            path = out / "gguf" / f"{name}-{t}.gguf"
            if t in CONVERTER_TYPES:
                convert(ckpt, path, t, work / t, log=log)
            else:
                quantize(first, path, t, log=log)
            first = first or path
            res = check_gguf(path, t, ckpt, prompts, greedy=cfg.check.greedy,
                             max_new_tokens=cfg.check.max_new_tokens, hf=hf)
            log(f"[export] {path.name} checked by llama.cpp: tokens {res['tokens_equal']}/{res['prompts']}, max "
                f"|dlogp| {res['max_abs_logprob_diff']:.2e}, mean {res['mean_abs_logprob_diff']:.2e} ({res['bound_on']} "
                f"<= {res['bound']:g}), greedy "
                f"{res['greedy_equal']}/{res['greedy_prompts']}")
            mf = path.with_suffix(".Modelfile")
            mf.write_text(modelfile(path.name, template, [tok.eos_token], R1_ZERO_SYSTEM if cfg.system_prompt else None,
                                    num_ctx))
            res |= {"modelfile": str(mf.relative_to(out)), "path": str(path.relative_to(out)),
                    "ollama": f"ollama create {name}:{t} -f {mf.name} && ollama run {name}:{t}",
                    "llama_cpp": f"llama-cli -m {path.name} --jinja -cnv --temp 0.6 --top-p 0.95"}
            result["gguf"].append(res)
    if "hf" in cfg.formats:
        info = write_folder(ckpt, out / "hf", name=name, manifest=manifest, ancestry=ancestry, eval_rows=eval_rows)
        _check_hf_loads(out / "hf")
        result["hf"] = info | {"path": "hf", "upload": f"huggingface-cli upload YOUR_ORG/{name} hf"}
        log(f"[export] hf/: {', '.join(info['files'])} (loads with AutoModelForCausalLM)")
    (out / "export.json").write_text(json.dumps(result, indent=2))
    return result


def _check_hf_loads(folder: Path) -> None:
    """The folder is usable as it is: transformers loads model and tokenizer from it alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(folder)
        AutoModelForCausalLM.from_pretrained(folder)
    except Exception as e:  # any failure means the folder is not self-contained
        raise ExportError(f"the exported folder {folder} does not load with transformers: {e}") from e
