"""Every GRPO stage (models/train/grpo.py on TRL's GRPOTrainer): stage 2's `r1_zero`, stage 5's
`reasoning_rl`, stage 8's `final_rl` (with the learned reward model) and stage 9's `student_rl` (the
RL-only baseline). Parents by role: `policy` (the checkpoint to start from), `world` (the RL
prompts, unless the stage's `datasets` leave it out), `data:NAME` (imported prompts) and, for final_rl,
`reward_model` (its scorer is the `helpfulness` reward).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from r1flow.data.schemas import read_rows
from r1flow.models.train import grpo
from r1flow.tasks.common import BuildContext, Progress, imported, publish_markdown
from r1flow.tasks.torchrun import launch


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
    rm = b.parents["reward_model"].path if "reward_model" in b.parents else None
    rows = read_rows(b.parents["world"].file("rl.parquet"), "prompts") if "world" in b.parents else []
    rows += [r for rows_ in imported(b).values() for r in rows_]  # the recipe's own prompts (cfg.datasets)
    progress = Progress(label, cfg.steps)
    if cfg.launched:  # several processes: torchrun runs models/train/grpo.py's worker
        prompts = b.work / "prompts.jsonl"
        prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
        b.summary |= launch(label, "r1flow.models.train.grpo", cfg,
                            {"config": cfg.model_dump(mode="json"), "base": b.parents["policy"].path,
                             "prompts": str(prompts), "reward_model": rm, "out": str(b.out), "work": str(b.work),
                             "stage": label}, b.work, progress)
    else:
        learned = {}
        if rm:
            from r1flow.models.train import reward_model

            learned["helpfulness"] = reward_model.RewardModelScorer(rm)
        b.summary |= grpo.run_grpo(cfg, Path(b.parents["policy"].path), rows, b.out, b.work, stage=label,
                                   on_step=lambda m: progress.update(m["step"]), learned_rewards=learned)
    publish_markdown(f"r1flow-{label}-curves", curves_markdown(label, b.summary, b.out / "r1flow" / "curves.png"),
                     f"{label}: training curves (R1 paper Figures 2-3 analogue)")
