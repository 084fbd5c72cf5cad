"""Rollout throughput: r1flow's vLLM engine vs transformers `generate` (TRL's GRPO path without vLLM).

    python bench/rollout_throughput.py [--recipe configs/tiny.yaml] [--store artifacts] [--repeats 3]

Uses the recipe's base checkpoint and RL prompts from the store (run `make run` first). For each
shape, both sides sample the same prompts under the R1-Zero template, G completions each, at the
recipe's rollout temperature and completion length: transformers batches every prompt x G row into
one left-padded `generate(do_sample=True)` call, as TRL does with `use_vllm=False`; r1flow sends each
prompt once with n=G (`models/rollout/engine.py`). Throughput counts generated tokens up to and including EOS.
Shapes: the recipe's RL step (prompts_per_step x G) and one with twice the prompts. Each side runs `--repeats`
times after one warm-up; the JSON has every timing, the mean +- std and the ratio.
Writes bench/results/rollout_throughput_<device>.json. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _common import OUT, base_refs, device_name

from r1flow.data.schemas import read_rows
from r1flow.data.store import ArtifactStore
from r1flow.data.templates import r1_zero_messages
from r1flow.models.rollout.engine import SamplingConfig, VLLMEngine
from r1flow.recipe import load_recipe



def hf_generate(model, tok, prompts: list[str], g: int, temperature: float, max_tokens: int, seed: int) -> int:
    tok.padding_side = "left"
    batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**batch, do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                             max_new_tokens=max_tokens, num_return_sequences=g, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
    new = out[:, batch["input_ids"].shape[1]:]
    n = 0
    for row in new.tolist():  # tokens up to and including the first EOS
        n += row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
    return n


def vllm_generate(engine, prompts: list[str], g: int, temperature: float, max_tokens: int, seed: int) -> int:
    outs = engine.generate(prompts, SamplingConfig(n=g, temperature=temperature, top_p=1.0, max_tokens=max_tokens,
                                                   seed=seed))
    return sum(len(c.token_ids) + (c.finish_reason == "stop") for group in outs for c in group)


def timed(fn, repeats: int) -> list[dict]:
    fn(seed=-1)  # warm-up
    runs = []
    for r in range(repeats):
        t0 = time.perf_counter()
        tokens = fn(seed=r)
        s = time.perf_counter() - t0
        runs.append({"seconds": s, "tokens": tokens, "tokens_per_s": tokens / s})
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="configs/tiny.yaml")
    ap.add_argument("--store", default=None)
    ap.add_argument("--base", default=None, help="Base checkpoint directory (default: the recipe's, from the store).")
    ap.add_argument("--world", default=None, help="World artifact directory with rl.parquet (default: from the store).")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    recipe = load_recipe(args.recipe, {"store": args.store} if args.store else None)
    store = ArtifactStore(recipe.store_root())
    refs = base_refs(store, recipe, args.base, args.world)
    if "pretrain" not in refs or "world" not in refs:
        raise SystemExit(f"no base checkpoint for {args.recipe} in {store.root}: run `make run` first")
    ckpt, rl = refs["pretrain"].path, read_rows(refs["world"].file("rl.parquet"), "prompts")
    cfg = recipe.r1_zero
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    texts = [tok.apply_chat_template(r1_zero_messages(r["question"]), add_generation_prompt=True, tokenize=False)
             for r in rl if r["family"] in cfg.families]
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    engine = VLLMEngine(ckpt, cfg.engine)
    shapes = [("rl_step", cfg.prompts_per_step, cfg.num_generations),
              ("2x prompts", 2 * cfg.prompts_per_step, cfg.num_generations)]
    results = []
    try:
        for name, p, g in shapes:
            prompts = texts[:p]
            common = dict(g=g, temperature=cfg.temperature, max_tokens=cfg.max_completion_length)
            hf = timed(lambda seed: hf_generate(model, tok, prompts, seed=seed, **common), args.repeats)
            vl = timed(lambda seed: vllm_generate(engine, prompts, seed=seed, **common), args.repeats)
            row = {"shape": name, "prompts": p, "G": g, "max_tokens": cfg.max_completion_length,
                   "temperature": cfg.temperature, "transformers": hf, "vllm": vl}
            for side, runs in (("transformers", hf), ("vllm", vl)):
                tps = [r["tokens_per_s"] for r in runs]
                row[f"{side}_tokens_per_s"] = statistics.mean(tps)
                row[f"{side}_tokens_per_s_std"] = statistics.stdev(tps) if len(tps) > 1 else 0.0
            ratios = [v["tokens_per_s"] / h["tokens_per_s"] for v, h in zip(vl, hf)]
            row["ratio"] = statistics.mean(ratios)
            row["ratio_std"] = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
            results.append(row)
            print(f"{name:>8}: {p} prompts x G={g}: transformers {row['transformers_tokens_per_s']:,.0f} tok/s, "
                  f"vLLM {row['vllm_tokens_per_s']:,.0f} tok/s -> {row['ratio']:.2f}x +- {row['ratio_std']:.2f}",
                  flush=True)
    finally:
        engine.close()
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"rollout_throughput_{device_name()}.json"
    out.write_text(json.dumps({"benchmark": "rollout_throughput", "device": device_name(),
                               "threads": torch.get_num_threads(), "checkpoint": Path(ckpt).name,
                               "recipe": recipe.name, "target_ratio": 5.0, "results": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
