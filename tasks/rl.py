"""Every GRPO stage (models/train/grpo.py on TRL's GRPOTrainer): stage 2's `r1_zero`, stage 5's
`reasoning_rl`, stage 8's `final_rl` (with the learned reward model) and stage 9's `student_rl` (the
RL-only baseline). Parents by role: `policy` (the checkpoint to start from), `world` (the RL
prompts, unless the stage's `datasets` leave it out), `data:NAME` (imported prompts) and, for final_rl,
`reward_model` (its scorer is the `helpfulness` reward).
"""

from __future__ import annotations

import base64
from pathlib import Path

from r1flow.data.schemas import read_rows
from r1flow.models.train import grpo
from r1flow.tasks.common import BuildContext, Progress, imported, publish_markdown


def curves_markdown(stage: str, summary: dict, png: Path) -> str:
    """Summary table plus the curves PNG embedded as a data URI (Prefect's UI renders Markdown)."""
    img = base64.b64encode(png.read_bytes()).decode()
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                     for k, v in summary.items() if not isinstance(v, (dict, list)))
    return (f"# {stage}: accuracy and response length over RL steps\n\n![curves](data:image/png;base64,{img})\n\n"
            f"| metric | value |\n|---|---|\n{rows}\n\nFile: `{png}`\n")


def build_rl(b: BuildContext) -> None:
    cfg: grpo.GRPOStageConfig = b.node.config
    label = b.node.name
    learned = {}
    if "reward_model" in b.parents:
        from r1flow.models.train import reward_model

        learned["helpfulness"] = reward_model.RewardModelScorer(b.parents["reward_model"].path)
    rows = read_rows(b.parents["world"].file("rl.parquet"), "prompts") if "world" in b.parents else []
    rows += [r for rows_ in imported(b).values() for r in rows_]  # the recipe's own prompts (cfg.datasets)
    progress = Progress(label, cfg.steps)
    b.summary |= grpo.run_grpo(cfg, Path(b.parents["policy"].path), rows, b.out, b.work,
                               on_step=lambda m: progress.update(m["step"]), stage=label, learned_rewards=learned)
    publish_markdown(f"r1flow-{label}-curves", curves_markdown(label, b.summary, b.out / "r1flow" / "curves.png"),
                     f"{label}: training curves (R1 paper Figures 2-3 analogue)")
