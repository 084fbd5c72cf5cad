"""LoRA for the SFT and RL stages, through PEFT: the recipe option, and the merged weights that reach the
rollout engine and the stage's checkpoint.

TRL's trainers take a `peft_config` and train only the adapters; with LoRA, GRPO's reference model is
the base with the adapters switched off (TRL), so no second copy of the policy is held. What TRL leaves
to the caller here: vLLM samples from plain weights, so every sync hands it W + (alpha / r) B A for each
adapted layer, computed next to the base weight (peft's `get_delta_weight`) instead of merging in place,
because `merge_adapter` followed by `unmerge_adapter` adds and subtracts in floating point and moves the
frozen base weights a little at every step (TRL's vLLM sync does that). The stage's checkpoint is the
merged model (`merge_and_unload`), an ordinary Hugging Face checkpoint for the next stage, vLLM and the
export. This module does not train.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field


class LoraSettings(BaseModel):
    """LoRA adapters (names as in peft's LoraConfig)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: float = Field(32.0, gt=0, description="Scale: the update is (alpha / r) B A.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapters' input.")
    target_modules: list[str] | str = Field(
        "all-linear", description="Module names to adapt, or 'all-linear' (every nn.Linear but the output head; "
                                  "peft also adapts the MoE's fused routed-expert tensors, through its "
                                  "parameter wrappers).")

    def to_peft(self):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM")


def is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _unwrapped(name: str) -> str:
    """A name inside the PEFT model -> the base model's: peft wraps each adapted module (or, for the MoE's
    fused expert tensors, each adapted parameter, one `ParamWrapper` per tensor, nested) as `.base_layer`."""
    return re.sub(r"(\.base_layer)+(?=\.|$)", "", name)


def merged_state_dict(model) -> dict:
    """The base model's state dict, by the base model's names, with every adapted weight replaced by
    W + delta (a new tensor); `model` and its base weights are not modified."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    deltas = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and not module.disable_adapters:
            # nn.Linear adapters update `weight`; ParamWrapper adapters the parameter they name
            key = f"{_unwrapped(name)}.{getattr(module, 'parameter_name', 'weight')}"
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    deltas[key] = deltas.get(key, 0) + module.get_delta_weight(adapter)
    out = {}
    for key, tensor in base.state_dict().items():
        if ".lora_" in key:
            continue
        key = _unwrapped(key)
        out[key] = tensor + deltas.pop(key).to(tensor.dtype) if key in deltas else tensor
    if deltas:  # an adapter whose weight was not found would silently not reach the engine
        raise RuntimeError(f"LoRA merge: no base weight for adapted {sorted(deltas)[:3]}")
    return out


def lora_check(cfg) -> None:
    """LoRA trains on one process or under DDP; its merge at save (models/train/checkpoint.py) needs the
    whole model in one process, which FSDP's shards are not."""
    if cfg.lora is not None and cfg.parallel == "fsdp" and cfg.launched:
        raise ValueError("lora with parallel=fsdp is not supported (the adapters are merged into the full "
                         "weights at save); LoRA's frozen base fits where the full model does: use parallel=ddp")
