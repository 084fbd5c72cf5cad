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


def plot_rl_curves(metrics: list[dict], path: Path, title: str = "RL") -> None:
    """Like the R1 paper's Figures 2 and 3: accuracy (and format rate) and mean response length over
    RL steps, with a 10-step moving average."""
    steps = [m["step"] for m in metrics]

    def series(key):
        return np.array([np.nan if m.get(key) is None else m[key] for m in metrics], dtype=float)

    def smooth(y, w=10):
        if len(y) < w:
            return y
        return np.convolve(np.nan_to_num(y), np.ones(w) / w, mode="valid")

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    for key, label in (("rl/accuracy", "accuracy"), ("rl/format_rate", "format rate")):
        y = series(key)
        if np.isnan(y).all():
            continue
        line, = a.plot(steps, y, alpha=0.3)
        s = smooth(y)
        a.plot(steps[len(steps) - len(s):], s, color=line.get_color(), label=label)
    a.set_xlabel("RL step")
    a.set_ylim(-0.02, 1.02)
    a.set_title(f"{title}: training reward components")
    a.legend()
    y = series("rl/completion_length")
    b.plot(steps, y, alpha=0.3)
    s = smooth(y)
    b.plot(steps[len(steps) - len(s):], s, color="C0")
    b.set_xlabel("RL step")
    b.set_ylabel("tokens")
    b.set_title(f"{title}: mean response length")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss(metrics: list[dict], path: Path, title: str) -> None:
    """Training loss over optimizer steps (SFT stages)."""
    fig, a = plt.subplots(figsize=(6, 3.8))
    a.plot([m["step"] for m in metrics], [m["train/loss"] for m in metrics])
    a.set_xlabel("step")
    a.set_ylabel("loss (nats/token, completion only)")
    a.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
