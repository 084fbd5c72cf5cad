"""Stage 1: pretrain a DeepSeek-V3-style MoE base model on the packed corpus (and, with a dense
`model`, the Llama/Qwen2-style distillation students of stage 9 on the same corpus).

    python -m r1flow.models.train.pretrain --spec SPEC.json          # one process
    torchrun --nproc_per_node 2 -m r1flow.models.train.pretrain --spec SPEC.json   # DDP (gloo on CPU)

AdamW with linear warmup and cosine decay, gradient clipping, sequence packing, float32 on CPU and
bf16 autocast on GPU (routed experts included: precision.py), auxiliary-loss-free balancing (bias
update after every step), the optional sequence-wise balance loss and Multi-Token Prediction, and
checkpoints in the work directory that a restarted run resumes from. Writes a Hugging Face checkpoint (safetensors + tokenizer) plus
`r1flow/metrics.parquet` and `r1flow/expert_load.png`. Knows nothing about Prefect or the store.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import ConfigDict, Discriminator, Field, Tag, model_validator
from safetensors.torch import load_file, save_file
from torch import nn

from r1flow.models.arch import fp8
from r1flow.models.arch.deepseek_v3.balancing import (RouterProbe, load_imbalance, sequence_balance_loss,
                                                 update_bias)
from r1flow.models.arch.deepseek_v3.config import MoEModelConfig
from r1flow.models.arch.deepseek_v3.mtp import MultiTokenPrediction
from r1flow.models.arch.dense import DenseModelConfig, pin_tokenizer
from r1flow.models.train import precision, tracking
from r1flow.models.train.launch import Processes, worker_main


def _model_kind(value) -> str:
    """`arch` (llama|qwen2) marks a dense student; a model without it is the DeepSeek-V3-style MoE."""
    if isinstance(value, dict):
        return "dense" if "arch" in value else "moe"
    return "dense" if isinstance(value, DenseModelConfig) else "moe"


# A discriminated union: pydantic validates a `model` against the one member its `arch` names, so an
# error names that member's field (its location carries the tag, "moe" or "dense", after "model").
ModelConfig = Annotated[Annotated[MoEModelConfig, Tag("moe")] | Annotated[DenseModelConfig, Tag("dense")],
                        Discriminator(_model_kind)]
MODEL_TAGS = ("moe", "dense")


class PretrainConfig(Processes):
    """Stage 1 (`pretrain`): model shape and optimisation; `nproc`/`parallel` train it on several processes
    (models/train/launch.py), which this module's own loop runs (DDP or FSDP2)."""

    model_config = ConfigDict(extra="forbid")

    model: ModelConfig = Field(
        default_factory=MoEModelConfig,
        description="Model shape: DeepSeek-V3-style MoE fields, or a dense student (`arch: llama|qwen2`, "
                    "models/arch/dense.py), which skips the MoE balancing.")
    import_from: str | None = Field(
        None, description="Skip training and import this Hugging Face causal LM (hub id or local path) "
                          "as the base model: enter the DAG with your own base. `model` then only sizes "
                          "`r1flow plan`: give the imported model's shape there.")
    steps: int = Field(600, ge=1, description="Optimizer steps.")
    seq_len: int = Field(256, ge=16, description="Packed sequence length (tokens per row).")
    batch_size: int = Field(16, ge=1, description="Rows per step per process.")
    lr: float = Field(3e-3, gt=0, lt=1, description="Peak learning rate.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final lr as a share of the peak (cosine).")
    warmup_steps: int = Field(30, ge=0, description="Linear warmup steps.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (DeepSeek-V3: 0.1).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas (DeepSeek-V3: 0.9, 0.95).")
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clip (DeepSeek-V3: 1.0).")
    bias_update_gamma: float = Field(
        0.001, ge=0, description="Aux-loss-free balancing bias step (DeepSeek-V3: 0.001); 0 turns it off.")
    balance_loss_alpha: float = Field(0.0, ge=0, description="Sequence-wise balance loss weight (V3: 0.0001).")
    mtp_depth: int = Field(1, ge=0, le=4, description="Multi-Token Prediction depth (V3: 1); 0 turns it off.")
    mtp_lambda: float = Field(0.3, ge=0, description="MTP loss weight (V3: 0.3 for the first 10T tokens).")
    seed: int = Field(0, description="Seed for initialisation and data order.")
    checkpoint_every: int = Field(100, ge=1, description="Save a resumable checkpoint every N steps.")
    log_every: int = Field(10, ge=1, description="Print one metrics line every N steps.")
    precision: str = Field(
        "auto", pattern="^(auto|fp32|bf16|fp8)$",
        description="auto: bf16 on GPU, fp32 on CPU. fp8: DeepSeek-V3's E4M3 GEMMs with 1x128/128x128 "
                    "scaling (models/arch/fp8.py): torchao's blockwise FP8 GEMMs on SM90+ GPUs, "
                    "quantize-dequantize emulation on CPU.")
    heldout_max_rows: int = Field(64, ge=1, description="Packed held-out rows for the held-out loss.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute each decoder layer's activations in the backward pass instead of keeping "
                           "them (transformers' gradient checkpointing, non-reentrant): activation memory of "
                           "about one layer instead of all, for about one more forward pass of compute.")

    @model_validator(mode="after")
    def _check_parallel(self) -> "PretrainConfig":
        # models/arch/fp8.py keeps the head and routers in high precision by parameter identity; under FSDP2
        # the forward sees unsharded copies, so they would run in FP8 too (measured: FP8 share 1.0 vs 0.91).
        if self.parallel == "fsdp" and self.precision == "fp8":
            raise ValueError("parallel=fsdp with precision=fp8 is not supported yet (the FP8 exclusions of "
                             "models/arch/fp8.py do not see FSDP's unsharded weights); use parallel=ddp for fp8")
        # FP8 GEMMs come from a TorchFunctionMode around the forward pass; a recomputation in the backward
        # pass would run outside it, in higher precision, and its saved tensors would not match.
        if self.gradient_checkpointing and self.precision == "fp8":
            raise ValueError("gradient_checkpointing with precision=fp8 is not supported (the backward pass would "
                             "recompute the layers without the FP8 GEMMs); use bf16 or turn one off")
        return self

    @model_validator(mode="after")
    def _check(self) -> "PretrainConfig":
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be below steps={self.steps}")
        if isinstance(self.model, DenseModelConfig) and self.precision == "fp8":
            raise ValueError("precision=fp8 needs the MoE model (its per-expert FP8 linears); use auto or bf16 "
                             "for a dense model")
        if isinstance(self.model, DenseModelConfig) and self.mtp_depth:
            raise ValueError(f"mtp_depth={self.mtp_depth}: Multi-Token Prediction is built from DeepSeek-V3 "
                             "blocks; set mtp_depth: 0 for a dense model")
        if self.seq_len > self.model.max_position_embeddings:
            raise ValueError(f"seq_len={self.seq_len} exceeds model.max_position_embeddings="
                             f"{self.model.max_position_embeddings}")
        return self


# ---- data ---------------------------------------------------------------------------------------
def pack(texts: list[str], tokenizer, seq_len: int, seed: int) -> torch.Tensor:
    """Tokenize documents, shuffle them, join with EOS and cut into rows of seq_len + 1 tokens
    (inputs and shifted targets). Returns (rows, seq_len + 1) int64."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    order = np.random.default_rng(seed).permutation(len(ids))
    eos = tokenizer.eos_token_id
    stream = np.fromiter((t for i in order for t in (*ids[i], eos)), dtype=np.int64)
    n = len(stream) // (seq_len + 1)
    if n == 0:
        raise ValueError(f"corpus has {len(stream)} tokens, fewer than one row of {seq_len + 1}")
    return torch.from_numpy(stream[: n * (seq_len + 1)].reshape(n, seq_len + 1))


def unigram_loss(train: torch.Tensor, heldout: torch.Tensor, vocab: int) -> float:
    """Cross-entropy (nats) of an add-one-smoothed unigram model fit on train, scored on heldout."""
    counts = torch.bincount(train.flatten(), minlength=vocab).double() + 1
    logp = (counts / counts.sum()).log()
    return float(-logp[heldout[:, 1:].flatten()].mean())


def lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, n: int | None = None, reps: int = 8) -> float:
    """Measured dense matmul FLOP/s on this device: MFU's denominator (no spec-sheet guess on CPU).
    n defaults to 4096 on GPU (1024 leaves an H100 far below its peak) and 1024 on CPU."""
    n = n or (4096 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t)


# ---- model --------------------------------------------------------------------------------------
class Trainable(nn.Module):
    """The causal LM plus its MTP modules, so one DDP wrapper all-reduces both."""

    def __init__(self, lm: nn.Module, mtp: MultiTokenPrediction | None):
        super().__init__()
        self.lm, self.mtp = lm, mtp

    def forward(self, rows: torch.Tensor, mtp_lambda: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs, targets = rows[:, :-1], rows[:, 1:]
        out = self.lm.model(input_ids=inputs)
        hidden = out.last_hidden_state  # (B, T, d), after the final norm
        logits = self.lm.lm_head(hidden)
        lm_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        mtp_loss = torch.zeros((), device=rows.device)
        if self.mtp is not None:
            mtp_loss = self.mtp.loss(self.lm, hidden, inputs)
        return lm_loss + mtp_lambda * mtp_loss, lm_loss.detach(), mtp_loss.detach()


def build_model(cfg: PretrainConfig, tokenizer, device: torch.device) -> nn.Module:
    from transformers import AutoModelForCausalLM

    hf_cfg = cfg.model.to_hf(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="sdpa", dtype=torch.float32)
    return model.to(device)


@torch.no_grad()
def heldout_loss(model: nn.Module, rows: torch.Tensor, batch: int) -> float:
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(rows), batch):
        r = rows[i:i + batch].to(next(model.parameters()).device)
        logits = model(input_ids=r[:, :-1]).logits
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), r[:, 1:].reshape(-1),
                                 reduction="sum").item()
        n += r[:, 1:].numel()
    model.train()
    return total / n


# ---- checkpoints --------------------------------------------------------------------------------
def _full_state(trainable: Trainable, opt: torch.optim.Optimizer | None, fsdp: bool) -> tuple[dict, dict | None]:
    """Unsharded model (and optimizer) state. Under FSDP this is a collective: every rank calls it."""
    if not fsdp:
        return trainable.state_dict(), opt.state_dict() if opt is not None else None
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    o = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (get_model_state_dict(trainable, options=o),
            get_optimizer_state_dict(trainable, opt, options=o) if opt is not None else None)


def _part(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v.contiguous() for k, v in state.items() if k.startswith(prefix)}


def _save_ckpt(work: Path, step: int, trainable: Trainable, opt: torch.optim.Optimizer, history: list,
               rank: int = 0, fsdp: bool = False) -> None:
    model_state, opt_state = _full_state(trainable, opt, fsdp)
    if rank != 0:
        return
    tmp = work / f"ckpt.tmp{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(_part(model_state, "lm."), str(tmp / "model.safetensors"))
    if trainable.mtp is not None:
        save_file(_part(model_state, "mtp."), str(tmp / "mtp.safetensors"))
    torch.save(opt_state, tmp / "optim.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "history": history}))
    final = work / "ckpt"
    old = work / f"ckpt.old{os.getpid()}"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        import shutil
        shutil.rmtree(old)


def _load_ckpt(work: Path, trainable: Trainable, opt: torch.optim.Optimizer, fsdp: bool = False) -> tuple[int, list]:
    ck = work / "ckpt"
    if not (ck / "state.json").exists():
        return 0, []
    state = {f"lm.{k}": v for k, v in load_file(str(ck / "model.safetensors")).items()}
    if trainable.mtp is not None and (ck / "mtp.safetensors").exists():
        state |= {f"mtp.{k}": v for k, v in load_file(str(ck / "mtp.safetensors")).items()}
    # Optimizer state is tensors and numbers only: weights_only refuses anything else (no pickle).
    opt_state = torch.load(ck / "optim.pt", weights_only=True)
    if fsdp:  # every rank reads the full state and keeps its shards
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        o = StateDictOptions(full_state_dict=True)
        set_model_state_dict(trainable, state, options=o)
        set_optimizer_state_dict(trainable, opt, opt_state, options=o)
    else:
        trainable.load_state_dict(state, strict=trainable.mtp is None or (ck / "mtp.safetensors").exists())
        opt.load_state_dict(opt_state)
    state = json.loads((ck / "state.json").read_text())
    return state["step"], state["history"]


# ---- training -----------------------------------------------------------------------------------
def _dist_setup() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return rank, world, device


def pretrain(cfg: PretrainConfig, corpus: Path, heldout: Path, tokenizer_dir: Path, out_dir: Path, work: Path,
             on_log: Callable[[dict], None] | None = None) -> dict:
    """Train and export. Returns the stage summary (rank 0; other ranks return {})."""
    from transformers import AutoTokenizer

    rank, world, device = _dist_setup()
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    rows = pack(pq.read_table(corpus, columns=["text"]).column("text").to_pylist(), tok, cfg.seq_len, cfg.seed)
    held = pack(pq.read_table(heldout, columns=["text"]).column("text").to_pylist(), tok, cfg.seq_len,
                cfg.seed)[: cfg.heldout_max_rows]
    model = build_model(cfg, tok, device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    mtp = MultiTokenPrediction(model, cfg.mtp_depth).to(device) if cfg.mtp_depth else None
    trainable = Trainable(model, mtp)
    fsdp = world > 1 and cfg.parallel == "fsdp"
    if fsdp:  # shard before the optimizer sees the parameters
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(trainable)
    decay = [p for n, p in trainable.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in trainable.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas,
                            fused=device.type == "cuda")
    start, history = _load_ckpt(work, trainable, opt, fsdp)
    if start and rank == 0:
        print(f"[pretrain] resuming from step {start} ({work / 'ckpt'})", flush=True)
    ddp = nn.parallel.DistributedDataParallel(trainable) if world > 1 and not fsdp else trainable
    moe = isinstance(cfg.model, MoEModelConfig)
    probe = RouterProbe(model, keep_logits=cfg.balance_loss_alpha > 0) if moe else None
    on_gpu = device.type == "cuda"
    # fp8 on GPU: FP8 GEMMs for the linears, bf16 autocast for everything V3 keeps in higher precision.
    use_bf16 = cfg.precision == "bf16" or (cfg.precision in ("auto", "fp8") and on_gpu)
    fp8_mode = None
    if cfg.precision == "fp8":
        if on_gpu:
            fp8.check_gpu_support(device)
        fp8.use_per_expert_linears(model)
        fp8_mode = fp8.FP8Linears(fp8.high_precision_params(model), backend="torchao" if on_gpu else "emulate")
    elif use_bf16:  # routed experts' grouped GEMMs in bf16 too, fp32 masters kept (models/train/precision.py)
        precision.autocast_experts(model)
    peak = matmul_peak_flops(device, torch.bfloat16 if use_bf16 else torch.float32)
    fpt = cfg.model.train_flops_per_token(len(tok), cfg.seq_len)
    vocab = len(tok)
    gen = torch.Generator().manual_seed(cfg.seed)
    epoch_len = len(rows) // (cfg.batch_size * world)
    if epoch_len == 0:
        raise ValueError(f"corpus packs into {len(rows)} rows, fewer than one batch of "
                         f"{cfg.batch_size} x {world} processes")
    perms: dict[int, torch.Tensor] = {}

    def batch_for(step: int) -> torch.Tensor:
        epoch, i = divmod(step, epoch_len)
        if epoch not in perms:
            perms.clear()
            perms[epoch] = torch.randperm(len(rows), generator=gen.manual_seed(cfg.seed + epoch))
        idx = perms[epoch][(i * world + rank) * cfg.batch_size:(i * world + rank + 1) * cfg.batch_size]
        return rows[idx].to(device)

    trainable.train()
    t_last, tokens_since = time.perf_counter(), 0
    for step in range(start, cfg.steps):
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = batch_for(step)
        if probe is not None:
            probe.start_forward()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16), \
                (fp8_mode if fp8_mode is not None else contextlib.nullcontext()):
            loss, lm_loss, mtp_loss = ddp(batch, cfg.mtp_lambda)
            bal = torch.zeros((), device=device)
            if probe is not None and cfg.balance_loss_alpha > 0:
                bal = sequence_balance_loss(probe, batch.shape[0], batch.shape[1] - 1)
                loss = loss + cfg.balance_loss_alpha * bal
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(trainable.parameters(), cfg.grad_clip)
        opt.step()
        # Read back after the step, not between forward and backward, where the GPU would sit idle while
        # the host waits; a non-finite loss still stops the run before any checkpoint holds its update.
        if not math.isfinite(loss_value := loss.item()):
            raise FloatingPointError(f"pretrain: loss is {loss_value} at step {step} (lr {lr:.2e}); "
                                     "lower pretrain.lr or raise warmup_steps")
        tokens_since += batch[:, 1:].numel() * world
        rec = {"step": step + 1, "train/loss": lm_loss.item(), "train/mtp_loss": mtp_loss.item(),
               "train/balance_loss": bal.item(), "train/lr": lr, "train/grad_norm": float(gnorm)}
        load_txt = ""
        if probe is not None:
            counts = probe.take_counts()
            if cfg.bias_update_gamma > 0:
                update_bias(probe, counts, cfg.bias_update_gamma)
            imb = load_imbalance(counts)
            rec |= {"moe/max_over_mean_load": float(imb.mean()),
                    "moe/bias_abs_mean": float(torch.stack([r.e_score_correction_bias.abs().mean()
                                                            for _, r in probe.routers]).mean()),
                    **{f"moe/layer{i}_max_over_mean": float(v) for i, v in enumerate(imb)},
                    "load": counts.tolist()}
            load_txt = f" load max/mean {float(imb.mean()):.2f}"
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            dt_s = time.perf_counter() - t_last
            tps = tokens_since / dt_s
            rec |= {"train/tokens_per_s": tps, "train/mfu": tps * fpt / (peak * world)}
            t_last, tokens_since = time.perf_counter(), 0
            if rank == 0:
                print(f"[pretrain] step {step + 1}/{cfg.steps} loss {lm_loss.item():.4f} mtp {mtp_loss.item():.4f} "
                      f"lr {lr:.2e} gnorm {float(gnorm):.2f} tok/s {tps:,.0f} mfu {rec['train/mfu']:.1%}{load_txt}",
                      flush=True)
                if on_log:
                    on_log(rec)
        history.append(rec)
        if rank == 0:
            tracking.log(rec, step + 1)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            _save_ckpt(work, step + 1, trainable, opt, history, rank, fsdp)
        if world > 1:
            dist.barrier()
    if probe is not None:
        probe.remove()
    if fsdp:  # gather the full weights (collective), then export an unsharded copy on rank 0
        full, _ = _full_state(trainable, None, True)
        if rank == 0:
            model = build_model(cfg, tok, torch.device("cpu"))
            model.load_state_dict(_part(full, "lm."))
    if rank != 0:
        return {}
    h_loss = heldout_loss(model, held, cfg.batch_size)
    uni = unigram_loss(rows, held, vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tok.save_pretrained(str(out_dir))
    if isinstance(cfg.model, DenseModelConfig):
        pin_tokenizer(out_dir)  # transformers 5 would load a qwen2 student with an extra token
    extra = out_dir / "r1flow"
    extra.mkdir(exist_ok=True)
    _write_metrics(history, extra / "metrics.parquet")
    if probe is not None:
        from r1flow.models.eval.plots import plot_expert_load

        plot_expert_load(history, extra / "expert_load.png")
    last = [r for r in history if "train/tokens_per_s" in r]
    params = cfg.model.param_counts(vocab)
    return {"params_total": params["total"], "params_active": params["active"], "steps": cfg.steps,
            "tokens": cfg.steps * cfg.batch_size * cfg.seq_len * world, "final_train_loss": history[-1]["train/loss"],
            "heldout_loss": h_loss, "unigram_heldout_loss": uni, "heldout_vs_unigram": h_loss / uni,
            "tokens_per_s": float(np.mean([r["train/tokens_per_s"] for r in last[-5:]])) if last else None,
            "mfu": float(np.mean([r["train/mfu"] for r in last[-5:]])) if last else None,
            "matmul_peak_gflops": peak / 1e9,
            **({"final_max_over_mean_load": float(np.mean([r["moe/max_over_mean_load"] for r in history[-20:]]))}
               if probe is not None else {}),
            "world_size": world, "model_type": model.config.model_type,
            **({"fp8_gemm_flop_share": fp8_mode.flop_share()} if fp8_mode is not None else {})}


def _write_metrics(history: list[dict], path: Path) -> None:
    keys = sorted({k for r in history for k in r if k != "load"})
    cols = {k: [r.get(k) for r in history] for k in keys}
    pq.write_table(pa.table(cols), path)


def _worker(spec: dict) -> dict:
    return pretrain(PretrainConfig.model_validate(spec["config"]), Path(spec["corpus"]), Path(spec["heldout"]),
                    Path(spec["tokenizer"]), Path(spec["out"]), Path(spec["work"]))


if __name__ == "__main__":
    worker_main(_worker, "Pretrain a DeepSeek-V3-style MoE on several processes (torchrun; tasks/pretrain.py "
                         "launches it)")
