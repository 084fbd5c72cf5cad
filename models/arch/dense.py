"""Dense decoder configs (Llama- and Qwen2-style): typed fields, parameter and FLOP counts.

The models themselves are transformers' `LlamaForCausalLM` / `Qwen2ForCausalLM`; this module only
chooses shapes and counts what they cost. Used by the planner (a dense recipe such as
Llama-3.1-405B) and by the distillation students. It does not train anything.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DenseModelConfig(BaseModel):
    """Shape of a dense pre-norm decoder with grouped-query attention and a SwiGLU MLP."""

    model_config = ConfigDict(extra="forbid")

    arch: Literal["llama", "qwen2"] = Field("llama", description="transformers architecture; qwen2 adds q/k/v biases.")
    hidden_size: int = Field(128, ge=16, description="Model width d.")
    num_hidden_layers: int = Field(4, ge=1, description="Transformer blocks.")
    num_attention_heads: int = Field(4, ge=1, description="Query heads.")
    num_key_value_heads: int = Field(4, ge=1, description="Key/value heads (GQA when below the query heads).")
    head_dim: int | None = Field(None, ge=8, description="Per-head width (default hidden_size / heads).")
    intermediate_size: int = Field(384, ge=8, description="SwiGLU MLP width.")
    max_position_embeddings: int = Field(512, ge=16, description="Longest sequence the model serves.")
    rope_theta: float = Field(10000.0, gt=0)
    tie_word_embeddings: bool = Field(False, description="Share input embedding and output head.")

    @model_validator(mode="after")
    def _check(self) -> DenseModelConfig:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}")
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_attention_heads="
                             f"{self.num_attention_heads}; set head_dim")
        return self

    @property
    def head_width(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    def to_hf(self, vocab_size: int, bos_token_id: int, eos_token_id: int, pad_token_id: int):
        from transformers import LlamaConfig, Qwen2Config

        cls = LlamaConfig if self.arch == "llama" else Qwen2Config
        kw = dict(vocab_size=vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
                  num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_key_value_heads,
                  head_dim=self.head_width, intermediate_size=self.intermediate_size,
                  max_position_embeddings=self.max_position_embeddings,
                  rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
                  tie_word_embeddings=self.tie_word_embeddings, bos_token_id=bos_token_id,
                  eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        return cls(**kw)

    def param_counts(self, vocab_size: int) -> dict[str, int]:
        """Total and per-token activated parameters (equal for a dense model; embeddings and head included)."""
        d, hd = self.hidden_size, self.head_width
        q, kv = self.num_attention_heads * hd, self.num_key_value_heads * hd
        attn = d * q + 2 * d * kv + q * d + (q + 2 * kv if self.arch == "qwen2" else 0)
        block = attn + 3 * d * self.intermediate_size + 2 * d
        emb = vocab_size * d * (1 if self.tie_word_embeddings else 2)
        total = emb + self.num_hidden_layers * block + d
        return {"total": total, "active": total, "active_non_embedding": total - emb}

    def train_flops_per_token(self, vocab_size: int, seq_len: int) -> float:
        """6 x (non-embedding params + head) plus causal attention: fwd 2 x T/2 x H x 2 x head_dim per
        layer for scores and values, x3 for forward and backward (the PaLM appendix B count)."""
        n = self.param_counts(vocab_size)["active_non_embedding"] + self.hidden_size * vocab_size
        attn = 3 * self.num_hidden_layers * seq_len * self.num_attention_heads * 2 * self.head_width
        return 6 * n + attn

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """KV-cache bytes one token holds across all layers (keys and values of the KV heads)."""
        return self.num_hidden_layers * 2 * self.num_key_value_heads * self.head_width * dtype_bytes


FLAVORS: dict[str, DenseModelConfig] = {
    # Unit tests.
    "debug": DenseModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              intermediate_size=128, max_position_embeddings=256),
    # Llama-3.1-405B (Llama 3 paper, Table 3): 126 layers, d 16384, 128 heads, 8 KV heads, FFN 53248.
    "llama3_405b": DenseModelConfig(hidden_size=16384, num_hidden_layers=126, num_attention_heads=128,
                                    num_key_value_heads=8, intermediate_size=53248,
                                    max_position_embeddings=131072, rope_theta=500000.0),
}


def pin_tokenizer(model_dir) -> None:
    """Keep a dense student's tokenizer at the vocabulary it was trained with.

    transformers 5's AutoTokenizer loads any `qwen2` checkpoint with `Qwen2Tokenizer`, whatever its
    tokenizer_config.json names (qwen2 is in `MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS`), and that
    class adds an `<|endoftext|>` unk token when the config names none: the tokenizer then has one
    token more than the embedding, which SFT and vLLM refuse. The tokenization itself is the same, so
    recording `unk_token: null` is the whole fix."""
    import json
    from pathlib import Path

    path = Path(model_dir) / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    if "unk_token" not in cfg:
        cfg["unk_token"] = None
        path.write_text(json.dumps(cfg, indent=2))
