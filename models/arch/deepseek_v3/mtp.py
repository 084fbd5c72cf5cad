"""Multi-Token Prediction (DeepSeek-V3 report, sec. 2.2), depth D, for pretraining only.

Module k combines the previous depth's hidden state h_i^{k-1} with the embedding of token t_{i+k}:
  h'_i = M_k [RMSNorm(h_i^{k-1}); RMSNorm(Emb(t_{i+k}))]      (eq. 21)
  h_i^k = TRM_k(h'_{1:T-k})                                     (eq. 22)
  P^k_{i+k+1} = OutHead(h_i^k)                                  (eq. 23)
sharing the embedding and output head with the main model, and adds lambda/D * sum_k CE_k to the
loss (eqs. 24-25). On export the MTP modules are dropped, as the report does for inference: the
Hugging Face checkpoint holds the main model only, so transformers and vLLM load it unchanged.
The mid-stage training checkpoints keep them (`mtp.safetensors` in the work dir) so a resumed run
continues training them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3DecoderLayer, DeepseekV3RMSNorm


class MTPModule(nn.Module):
    def __init__(self, config, layer_idx: int):
        super().__init__()
        d = config.hidden_size
        self.hnorm = DeepseekV3RMSNorm(d, eps=config.rms_norm_eps)
        self.enorm = DeepseekV3RMSNorm(d, eps=config.rms_norm_eps)
        self.proj = nn.Linear(2 * d, d, bias=False)
        self.block = DeepseekV3DecoderLayer(config, layer_idx=layer_idx)
        self.norm = DeepseekV3RMSNorm(d, eps=config.rms_norm_eps)


class MultiTokenPrediction(nn.Module):
    def __init__(self, model: nn.Module, depth: int):
        super().__init__()
        cfg = model.config
        self.depth = depth
        # Dense FFN in the MTP block keeps its routers out of the balancing statistics.
        dense_cfg = type(cfg).from_dict({**cfg.to_dict(), "first_k_dense_replace": cfg.num_hidden_layers + depth})
        dense_cfg._attn_implementation = cfg._attn_implementation
        self.modules_ = nn.ModuleList(MTPModule(dense_cfg, layer_idx=cfg.num_hidden_layers + k) for k in range(depth))

    def loss(self, model: nn.Module, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """hidden: (B, T, d) last hidden states of the main model (after its final norm);
        input_ids: (B, T). Returns mean over depths of the CE for token i+k+1 at position i."""
        emb = model.get_input_embeddings()
        head = model.get_output_embeddings()
        rotary = model.model.rotary_emb
        h = hidden
        losses = []
        for k, m in enumerate(self.modules_, start=1):
            t = input_ids.shape[1] - k
            if t < 2:
                break
            x = m.proj(torch.cat([m.hnorm(h[:, :t]), m.enorm(emb(input_ids[:, k:k + t]))], dim=-1))  # (B, t, d)
            pos = torch.arange(t, device=x.device).unsqueeze(0)
            mask = torch.full((t, t), float("-inf"), device=x.device, dtype=x.dtype).triu(1)[None, None]
            out = m.block(x, attention_mask=mask, position_ids=pos, position_embeddings=rotary(x, pos))
            h = out[0] if isinstance(out, tuple) else out
            logits = head(m.norm(h[:, :-1]))  # position i predicts token i+k+1
            targets = input_ids[:, k + 1:k + t]
            losses.append(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1)))
        return torch.stack(losses).mean()
