"""FP8 vs BF16 pretraining on one GPU: step time, loss curves, and the FP8 share of GEMM FLOPs.

    python bench/pretrain_fp8.py --world WORLD_DIR --tokenizer TOKENIZER_DIR [--steps 200]

WORLD_DIR holds the world stage's corpus.parquet and heldout.parquet, TOKENIZER_DIR the tokenizer
stage's files (both are artifacts of `make run`: `r1flow artifacts ls`). The script runs stage 1
(`models/train/pretrain.py`) twice in one process on the same model, seed and data order: precision bf16
(the baseline) and fp8 (torchao's blockwise FP8 GEMMs, DeepSeek-V3's 1x128/128x128 scaling). It
also times one GEMM of each model shape both ways, so the step-level ratio can be read against the
kernel-level one. Writes bench/results/pretrain_fp8_<gpu>.json and a loss-curve PNG beside it.
Needs an SM90+ GPU and torchao >= 0.18; never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from r1flow.models.arch.deepseek_v3.config import FLAVORS
from r1flow.models.train.pretrain import PretrainConfig, pretrain


def prune_autotuning() -> None:
    """torchao's blockwise kernels autotune over up to 45 configs for every new shape, compiling each:
    minutes per model on a fresh machine, longer than this benchmark's training runs. Keep one
    config per kernel (16 row groups, 4 warps, 2 stages; 128-wide GEMM tiles); the FP8 numbers are
    then a lower bound on a tuned run."""
    import triton
    from torchao.prototype.blockwise_fp8_training import kernels

    def rank(c):
        return (c.kwargs.get("NUM_GROUPS", 16) != 16, c.kwargs.get("BLOCK_SIZE_M", 128) != 128,
                c.num_warps != 4, c.num_stages != 2)

    for name in dir(kernels):
        k = getattr(kernels, name)
        if isinstance(k, triton.runtime.autotuner.Autotuner) and len(k.configs) > 1:
            k.configs = [min(k.configs, key=rank)]


def gemm_ratio(m: int, k: int, n: int, reps: int = 20) -> dict:
    """Forward+backward time of one (m x k) @ (k x n) linear in BF16 and in torchao blockwise FP8."""
    from torchao.prototype.blockwise_fp8_training.linear import fp8_blockwise_mm

    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    fns = {"bf16": lambda: torch.nn.functional.linear(x, w),
           "fp8": lambda: fp8_blockwise_mm.apply(x, w, 128, torch.bfloat16, False)}
    out = {}
    for name, fn in fns.items():
        for _ in range(3):
            fn().sum().backward()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            fn().sum().backward()
        torch.cuda.synchronize()
        out[f"{name}_ms"] = (time.perf_counter() - t) / reps * 1e3
    out["fp8_speedup"] = out["bf16_ms"] / out["fp8_ms"]
    return {"shape": [m, k, n], **out}


def agreement(m: int = 1000, k: int = 1024, n: int = 768) -> dict:
    """The GPU path against the CPU emulation on one linear: relative error of output and both
    gradients, each against float32 and against each other (same inputs, same upstream gradient)."""
    from r1flow.models.arch import fp8

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g) * 0.02
    gy = torch.randn(m, n, generator=g)

    def grads(fn, dev):
        xx, ww = x.detach().to(dev, copy=True).requires_grad_(), w.detach().to(dev, copy=True).requires_grad_()
        y = fn(xx, ww)
        y.backward(gy.to(dev).to(y.dtype))
        return [t.float().cpu() for t in (y.detach(), xx.grad, ww.grad)]

    ref = grads(lambda a, b: a @ b.t(), "cpu")
    emu = grads(lambda a, b: fp8._emulated_linear(a, b, None), "cpu")
    gpu = grads(lambda a, b: fp8._torchao_linear(a, b, None), "cuda")
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    return {name: {"torchao_vs_fp32": rel(gpu[i], ref[i]), "emulation_vs_fp32": rel(emu[i], ref[i]),
                   "torchao_vs_emulation": rel(gpu[i], emu[i])}
            for i, name in enumerate(["output", "grad_input", "grad_weight"])}


def run(precision: str, args, world: Path, tok: Path, root: Path) -> dict:
    cfg = PretrainConfig(model=FLAVORS[args.flavor], steps=args.steps, seq_len=args.seq_len,
                         batch_size=args.batch_size, lr=args.lr, warmup_steps=args.steps // 10,
                         log_every=args.log_every, checkpoint_every=args.steps, precision=precision, seed=0)
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    summary = pretrain(cfg, world / "corpus.parquet", world / "heldout.parquet", tok, root / precision,
                       root / f"{precision}-work")
    wall = time.perf_counter() - t
    hist = pq.read_table(root / precision / "r1flow" / "metrics.parquet").to_pandas()
    windows = hist["train/tokens_per_s"].dropna().to_numpy()[2:]  # first two windows include warm-up
    return {"summary": summary, "wall_s": wall, "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
            "tokens_per_s_windows": windows.tolist(), "loss": hist["train/loss"].tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", required=True, type=Path)
    ap.add_argument("--tokenizer", required=True, type=Path)
    ap.add_argument("--flavor", default="v3_300m", choices=sorted(FLAVORS))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/pretrain_fp8.py needs a CUDA GPU (SM90+)")

    d = FLAVORS[args.flavor]
    prune_autotuning()
    args.out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name()
    stem = f"pretrain_fp8_{re.sub(r'[^a-z0-9]+', '_', gpu.lower()).strip('_')}"
    # Training first, kernels last, each phase saved as it ends: a run cut short keeps what it measured.
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for p in ("bf16", "fp8"):
            runs[p] = run(p, args, args.world, args.tokenizer, Path(tmp))
            (args.out / f"{stem}.partial.json").write_text(json.dumps(runs, default=float))
    agree = agreement()
    worst = max(v["torchao_vs_emulation"] for v in agree.values())
    if worst > 0.1:
        raise SystemExit(f"torchao's FP8 GEMM disagrees with the emulated scheme (relative error {worst:.2f}): "
                         f"torchao {__import__('torchao').__version__} is not usable for training here")
    shapes = [(args.batch_size * args.seq_len, d.hidden_size, 2 * d.moe_intermediate_size),  # whole-batch view
              (args.batch_size * args.seq_len * d.num_experts_per_tok // d.n_routed_experts, d.hidden_size,
               2 * d.moe_intermediate_size),  # one expert's gate_up at balanced load
              (8192, 8192, 8192)]
    gemms = [gemm_ratio(*s) for s in shapes]
    print(json.dumps({"gemm_fwd_bwd": gemms, "torchao_vs_emulation": agree}, indent=1), flush=True)

    b, f = runs["bf16"], runs["fp8"]
    tb, tf = np.array(b["tokens_per_s_windows"]), np.array(f["tokens_per_s_windows"])
    tail = max(1, args.steps // 5)
    lb, lf = np.mean(b["loss"][-tail:]), np.mean(f["loss"][-tail:])
    hb, hf = b["summary"]["heldout_loss"], f["summary"]["heldout_loss"]
    result = {
        "benchmark": "pretrain_fp8", "device": gpu, "torch": torch.__version__,
        "torchao": __import__("torchao").__version__, "python": platform.python_version(),
        "flavor": args.flavor, "params": d.param_counts(1024) | {"note": "vocab 1024 (tiny tokenizer)"},
        "steps": args.steps, "tokens_per_step": args.batch_size * args.seq_len,
        "fp8_gemm_flop_share": f["summary"].get("fp8_gemm_flop_share"),
        "autotuning": "one config per torchao kernel (prune_autotuning)",
        "tokens_per_s": {"bf16_mean": tb.mean(), "bf16_std": tb.std(), "fp8_mean": tf.mean(), "fp8_std": tf.std()},
        "fp8_over_bf16_speed": tf.mean() / tb.mean(),
        "fp8_over_bf16_speed_spread": tf.mean() / tb.mean() * float(np.hypot(tb.std() / tb.mean(), tf.std() / tf.mean())),
        "mfu": {"bf16": b["summary"]["mfu"], "fp8": f["summary"]["mfu"],
                "denominator_tflops": b["summary"]["matmul_peak_gflops"] / 1e3},
        "loss": {"bf16_last_fifth": lb, "fp8_last_fifth": lf, "train_rel_error": abs(lf - lb) / lb,
                 "bf16_heldout": hb, "fp8_heldout": hf, "heldout_rel_error": abs(hf - hb) / hb},
        "peak_memory_gib": {"bf16": b["peak_memory_gib"], "fp8": f["peak_memory_gib"]},
        "wall_s": {"bf16": b["wall_s"], "fp8": f["wall_s"]},
        "gemm_fwd_bwd": gemms, "torchao_vs_emulation": agree,
        "curves": {"bf16": b["loss"], "fp8": f["loss"]},
    }
    (args.out / f"{stem}.partial.json").unlink()
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1, default=float))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for p, r in runs.items():
        ax.plot(np.arange(1, len(r["loss"]) + 1), r["loss"], label=p, lw=1)
    ax.set(xlabel="step", ylabel="train loss (nats/token)", yscale="log",
           title=f"{args.flavor} on {gpu}: FP8 vs BF16")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / f"{stem}.png", dpi=120)
    print(json.dumps({k: v for k, v in result.items() if k != "curves"}, indent=1, default=float))


if __name__ == "__main__":
    main()
