"""Supervised fine-tuning stages on TRL's SFTTrainer (models/train/sft.py): stage 4's `sft_cold` and
stage 7's `sft_mix` (the base on the cold-start data and on the mixture) and stage 9's `distill` (a
student on the distillation traces, no RL afterwards). Parents by role: `base` (the checkpoint to
fine-tune), `data` (the generated dataset artifact with samples.parquet, unless `generated: false`) and
`data:NAME` (imported SFT sources, the stage's `datasets`, mixed in by `user_share`).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from r1flow.data.schemas import read_rows
from r1flow.models.train import sft
from r1flow.tasks.common import BuildContext, Progress, imported
from r1flow.tasks.torchrun import launch


def build_sft(b: BuildContext) -> None:
    cfg: sft.SFTStageConfig = b.node.config
    generated = read_rows(b.parents["data"].file("samples.parquet"), "sft_samples") if "data" in b.parents else []
    user = [r for rows in imported(b, "sft").values() for r in rows]
    samples = sft.mix(generated, user, cfg.user_share, cfg.seed)
    steps = max(1, round(len(samples) * cfg.epochs / cfg.batch_size))
    progress = Progress(b.node.name, steps)
    base = Path(b.parents["base"].path)
    if cfg.launched:  # several processes: torchrun runs models/train/sft.py's worker
        data = b.work / "samples.jsonl"
        data.write_text("".join(json.dumps(s) + "\n" for s in samples))
        b.summary |= launch(b.node.name, "r1flow.models.train.sft", cfg,
                            {"config": cfg.model_dump(mode="json"), "base": str(base), "samples": str(data),
                             "out": str(b.out), "work": str(b.work), "stage": b.node.name}, b.work, progress)
    else:
        b.summary |= sft.run_sft(cfg, base, samples, b.out, b.work, stage=b.node.name,
                                 on_step=lambda m: progress.update(m["step"]))
    b.summary["data_sources"] = dict(Counter(s["source"] for s in samples))
