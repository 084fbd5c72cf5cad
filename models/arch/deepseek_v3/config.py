"""DeepSeek-V3-style model configs: typed fields, named flavors, and the transformers config.

The model itself is transformers' `DeepseekV3ForCausalLM`, so TRL and vLLM load checkpoints as they
are. This module only chooses shapes. `debug` is the flavor unit tests use; `tiny` is the CPU
recipe's; `v3_671b` is the published DeepSeek-V3 configuration (for the planner and GPU recipes).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import DeepseekV3Config


class MoEModelConfig(BaseModel):
    """Shape of a DeepSeek-V3-style MoE transformer (MLA attention + DeepSeekMoE)."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(128, ge=16, description="Model width d.")
    num_hidden_layers: int = Field(4, ge=1, description="Transformer blocks.")
    num_attention_heads: int = Field(4, ge=1, description="Attention heads.")
    q_lora_rank: int | None = Field(64, ge=8, description="MLA query compression rank (None: full-rank q).")
    kv_lora_rank: int = Field(
        512, ge=16, description="MLA key/value latent rank. 512 is DeepSeek-V3's and the shape vLLM's "
                                "CPU MLA backend serves (latent cache 512 + rope 64).")
    qk_rope_head_dim: int = Field(64, ge=8, description="Decoupled RoPE dims per head (DeepSeek-V3: 64).")
    qk_nope_head_dim: int = Field(32, ge=8, description="Non-positional q/k dims per head (DeepSeek-V3: 128).")
    v_head_dim: int = Field(32, ge=8, description="Value dims per head (DeepSeek-V3: 128).")
    intermediate_size: int = Field(384, ge=8, description="FFN width of the dense layers.")
    moe_intermediate_size: int = Field(128, ge=8, description="FFN width of each expert.")
    n_routed_experts: int = Field(8, ge=1, description="Routed experts per MoE layer.")
    n_shared_experts: int = Field(1, ge=0, description="Always-on shared experts per MoE layer.")
    num_experts_per_tok: int = Field(2, ge=1, description="Routed experts each token is sent to (K_r).")
    n_group: int = Field(2, ge=1, description="Expert groups for group-limited routing.")
    topk_group: int = Field(1, ge=1, description="Groups a token may route into.")
    first_k_dense_replace: int = Field(1, ge=0, description="Leading layers with a dense FFN instead of MoE.")
    routed_scaling_factor: float = Field(1.0, gt=0, description="Scale on routed expert outputs (V3: 2.5).")
    max_position_embeddings: int = Field(512, ge=16, description="Longest sequence the model serves.")
    rope_theta: float = Field(10000.0, gt=0)
    tie_word_embeddings: bool = Field(False, description="Share input embedding and output head.")

    @model_validator(mode="after")
    def _check(self) -> "MoEModelConfig":
        if self.num_experts_per_tok > self.n_routed_experts:
            raise ValueError(f"num_experts_per_tok={self.num_experts_per_tok} exceeds "
                             f"n_routed_experts={self.n_routed_experts}")
        if self.n_routed_experts % self.n_group:
            raise ValueError(f"n_routed_experts={self.n_routed_experts} is not divisible by n_group={self.n_group}")
        if self.topk_group > self.n_group:
            raise ValueError(f"topk_group={self.topk_group} exceeds n_group={self.n_group}")
        per_group = self.n_routed_experts // self.n_group
        if self.n_group > 1 and per_group < 2:
            raise ValueError(f"group-limited routing scores groups by their top-2 experts; "
                             f"n_routed_experts/n_group={per_group} < 2")
        if self.topk_group * per_group < self.num_experts_per_tok:
            raise ValueError(f"topk_group={self.topk_group} groups of {per_group} experts cannot supply "
                             f"num_experts_per_tok={self.num_experts_per_tok}")
        if self.first_k_dense_replace > self.num_hidden_layers:
            raise ValueError(f"first_k_dense_replace={self.first_k_dense_replace} exceeds "
                             f"num_hidden_layers={self.num_hidden_layers}")
        return self

    def to_hf(self, vocab_size: int, bos_token_id: int, eos_token_id: int, pad_token_id: int) -> DeepseekV3Config:
        cfg = DeepseekV3Config(
            vocab_size=vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_attention_heads,
            q_lora_rank=self.q_lora_rank, kv_lora_rank=self.kv_lora_rank, qk_rope_head_dim=self.qk_rope_head_dim,
            qk_nope_head_dim=self.qk_nope_head_dim, v_head_dim=self.v_head_dim,
            intermediate_size=self.intermediate_size, moe_intermediate_size=self.moe_intermediate_size,
            n_routed_experts=self.n_routed_experts, n_shared_experts=self.n_shared_experts,
            num_experts_per_tok=self.num_experts_per_tok, n_group=self.n_group, topk_group=self.topk_group,
            first_k_dense_replace=self.first_k_dense_replace, routed_scaling_factor=self.routed_scaling_factor,
            norm_topk_prob=True, max_position_embeddings=self.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            tie_word_embeddings=self.tie_word_embeddings, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            # MTP modules are trained by r1flow itself (models/arch/deepseek_v3/mtp.py) and dropped on export
            # (DeepSeek-V3 report sec. 2.2: "MTP modules can be discarded" at inference).
            num_nextn_predict_layers=0,
        )
        # vLLM reads the router's scoring from these two keys; transformers' DeepseekV3Config does not
        # define them but keeps unknown attributes, so they survive save_pretrained.
        cfg.scoring_func = "sigmoid"
        cfg.topk_method = "noaux_tc"
        return cfg

    def param_counts(self, vocab_size: int) -> dict[str, int]:
        """Total and per-token activated parameters (embeddings and head included)."""
        d, h = self.hidden_size, self.num_attention_heads
        qk = self.qk_nope_head_dim + self.qk_rope_head_dim
        q = (d * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * h * qk) if self.q_lora_rank else d * h * qk
        attn = q + d * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank + \
            self.kv_lora_rank * h * (self.qk_nope_head_dim + self.v_head_dim) + h * self.v_head_dim * d
        dense_ffn = 3 * d * self.intermediate_size
        expert = 3 * d * self.moe_intermediate_size
        moe_total = expert * (self.n_routed_experts + self.n_shared_experts) + d * self.n_routed_experts
        moe_active = expert * (self.num_experts_per_tok + self.n_shared_experts) + d * self.n_routed_experts
        n_dense, n_moe = self.first_k_dense_replace, self.num_hidden_layers - self.first_k_dense_replace
        norms = self.num_hidden_layers * 2 * d + d
        emb = vocab_size * d * (1 if self.tie_word_embeddings else 2)
        total = emb + norms + self.num_hidden_layers * attn + n_dense * dense_ffn + n_moe * moe_total
        active = emb + norms + self.num_hidden_layers * attn + n_dense * dense_ffn + n_moe * moe_active
        return {"total": total, "active": active, "active_non_embedding": active - emb}

    def train_flops_per_token(self, vocab_size: int, seq_len: int) -> float:
        """Training FLOPs per token: 6 x (activated non-embedding params + head), plus causal attention
        (fwd 2 x T/2 x H x (qk + v) per layer, x3 for forward and backward)."""
        n = self.param_counts(vocab_size)["active_non_embedding"] + self.hidden_size * vocab_size
        attn = 3 * self.num_hidden_layers * seq_len * self.num_attention_heads * (
            self.qk_nope_head_dim + self.qk_rope_head_dim + self.v_head_dim)
        return 6 * n + attn

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """KV-cache bytes one token holds across all layers: MLA caches the compressed latent plus the
        decoupled RoPE key (V3 report sec. 2.1.1), not per-head keys and values."""
        return self.num_hidden_layers * (self.kv_lora_rank + self.qk_rope_head_dim) * dtype_bytes


FLAVORS: dict[str, MoEModelConfig] = {
    # Unit tests: seconds to build and run.
    "debug": MoEModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, q_lora_rank=32,
                            intermediate_size=128, moe_intermediate_size=32, n_routed_experts=4, n_group=2,
                            topk_group=1, num_experts_per_tok=2, max_position_embeddings=256),
    # The CPU recipe.
    "tiny": MoEModelConfig(),
    # DeepSeek-V3's shapes (MLA 512/64/128, fine-grained experts, sigmoid routing) at 321M total / 123M
    # activated parameters with the tiny tokenizer: the one-GPU FP8 and MFU benchmarks (bench/).
    "v3_300m": MoEModelConfig(hidden_size=1024, num_hidden_layers=8, num_attention_heads=8, q_lora_rank=384,
                              kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128,
                              intermediate_size=2816, moe_intermediate_size=768, n_routed_experts=16,
                              n_shared_experts=1, num_experts_per_tok=4, n_group=4, topk_group=2,
                              first_k_dense_replace=1, routed_scaling_factor=2.5, max_position_embeddings=4096),
    # DeepSeek-V3 (671B total, 37B activated), from the report's sec. 4.2 hyper-parameters.
    "v3_671b": MoEModelConfig(hidden_size=7168, num_hidden_layers=61, num_attention_heads=128, q_lora_rank=1536,
                              kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128,
                              intermediate_size=18432, moe_intermediate_size=2048, n_routed_experts=256,
                              n_shared_experts=1, num_experts_per_tok=8, n_group=8, topk_group=4,
                              first_k_dense_replace=3, routed_scaling_factor=2.5, max_position_embeddings=4096),
}
