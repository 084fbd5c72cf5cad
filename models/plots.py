"""PNG plots of training and evaluation results (matplotlib, headless). No computation of metrics."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_expert_load(history: list[dict], path: Path) -> None:
    """Left: max/mean expert load over steps. Right: each router's load share per expert over the
    last 10% of steps (a balanced router is a flat row)."""
    steps = [r["step"] for r in history]
    imb = [r["moe/max_over_mean_load"] for r in history]
    tail = history[-max(1, len(history) // 10):]
    load = np.sum([np.array(r["load"]) for r in tail], axis=0)  # (routers, experts)
    share = load / load.sum(-1, keepdims=True)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    a.plot(steps, imb)
    a.axhline(1.0, color="gray", ls="--", lw=0.8)
    a.set_xlabel("step")
    a.set_ylabel("max / mean expert load")
    a.set_title("MoE load imbalance (1 = balanced)")
    im = b.imshow(share, aspect="auto", cmap="viridis")
    b.set_xlabel("expert")
    b.set_ylabel("MoE layer")
    b.set_title("load share, last 10% of steps")
    fig.colorbar(im, ax=b)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
