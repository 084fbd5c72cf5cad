"""Stage 8a `reward_model`: the helpfulness reward model (models/train/reward_model.py on TRL's
RewardTrainer), trained on checkable preference pairs from the policy's own answers. Parents by
role: `policy` (sft_mix) and `world` (the prompts).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from r1flow.data.schemas import write_rows
from r1flow.models.eval import collect
from r1flow.models.train import reward_model
from r1flow.tasks.common import BuildContext, log
from r1flow.tasks.torchrun import launch


def build_reward_model(b: BuildContext) -> None:
    cfg: reward_model.RewardModelConfig = b.node.config
    policy, out = b.parents["policy"], b.out
    rows = collect.family_prompts(b.parents["world"].file("rl.parquet"), cfg.families, cfg.prompts_per_family)
    [comps] = collect.sample(policy.path, [(rows, cfg.sampling)], cfg.engine)
    pairs = reward_model.preference_pairs(rows, [[c.text for c in cs] for cs in comps], cfg.seed, cfg.pairs_per_prompt)
    ids = sorted({p["problem_id"] for p in pairs})
    random.Random(cfg.seed).shuffle(ids)
    held = set(ids[: max(1, round(len(ids) * cfg.heldout_fraction))])
    for p in pairs:
        p["split"] = "heldout" if p["problem_id"] in held else "train"
    train = [p for p in pairs if p["split"] == "train"]
    heldout = [p for p in pairs if p["split"] == "heldout"]
    log(f"[reward_model] {len(train)} training and {len(heldout)} held-out preference pairs "
        f"({dict(Counter(p['source'] for p in pairs))})")
    if cfg.launched:  # several processes: torchrun runs models/train/reward_model.py's worker
        spec = {"config": cfg.model_dump(mode="json"), "base": policy.path, "out": str(out), "work": str(b.work)}
        for name, part in (("train", train), ("heldout", heldout)):
            spec[name] = str(b.work / f"{name}_pairs.json")
            Path(spec[name]).write_text(json.dumps(part))
        b.summary |= launch("reward_model", "r1flow.models.train.reward_model", cfg, spec, b.work)
    else:
        b.summary |= reward_model.train_reward_model(cfg, Path(policy.path), train, heldout, out, b.work)
    extra = out / "r1flow"
    extra.mkdir(exist_ok=True)
    write_rows(pairs, extra / "pairs.parquet", "preference_pairs")
    b.summary["pair_sources"] = dict(Counter(p["source"] for p in pairs))
    log(f"[reward_model] held-out pair accuracy {b.summary['heldout_pair_accuracy']:.3f}")
