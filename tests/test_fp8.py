"""FP8 (E4M3, DeepSeek-V3 fine-grained scaling) emulation against float32.

    .venv/bin/python -m pytest -q tests/test_fp8.py
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from r1flow.models.arch import fp8
from r1flow.models.train.pretrain import PretrainConfig, build_model, pretrain

DEBUG_MODEL = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, q_lora_rank=64,
                   intermediate_size=256, moe_intermediate_size=128, n_routed_experts=4, n_group=2, topk_group=1,
                   num_experts_per_tok=2, max_position_embeddings=256)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_qdq_error_is_e4m3_rounding_within_each_tile():
    torch.manual_seed(0)
    x = torch.randn(256, 384) * torch.logspace(-3, 3, 384)  # channels of very different magnitude
    for tile in [(1, 128), (128, 128), (128, 1)]:
        q = fp8.qdq(x, tile)
        blocks = x.reshape(256 // tile[0], tile[0], 384 // tile[1], tile[1])
        scale = (blocks.abs().amax(dim=(1, 3), keepdim=True) / fp8.E4M3_MAX).expand_as(blocks).reshape(256, 384)
        # E4M3 keeps 3 mantissa bits: a normal value rounds within 2^-4 of itself; values below the
        # smallest normal (2^-6 in scaled units) round to a multiple of 2^-9 (the subnormal step).
        err = (q - x).abs()
        assert torch.all(err <= torch.maximum(x.abs() * 2**-4, scale * 2**-10) * (1 + 1e-6))
    # Per-tile scaling is what keeps small channels: one per-tensor scale flushes them to zero.
    small = x[:, :64]  # magnitudes 1e-3 to 1e-2
    assert _rel(fp8.qdq(x, (1, 128))[:, :64], small) < 0.05
    per_tensor = (x / (x.abs().max() / fp8.E4M3_MAX)).to(torch.float8_e4m3fn).float() * (x.abs().max() / fp8.E4M3_MAX)
    assert _rel(per_tensor[:, :64], small) > 0.5


def _cfg(**kw) -> PretrainConfig:
    base = dict(model=DEBUG_MODEL, steps=120, seq_len=128, batch_size=8, warmup_steps=10, lr=3e-3, log_every=10,
                checkpoint_every=1000, mtp_depth=1)
    return PretrainConfig(**(base | kw))


def test_emulated_forward_backward_close_to_float32(pretrain_data):
    """Every linear of the decoder goes through FP8 (outputs change), routed experts included, the
    head and routers do not, and logits and gradients stay within a few percent of float32."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(pretrain_data[2]))
    model = build_model(_cfg(), tok, torch.device("cpu"))
    ids = torch.randint(5, len(tok), (4, 96))
    keep = fp8.high_precision_params(model)
    assert len(keep) == 1 + sum(1 for m in model.modules() if type(m).__name__.endswith("TopkRouter"))
    # transformers' default grouped-GEMM experts would bypass the mode: it refuses them.
    with pytest.raises(RuntimeError, match="grouped GEMM"), fp8.FP8Linears(keep):
        model(ids)
    fp8.use_per_expert_linears(model)

    def run(ctx):
        model.zero_grad()
        with ctx:
            out = model(ids, labels=ids)
        out.loss.backward()
        return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref_logits, ref_grads = run(torch.enable_grad())
    mode = fp8.FP8Linears(keep)
    logits, grads = run(mode)
    # Exactly the head and the routers ran in high precision: 2 x tokens x d x (vocab + experts per MoE layer).
    n_moe = DEBUG_MODEL["num_hidden_layers"] - 1
    d, tokens = DEBUG_MODEL["hidden_size"], ids.numel()
    assert mode.flops["high_precision"] == 2 * tokens * d * (len(tok) + n_moe * DEBUG_MODEL["n_routed_experts"])
    assert mode.flops["fp8"] > 0
    rels = {n: _rel(grads[n], ref_grads[n]) for n in ref_grads if ref_grads[n].norm() > 0}
    print(f"logits error {_rel(logits, ref_logits):.3f}; largest gradient errors",
          sorted(rels.items(), key=lambda kv: -kv[1])[:3])
    assert 1e-3 < _rel(logits, ref_logits) < 0.1  # ~3.5% per quantized GEMM, chained
    assert rels["model.layers.1.mlp.experts.gate_up_proj"] > 1e-3  # the routed experts are quantized too
    assert np.median(list(rels.values())) < 0.15 and max(rels.values()) < 0.3, sorted(rels.items(), key=lambda kv: -kv[1])[:5]
    # Excluding every weight turns the mode into a no-op: the same numbers bit for bit.
    same, _ = run(fp8.FP8Linears([p for p in model.parameters()]))
    assert torch.equal(same, ref_logits)


def test_fp8_pretraining_tracks_the_float32_loss_curve(pretrain_data, tmp_path):
    """A short pretraining run in FP8 emulation against the same run in float32 (same seed, data
    order). The V3 report keeps the relative loss error below 0.25% at scale (a 16B and a 230B model
    over ~1T tokens). On this 2-layer, 120-step toy, where one 128-wide tile spans the whole hidden
    size, the measured error is larger and depends on the CPU's float path: 0.9% on the mean loss of
    the last 40 steps and 2.1% on the held-out loss on the machine this was written on, 2.6% and 2.4%
    on an AMD EPYC without AVX-512 (routed experts in FP8 too). The stated tolerance is 3% and 4%."""
    runs = {}
    for prec in ("fp32", "fp8"):
        summary = pretrain(_cfg(precision=prec), *pretrain_data,
                           tmp_path / prec, tmp_path / f"{prec}-work")
        hist = pq.read_table(tmp_path / prec / "r1flow" / "metrics.parquet").to_pandas()
        runs[prec] = (hist["train/loss"].to_numpy(), summary["heldout_loss"])
    tail32, tail8 = runs["fp32"][0][-40:].mean(), runs["fp8"][0][-40:].mean()
    rel_train = abs(tail8 - tail32) / tail32
    rel_held = abs(runs["fp8"][1] - runs["fp32"][1]) / runs["fp32"][1]
    print(f"relative loss error: train (last 40 steps) {rel_train:.2%}, held-out {rel_held:.2%}")
    assert not np.allclose(runs["fp32"][0], runs["fp8"][0])  # the emulation did something
    assert rel_train < 0.03 and rel_held < 0.04, (rel_train, rel_held, tail32, tail8)
