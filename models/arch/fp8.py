"""FP8 (E4M3) mixed-precision training with DeepSeek-V3's fine-grained scaling: real GEMMs on GPU
through torchao, quantize-dequantize emulation on CPU.

DeepSeek-V3 report sec. 3.3: the linear layers' GEMMs run in FP8 E4M3 with one scale per 1x128 tile
of activations (per token, per 128 channels) and per 128x128 block of weights; the backward GEMMs
quantize the incoming gradient the same way, and the weight-gradient GEMM scales activations and
gradients per 128x1 tile along the token dimension. Accumulation is promoted to FP32. Embeddings,
the output head, MoE gating, normalisation and attention (the softmax(QK^T)V part) stay in higher
precision.

`FP8Linears` is a TorchFunctionMode that intercepts `torch.nn.functional.linear` for the span of a
forward pass, which reaches transformers' `nn.Linear` layers and its per-expert `F.linear` calls
alike without patching model code; parameters in `exclude` (head, routers) keep full precision.
transformers runs routed experts through `torch._grouped_mm` by default, which this mode does not
quantize, so the model must use `experts_implementation="eager"` (`use_per_expert_linears`); a
grouped GEMM inside the mode raises rather than silently training the experts in high precision.

Backends:
- `emulate` (CPU, tests): every FP8 cast is a quantize-dequantize in float32 (`float8_e4m3fn` round
  trip), so the scheme's numerics can be tested where FP8 GEMMs do not run.
- `torchao` (CUDA, SM90+): torchao's blockwise FP8 training GEMM (`fp8_blockwise_mm`, torchao >= 0.18;
  0.17 passed cuBLASLt a wrong scale layout and its input gradient came out wrong, pytorch/ao#4229),
  chosen because it is the one maintained implementation of exactly V3's scaling: 1x128 activation
  and gradient tiles, 128x128 weight blocks, 128x1 tiles for the weight gradient, FP8 GEMMs through
  `torch._scaled_mm` with FP32 accumulation. torchao's `Float8Linear` recipes (tensorwise,
  rowwise) scale per tensor or per row and are further from V3. Operands are cast to BF16 first
  (FP32 master weights stay in the optimizer); GEMMs whose width or height is not a multiple of 128
  run in BF16 and are counted as such (`flop_share`).
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


def _torchao_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor | None:
    """torchao's V3-blockwise FP8 GEMM; None when the shape has no 128-multiple layout."""
    k, n = x.shape[-1], w.shape[0]
    x2 = x.reshape(-1, k)
    m = x2.shape[0]
    if k % TILE or n % TILE or m == 0:
        return None
    from torchao.prototype.blockwise_fp8_training.linear import fp8_blockwise_mm

    # The weight-gradient GEMM contracts over tokens in 128-token tiles: pad the token count (zero
    # rows add nothing to it) and cut the padding off the output.
    pad = -m % TILE
    x2 = F.pad(x2.to(torch.bfloat16), (0, 0, 0, pad)) if pad else x2.to(torch.bfloat16)
    y = fp8_blockwise_mm.apply(x2, w.to(torch.bfloat16), TILE, torch.bfloat16, False)[:m]
    if b is not None:
        y = y + b.to(y.dtype)
    return y.reshape(*x.shape[:-1], n)


def _emulated_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor | None:
    return _FP8Linear.apply(x, w, b) if w.dtype == torch.float32 else None


BACKENDS = {"emulate": _emulated_linear, "torchao": _torchao_linear}
_GROUPED = {getattr(torch, "_grouped_mm", None), getattr(F, "grouped_mm", None)} - {None}


class FP8Linears(TorchFunctionMode):
    """`with FP8Linears(exclude=[...], backend=...):` runs every F.linear inside in FP8 (see module
    doc), except for weights in `exclude` (or views of them, like one expert's slice of a fused
    tensor). `flops` counts the GEMM FLOPs (forward) that ran in FP8 and in high precision."""

    def __init__(self, exclude: Iterable[torch.Tensor] = (), backend: str = "emulate"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"fp8 backend {backend!r}: expected one of {sorted(BACKENDS)}")
        self.exclude = {id(p) for p in exclude}
        self.linear = BACKENDS[backend]
        self.flops = {"fp8": 0, "high_precision": 0}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _GROUPED:
            raise RuntimeError("fp8: routed experts reached a grouped GEMM, which FP8Linears does not quantize; "
                               "build the model with use_per_expert_linears(model) first")
        if func is F.linear or func is torch._C._nn.linear:
            x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            base = w._base if w._base is not None else w
            gemm = 2 * x.numel() // x.shape[-1] * w.shape[0] * w.shape[1]
            if id(w) not in self.exclude and id(base) not in self.exclude:
                y = self.linear(x, w, b)
                if y is not None:
                    self.flops["fp8"] += gemm
                    return y
            self.flops["high_precision"] += gemm
        return func(*args, **kwargs)

    def flop_share(self) -> float:
        """Share of the intercepted GEMM FLOPs that ran in FP8 (0 when none ran yet)."""
        total = sum(self.flops.values())
        return self.flops["fp8"] / total if total else 0.0


def use_per_expert_linears(model: torch.nn.Module) -> None:
    """Switch transformers' routed experts from `torch._grouped_mm` to the per-expert `F.linear`
    loop ("eager"), the calls FP8Linears quantizes (same weights, same maths)."""
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")
    else:  # transformers releases before the setter read the config field directly
        model.config._experts_implementation = "eager"


def check_gpu_support(device: torch.device) -> None:
    """Raise a clear error where the torchao backend cannot run: no torchao, or a pre-Hopper GPU."""
    cap = torch.cuda.get_device_capability(device)
    if cap < (9, 0):
        raise ValueError(f"precision: fp8 needs an SM90+ GPU (H100/H200/B200) for blockwise FP8 GEMMs; "
                         f"{torch.cuda.get_device_name(device)} is SM{cap[0]}{cap[1]}; use precision: bf16")
    try:
        from torchao.prototype.blockwise_fp8_training.linear import fp8_blockwise_mm  # noqa: F401
    except ImportError as e:
        raise ImportError("precision: fp8 on GPU needs torchao >= 0.18 (pip install 'r1flow[gpu]'): "
                          f"{e}") from e


def high_precision_params(model: torch.nn.Module) -> list[torch.Tensor]:
    """What V3 keeps out of FP8: the output head and the MoE routers (embeddings and norms never go
    through F.linear; attention scores use matmul/SDPA, which the mode leaves alone)."""
    keep = [model.get_output_embeddings().weight]
    keep += [m.weight for m in model.modules() if type(m).__name__.endswith("TopkRouter")]
    return keep
