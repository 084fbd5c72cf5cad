"""MoE pretraining speed on one device: tokens/s, MFU, peak memory and loss, before and after the
routed-expert precision policy (models/train/precision.py), BF16 and FP8, against a dense model of
similar activated size.

    python bench/pretrain_mfu.py                  # GPU: v3_300m, the 3.3B V3-shaped MoE, the 1B dense Llama
    python bench/pretrain_mfu.py --quick          # tiny shapes, seconds on a CPU (checks the script runs)

Every row is the training step `pretrain()` runs (models/train/pretrain.py: the model from `build_model`, MTP
off, bf16 autocast, fp32 master weights, AdamW (fused on GPU), clipping, the router probe read once per step
and the auxiliary-loss-free bias update) on the same synthetic batches (random prefixes repeated: a copy
task the models learn within the run, so the loss columns mean something). Modes:

- `bf16_before`: transformers' grouped-GEMM experts as they are (they cast activations to the fp32 weights);
- `bf16`: the policy: routed-expert GEMMs on bf16 operands, fp32 masters kept;
- `fp8`: r1flow's FP8 path (models/arch/fp8.py: per-expert linears through torchao's blockwise FP8 GEMM on
  GPU, the float32 emulation on CPU).

MFU divides the model's training FLOPs per token (`train_flops_per_token`) by a bf16 matmul measured in the
same run (8192^3 on GPU, 1024^3 on CPU), so ratios between rows do not depend on a spec sheet. Tokens/s
leave out the warm-up steps. Writes bench/results/pretrain_mfu_<device>.json (`--quick`:
pretrain_mfu_quick_<device>.json). Never part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import time

import torch
from _common import OUT, device_name

from r1flow.models.arch import fp8
from r1flow.models.arch.deepseek_v3.balancing import RouterProbe, update_bias
from r1flow.models.arch.deepseek_v3.config import FLAVORS, MoEModelConfig
from r1flow.models.arch.dense import DenseModelConfig
from r1flow.models.train import precision
from r1flow.models.train.pretrain import PretrainConfig, Trainable, build_model, lr_at, matmul_peak_flops

VOCAB = 512  # about the tiny tokenizer's size, as in issue 20's measurements

# Issue 20's shapes. MOE_3B: d 2048, 12 layers, 32 routed experts top-4 + 1 shared (3.4B total, 0.70B
# activated by param_counts); DENSE_1B: a Llama with d 2048, 16 layers, GQA 16/8.
MOE_3B = MoEModelConfig(hidden_size=2048, num_hidden_layers=12, num_attention_heads=16, q_lora_rank=1536,
                        kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128,
                        intermediate_size=5632, moe_intermediate_size=1408, n_routed_experts=32,
                        n_shared_experts=1, num_experts_per_tok=4, n_group=4, topk_group=2,
                        first_k_dense_replace=1,
                        routed_scaling_factor=2.5, max_position_embeddings=4096)
DENSE_1B = DenseModelConfig(arch="llama", hidden_size=2048, num_hidden_layers=16, num_attention_heads=16,
                            num_key_value_heads=8, intermediate_size=5632, max_position_embeddings=4096)
FULL = [("v3_300m", FLAVORS["v3_300m"], 16, 1024), ("moe_3b", MOE_3B, 8, 2048),
        ("dense_1b", DENSE_1B, 8, 2048)]
QUICK = [("debug_moe", FLAVORS["debug"], 4, 64),
         ("debug_dense", DenseModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                          num_key_value_heads=2, intermediate_size=128,
                                          max_position_embeddings=256), 4, 64)]


class _Tok:
    bos_token_id, eos_token_id, pad_token_id = 0, 1, 2

    def __len__(self) -> int:
        return VOCAB


def batches(n: int, batch: int, seq: int, seed: int = 0) -> list[torch.Tensor]:
    """Rows of seq + 1 tokens: a random prefix, then the prefix again (learnable by induction heads)."""
    g = torch.Generator().manual_seed(seed)
    half = (seq + 2) // 2
    out = []
    for _ in range(n):
        prefix = torch.randint(3, VOCAB, (batch, half), generator=g)
        out.append(torch.cat([prefix, prefix], 1)[:, : seq + 1])
    return out


def run(name: str, model_cfg, batch: int, seq: int, mode: str, steps: int, warmup: int, device: torch.device,
        peak: float) -> dict:
    cfg = PretrainConfig(model=model_cfg.model_dump(), steps=steps, seq_len=seq + 1, batch_size=batch,
                         warmup_steps=max(1, steps // 10), mtp_depth=0, precision="bf16")
    model = build_model(cfg, _Tok(), device)
    moe = isinstance(model_cfg, MoEModelConfig)
    fp8_mode = None
    if mode == "fp8":
        if device.type == "cuda":
            fp8.check_gpu_support(device)
        fp8.use_per_expert_linears(model)
        fp8_mode = fp8.FP8Linears(fp8.high_precision_params(model),
                                  backend="torchao" if device.type == "cuda" else "emulate")
    elif mode == "bf16" and moe:
        precision.autocast_experts(model)
    trainable = Trainable(model, None).train()
    decay = [p for p in trainable.parameters() if p.ndim >= 2]
    rest = [p for p in trainable.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas,
                            fused=device.type == "cuda")
    probe = RouterProbe(model, keep_logits=False) if moe else None
    data = [b.to(device) for b in batches(steps, batch, seq)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # as pretrain(): the FP8 emulation on CPU runs in float32, the GPU's FP8 path inside bf16 autocast
    use_bf16 = not (mode == "fp8" and device.type == "cpu")
    losses, t0 = [], None
    for step, rows in enumerate(data):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16), \
                (fp8_mode or contextlib.nullcontext()):
            loss, _, _ = trainable(rows, 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable.parameters(), cfg.grad_clip)
        opt.step()
        if probe is not None:
            update_bias(probe, probe.take_counts(), cfg.bias_update_gamma)
        losses.append(loss.item())
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tps = (steps - warmup) * batch * seq / dt
    fpt = model_cfg.train_flops_per_token(VOCAB, seq)
    mem = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    params = model_cfg.param_counts(VOCAB)
    tail = max(1, steps // 5)
    row = {"model": name, "mode": mode, "batch": batch, "seq_len": seq, "params_total": params["total"],
           "params_active": params["active"], "tokens_per_s": tps, "mfu": tps * fpt / peak,
           "peak_memory_gb": mem / 2**30, "loss_first": losses[0], "loss_last": losses[-1],
           "loss_tail_mean": sum(losses[-tail:]) / tail, "steps": steps, "timed_steps": steps - warmup}
    if fp8_mode is not None:
        row["fp8_flop_share"] = fp8_mode.flop_share()
    print(f"{name:12s} {mode:12s} {tps:>12,.0f} tok/s  MFU {row['mfu']:6.1%}  "
          f"mem {row['peak_memory_gb']:6.1f} GB  loss {losses[0]:.3f} -> {row['loss_tail_mean']:.3f}",
          flush=True)
    del model, trainable, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny shapes (CPU seconds): checks the script, not speed")
    ap.add_argument("--steps", type=int, default=None, help="steps per row (default 60; --quick 8)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 10; --quick 2)")
    ap.add_argument("--no-fp8", action="store_true", help="skip the FP8 rows (no SM90+ GPU or no torchao)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = args.steps or (8 if args.quick else 60)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 10)
    torch.manual_seed(0)
    peak = matmul_peak_flops(device, torch.bfloat16, n=8192 if device.type == "cuda" else 1024)
    print(f"{device_name()}: bf16 matmul {peak / 1e9:,.1f} GFLOP/s (MFU's denominator)", flush=True)
    rows = []
    for name, model_cfg, batch, seq in QUICK if args.quick else FULL:
        modes = ["bf16_before", "bf16"] if isinstance(model_cfg, MoEModelConfig) else ["bf16"]
        if not args.no_fp8 and isinstance(model_cfg, MoEModelConfig):
            modes.append("fp8")
        for mode in modes:
            rows.append(run(name, model_cfg, batch, seq, mode, steps, warmup, device, peak))
    ratios = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        by = {r["mode"]: r for r in rows if r["model"] == name}
        for new, old in (("bf16", "bf16_before"), ("fp8", "bf16")):
            if new in by and old in by:
                a, b = by[new], by[old]
                ratios[f"{name}: {new} / {old} tokens/s"] = a["tokens_per_s"] / b["tokens_per_s"]
                ratios[f"{name}: {new} vs {old} relative loss (tail mean)"] = (
                    abs(a["loss_tail_mean"] - b["loss_tail_mean"]) / b["loss_tail_mean"])
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    OUT.mkdir(exist_ok=True)
    path = OUT / f"pretrain_mfu_{'quick_' if args.quick else ''}{device_name()}.json"
    path.write_text(json.dumps({"device": device_name(), "torch": torch.__version__,
                                "bf16_matmul_flops": peak, "quick": args.quick, "rows": rows,
                                "ratios": ratios}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
