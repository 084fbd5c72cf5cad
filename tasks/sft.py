"""Supervised fine-tuning stages on TRL's SFTTrainer (models/train/sft.py): stage 4's `sft_cold` and
stage 7's `sft_mix` (the base on the cold-start data and on the mixture) and stage 9's `distill` (a
student on the distillation traces, no RL afterwards). Parents by role: `base` (the checkpoint to
fine-tune) and `data` (a dataset artifact with samples.parquet).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from r1flow.data.schemas import read_rows
from r1flow.models.train import sft
from r1flow.tasks.common import BuildContext, Progress


def build_sft(b: BuildContext) -> None:
    cfg: sft.SFTStageConfig = b.node.config
    base, data = b.parents["base"], b.parents["data"]
    samples = read_rows(data.file("samples.parquet"), "sft_samples")
    steps = max(1, round(len(samples) * cfg.epochs / cfg.batch_size))
    progress = Progress(b.node.name, steps)
    b.summary |= sft.run_sft(cfg, Path(base.path), samples, b.out, b.work, stage=b.node.name,
                             on_step=lambda m: progress.update(m["step"]))
    b.summary["data_sources"] = dict(Counter(s["source"] for s in samples))
