"""DeepSeekMoE load balancing for training: auxiliary-loss-free bias updates and the optional
sequence-wise balance loss (DeepSeek-V3 report, sec. 2.1.2).

`RouterProbe` hooks every router of a transformers `DeepseekV3ForCausalLM` and records, per forward,
which experts each token chose (counted on the routers' device) and the routers' affinity scores.
The training loop then calls
`update_bias` after each optimizer step and, if alpha > 0, adds `sequence_balance_loss`.
This module does not run training steps.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _routers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "e_score_correction_bias")]


class RouterProbe:
    """Collects expert choices (for bias updates and load stats) and router logits (for the loss)."""

    def __init__(self, model: nn.Module, keep_logits: bool):
        self.routers = _routers(model)
        if not self.routers:
            raise ValueError("model has no DeepSeek-V3 routers (no e_score_correction_bias buffers)")
        self.n_experts = self.routers[0][1].e_score_correction_bias.numel()
        self.top_k = self.routers[0][1].top_k
        self.keep_logits = keep_logits
        # Expert choices counted where the router runs: no host sync inside the forward pass (a GPU would
        # otherwise wait once per MoE layer per step); `take_counts` reads them once per step.
        self.counts: torch.Tensor | None = None  # (n_routers, n_experts) int64, on the routers' device
        self.logits: list[torch.Tensor] = []  # (tokens, n_experts) per router, this forward only
        self.indices: list[torch.Tensor] = []
        self._handles = [m.register_forward_hook(self._hook(i)) for i, (_, m) in enumerate(self.routers)]

    def _hook(self, i: int):
        def hook(_mod, _inp, out):
            # Under gradient checkpointing the backward pass re-runs each layer's forward, routers included
            # (the same choices): count each token once, in the forward pass. A recomputation runs inside
            # an autograd graph task, the forward pass outside any (-1). Measured: without this check the
            # counts of a checkpointed step doubled (tests/test_pretrain.py).
            if torch._C._current_graph_task_id() != -1:
                return
            router_logits, _weights, topk_idx = out  # (N, E), (N, K), (N, K)
            idx = topk_idx.detach().flatten()
            if self.counts is None or self.counts.device != idx.device:
                self.counts = torch.zeros(len(self.routers), self.n_experts, dtype=torch.int64,
                                          device=idx.device)
            # scatter_add_ into a fixed-size row: bincount reads the largest index back to size its output
            self.counts[i].scatter_add_(0, idx, torch.ones_like(idx))
            if self.keep_logits:
                self.logits.append(router_logits)
                self.indices.append(topk_idx)
        return hook

    def start_forward(self) -> None:
        self.logits.clear()
        self.indices.clear()

    def take_counts(self) -> torch.Tensor:
        """Expert loads since the last call, (n_routers, n_experts) float64 on the CPU, summed across ranks:
        the step's one read of the router statistics (after the optimizer step)."""
        if self.counts is None:
            return torch.zeros(len(self.routers), self.n_experts, dtype=torch.float64)
        c = self.counts.clone()
        self.counts.zero_()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(c)  # on the routers' device: NCCL reduces GPU tensors only
        return c.double().cpu()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


@torch.no_grad()
def update_bias(probe: RouterProbe, counts: torch.Tensor, gamma: float) -> None:
    """b_i += gamma * sign(mean load - load_i) for every router (report eq. 16's update rule).

    The bias only enters expert *selection* (transformers adds it to `scores_for_choice`, while the
    gating weights come from the unbiased scores), exactly as the report prescribes."""
    for (_, router), load in zip(probe.routers, counts):
        delta = gamma * torch.sign(load.mean() - load)
        bias = router.e_score_correction_bias
        bias += delta.to(device=bias.device, dtype=bias.dtype)  # counts live on the CPU


def sequence_balance_loss(probe: RouterProbe, batch: int, seq: int) -> torch.Tensor:
    """Sequence-wise balance loss, report eqs. 17-20, averaged over routers (multiply by alpha).

    f_i = N_r / (K_r T) * #tokens of the sequence routed to i;  P_i = mean_t s'_{i,t} with s' the
    sigmoid affinities normalised over experts;  L = sum_i f_i P_i."""
    total = None
    for logits, idx in zip(probe.logits, probe.indices):
        s = logits.float().sigmoid().view(batch, seq, -1)  # (B, T, E)
        s = s / s.sum(-1, keepdim=True)
        e = s.shape[-1]
        chosen = torch.zeros_like(s).scatter_(-1, idx.view(batch, seq, -1), 1.0)  # (B, T, E)
        f = chosen.sum(1) * e / (probe.top_k * seq)  # (B, E)
        p = s.mean(1)  # (B, E)
        loss = (f * p).sum(-1).mean()
        total = loss if total is None else total + loss
    return total / len(probe.logits)


def load_imbalance(counts: torch.Tensor) -> torch.Tensor:
    """max/mean expert load per router; 1.0 is perfect balance."""
    mean = counts.mean(-1).clamp_min(1e-9)
    return counts.max(-1).values / mean
