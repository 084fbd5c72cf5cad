"""Mixed precision for the MoE's routed experts: their GEMMs run in the autocast dtype (bf16 on GPUs) while
the optimizer keeps updating the fp32 master weights.

Why this exists (measured on an H200, issue 20): transformers runs the routed experts through
`torch.nn.functional.grouped_mm` (`integrations/moe.py: grouped_mm_experts_forward`), which autocast does
not cover, so transformers casts the activations to the *weights'* dtype (`input.to(weight.dtype)`). With
fp32 master weights every routed-expert GEMM then runs in fp32 on CUDA cores, and the MoE step runs 3-4x
slower than the same step with bf16 weights. Autocast itself treats `nn.Linear` the other way round: it
casts the weight to bf16 for the GEMM, and the cast's backward hands an fp32 gradient to the fp32 master.

The smallest piece that restores that: an experts function, registered through transformers'
`ExpertsInterface` (its documented extension point), that calls transformers' own
`grouped_mm_experts_forward` with the expert weights cast to the autocast dtype. Routing, sorting, the
grouped GEMMs and the weighted sum stay transformers' code. Outside autocast (float32 training, CPU
recipes, inference) it is exactly `grouped_mm_experts_forward`, so float32 numbers do not change.

torchtitan reaches the same split through FSDP2's `MixedPrecisionPolicy(param_dtype=bf16)`; that also
covers one GPU but changes how every parameter is gathered and reduced, while this changes the experts
only: attention, dense FFNs, norms and the head keep autocast's own rules.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS, grouped_mm_experts_forward

# The name the model's config carries while training (`set_experts_implementation`). transformers does not
# write `_experts_implementation` into config.json, so saved checkpoints load with its default.
AUTOCAST_EXPERTS = "r1flow_autocast_grouped_mm"


class _CastExperts:
    """What `grouped_mm_experts_forward` reads from the experts module, with every floating-point parameter
    seen in `dtype` (a differentiable cast: gradients reach the fp32 parameter in fp32)."""

    def __init__(self, experts: nn.Module, dtype: torch.dtype):
        self._experts, self._dtype = experts, dtype

    def __getattr__(self, name: str):
        value = getattr(self._experts, name)
        if isinstance(value, nn.Parameter) and value.is_floating_point() and value.dtype != self._dtype:
            return value.to(self._dtype)
        return value


def autocast_experts_forward(self: nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                             top_k_weights: torch.Tensor) -> torch.Tensor:
    """transformers' grouped-GEMM experts, with the weights in the autocast dtype when autocast is on."""
    device = hidden_states.device.type
    experts = self
    if torch.is_autocast_enabled(device):
        experts = _CastExperts(self, torch.get_autocast_dtype(device))
    return grouped_mm_experts_forward(experts, hidden_states, top_k_index, top_k_weights)


ALL_EXPERTS_FUNCTIONS.register(AUTOCAST_EXPERTS, autocast_experts_forward)


def autocast_experts(model: nn.Module) -> bool:
    """Route `model`'s experts through `autocast_experts_forward`; False for a model without
    transformers' experts interface (a dense model), which needs nothing."""
    if not any(hasattr(m, "gate_up_proj") and hasattr(m, "down_proj") for m in model.modules()):
        return False
    model.set_experts_implementation(AUTOCAST_EXPERTS)
    return True
