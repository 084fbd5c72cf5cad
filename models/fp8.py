"""FP8 (E4M3) mixed-precision training with DeepSeek-V3's fine-grained scaling, as emulation.

DeepSeek-V3 report sec. 3.3: the linear layers' GEMMs run in FP8 E4M3 with one scale per 1x128 tile
of activations (per token, per 128 channels) and per 128x128 block of weights; the backward GEMMs
quantize the incoming gradient the same way, and the weight-gradient GEMM scales activations and
gradients per 128x1 tile along the token dimension. Accumulation is promoted to FP32. Embeddings,
the output head, MoE gating, normalisation and attention (the softmax(QK^T)V part) stay in higher
precision.

Here every FP8 cast is a quantize-dequantize in float32 (`torch.float8_e4m3fn` round trip), so the
numerics of the scheme can be tested on CPU, where FP8 GEMMs do not run. `emulate` intercepts
`torch.nn.functional.linear` for the span of a forward pass (a TorchFunctionMode), which reaches
transformers' `nn.Linear` layers and its fused-expert `F.linear` calls alike without patching model
code; parameters in `exclude` (head, router) keep full precision. This module does not pick the
real FP8 kernels for GPUs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

E4M3_MAX = 448.0  # largest finite float8_e4m3fn
TILE = 128


def qdq(x: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    """Quantize a 2-D tensor to E4M3 with one scale per (tile[0] x tile[1]) block, and back.
    Scale = block amax / 448 (V3's online scaling); edge blocks are padded with zeros."""
    m, k = x.shape
    tm, tk = min(tile[0], m), min(tile[1], k)
    pm, pk = -m % tm, -k % tk
    xp = F.pad(x, (0, pk, 0, pm)) if pm or pk else x
    blocks = xp.reshape(xp.shape[0] // tm, tm, xp.shape[1] // tk, tk)  # (M/tm, tm, K/tk, tk)
    amax = blocks.abs().amax(dim=(1, 3), keepdim=True).float()
    scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    q = (blocks.float() / scale).to(torch.float8_e4m3fn).float() * scale
    q = q.reshape(xp.shape)[:m, :k]
    return q.to(x.dtype)


class _FP8Linear(torch.autograd.Function):
    """y = x W^T + b with every GEMM operand quantized as in V3 (Fig. 6-7)."""

    @staticmethod
    def forward(ctx, x, w, b):
        x2 = x.reshape(-1, x.shape[-1])  # (tokens, in)
        y = qdq(x2, (1, TILE)) @ qdq(w, (TILE, TILE)).t()  # Fprop: activations 1x128, weights 128x128
        if b is not None:
            y = y + b
        ctx.save_for_backward(x2, w)
        ctx.has_bias, ctx.x_shape = b is not None, x.shape
        return y.reshape(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, gy):
        x2, w = ctx.saved_tensors
        g2 = gy.reshape(-1, gy.shape[-1])  # (tokens, out)
        # Dgrad: gradient tiles 1x128 along the contracted output channels, weights 128x128.
        gx = qdq(g2, (1, TILE)) @ qdq(w, (TILE, TILE))
        # Wgrad: contraction over tokens, so both operands are scaled per 128x1 (token) tile.
        gw = qdq(g2, (TILE, 1)).t() @ qdq(x2, (TILE, 1))
        gb = g2.sum(0) if ctx.has_bias else None
        return gx.reshape(ctx.x_shape), gw, gb


class emulate(TorchFunctionMode):
    """`with emulate(exclude=[...]):` runs every F.linear inside in emulated FP8 (see module doc),
    except for weights in `exclude` (or views of them, like one expert's slice of a fused tensor)."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        super().__init__()
        self.exclude = {id(p) for p in exclude}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear or func is torch._C._nn.linear:
            x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            base = w._base if w._base is not None else w
            if id(w) not in self.exclude and id(base) not in self.exclude and w.dtype == torch.float32:
                return _FP8Linear.apply(x, w, b)
        return func(*args, **kwargs)


def high_precision_params(model: torch.nn.Module) -> list[torch.Tensor]:
    """What V3 keeps out of FP8: the output head and the MoE routers (embeddings and norms never go
    through F.linear; attention scores use matmul/SDPA, which the mode leaves alone)."""
    keep = [model.get_output_embeddings().weight]
    keep += [m.weight for m in model.modules() if type(m).__name__.endswith("TopkRouter")]
    return keep
