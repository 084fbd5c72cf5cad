"""Pretraining throughput: r1flow's training loop vs a plain transformers `Trainer` on the same model.

    python bench/pretrain_throughput.py [--recipe configs/tiny.yaml] [--store artifacts] [--steps 40]

Uses the recipe's world corpus and tokenizer from the store (run `make run` first). For each model
size (the recipe's model, 2x and 3x its width) and, for the recipe's model, three sequence lengths,
it trains `--steps` steps with r1flow's loop (`models/train/pretrain.py`, aux-loss-free balancing on, MTP off
so both sides compute the same loss) and with `transformers.Trainer` (same model from `build_model`,
same packed rows, batch, AdamW betas, weight decay, lr schedule, clipping). Tokens/s leave out the
first 10 steps (warm-up). MFU divides the model's training FLOPs per token (`train_flops_per_token`) by the dense matmul rate measured on this machine in the same run. Writes
bench/results/pretrain_throughput_<device>.json. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from _common import OUT, device_name

from r1flow.data.store import ArtifactStore
from r1flow.models.train.pretrain import build_model, matmul_peak_flops, pack, pretrain
from r1flow.recipe import load_recipe
from r1flow.stages import latest_refs

WARMUP = 10


def r1flow_tps(cfg, corpus: Path, heldout: Path, tok_dir: Path, tmp: Path) -> float:
    stamps: list[tuple[int, float]] = []
    pretrain(cfg, corpus, heldout, tok_dir, tmp / "out", tmp / "work",
             on_log=lambda rec: stamps.append((rec["step"], time.perf_counter())))
    (s0, t0), (s1, t1) = stamps[0], stamps[-1]
    return (s1 - s0) * cfg.batch_size * (cfg.seq_len - 1) / (t1 - t0)


def trainer_tps(cfg, corpus: Path, tok_dir: Path, tmp: Path) -> float:
    from transformers import AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    rows = pack(pq.read_table(corpus, columns=["text"]).column("text").to_pylist(), tok, cfg.seq_len, cfg.seed)
    model = build_model(cfg, tok, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    data = [{"input_ids": r, "labels": r} for r in rows[: cfg.steps * cfg.batch_size]]
    stamps: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps[state.global_step] = time.perf_counter()

    args = TrainingArguments(output_dir=str(tmp / "trainer"), max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
                             learning_rate=cfg.lr, lr_scheduler_type="cosine", warmup_steps=cfg.warmup_steps,
                             weight_decay=cfg.weight_decay, adam_beta1=cfg.betas[0], adam_beta2=cfg.betas[1],
                             max_grad_norm=cfg.grad_clip, save_strategy="no", report_to="none", logging_steps=10**6,
                             use_cpu=not torch.cuda.is_available(), disable_tqdm=True, dataloader_num_workers=0,
                             seed=cfg.seed)
    Trainer(model=model, args=args, train_dataset=data, callbacks=[Clock()]).train()
    return (cfg.steps - WARMUP) * cfg.batch_size * (cfg.seq_len - 1) / (stamps[cfg.steps] - stamps[WARMUP])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="configs/tiny.yaml")
    ap.add_argument("--store", default=None)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    recipe = load_recipe(args.recipe, {"store": args.store} if args.store else None)
    refs = latest_refs(ArtifactStore(recipe.store_root()), recipe)
    if "world" not in refs or "tokenizer" not in refs:
        raise SystemExit(f"no world/tokenizer for {args.recipe} in {recipe.store_root()}: run `make run` first")
    corpus, heldout, tok_dir = refs["world"].file("corpus.parquet"), refs["world"].file("heldout.parquet"), \
        Path(refs["tokenizer"].path)
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(str(tok_dir)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = matmul_peak_flops(device, torch.float32 if device.type == "cpu" else torch.bfloat16)
    base = recipe.pretrain.model_copy(update={"steps": args.steps, "mtp_depth": 0, "log_every": WARMUP,
                                              "checkpoint_every": 10**6, "warmup_steps": 5})
    m = base.model
    runs = [("recipe", m, base.seq_len), ("recipe", m, base.seq_len // 2), ("recipe", m, base.seq_len * 2),
            ("2x width", m.model_copy(update={"hidden_size": 2 * m.hidden_size,
                                              "intermediate_size": 2 * m.intermediate_size,
                                              "moe_intermediate_size": 2 * m.moe_intermediate_size}), base.seq_len),
            ("3x width", m.model_copy(update={"hidden_size": 3 * m.hidden_size, "num_attention_heads": 6,
                                              "intermediate_size": 3 * m.intermediate_size,
                                              "moe_intermediate_size": 3 * m.moe_intermediate_size}), base.seq_len)]
    results = []
    for name, model_cfg, seq in runs:
        cfg = base.model_copy(update={"model": model_cfg, "seq_len": seq})
        with tempfile.TemporaryDirectory() as tmp:
            ours = r1flow_tps(cfg, corpus, heldout, tok_dir, Path(tmp))
            theirs = trainer_tps(cfg, corpus, tok_dir, Path(tmp))
        fpt = model_cfg.train_flops_per_token(vocab, seq)
        row = {"model": name, "hidden_size": model_cfg.hidden_size, "seq_len": seq,
               "params_active": model_cfg.param_counts(vocab)["active"], "flops_per_token": fpt,
               "r1flow_tokens_per_s": ours, "trainer_tokens_per_s": theirs, "ratio": ours / theirs,
               "r1flow_mfu": ours * fpt / peak, "trainer_mfu": theirs * fpt / peak}
        results.append(row)
        print(f"{name:>9} seq {seq:4d}: r1flow {ours:,.0f} tok/s (MFU {row['r1flow_mfu']:.1%}), Trainer "
              f"{theirs:,.0f} tok/s (MFU {row['trainer_mfu']:.1%}) -> {row['ratio']:.2f}x", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"pretrain_throughput_{device_name()}.json"
    out.write_text(json.dumps({"benchmark": "pretrain_throughput", "device": device_name(),
                               "matmul_peak_gflops": peak / 1e9, "steps": args.steps, "warmup_steps_excluded": WARMUP,
                               "results": results,
                               "ratio_mean": statistics.mean(r["ratio"] for r in results)}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
