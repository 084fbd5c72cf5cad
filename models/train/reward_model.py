"""The learned helpfulness reward for general (non-reasoning) prompts, R1 sec. 2.3.4: a reward model
trained with TRL's `RewardTrainer` (Bradley-Terry loss on chosen/rejected pairs) and scored inside GRPO.

Preference pairs are generated, and their preference is checkable: the policy answers instruction
tasks (copy, reverse, uppercase, fact look-up); an answer the task world's verifier accepts is
preferred over one it rejects. Where the policy gave no wrong answer, the rejected side is a
rule-made near miss (words not reversed, left in lower case, another entity's fact), and where it
gave no right one, the chosen side is the world's own answer; the `source` column says which.
`preference_pairs` builds the pairs, `train_reward_model` trains and reports held-out pair accuracy,
`RewardModelScorer` is the GRPO reward function (`helpfulness`). No Prefect, no artifact store.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import torch
from pydantic import ConfigDict, Field, model_validator

from r1flow.data.templates import EOS, prompt_messages
from r1flow.data.verify import extract_answer, verify
from r1flow.data.world import INSTRUCTION_FAMILIES
from r1flow.models.rollout.engine import EngineConfig, SamplingConfig
from r1flow.models.train import tracking
from r1flow.models.train.checkpoint import save_trained
from r1flow.models.train.launch import TrainerProcesses, global_batch_check, rank, trainer_kwargs, worker_main


class RewardModelConfig(TrainerProcesses):
    """The `reward_model` stage: preference data from the policy, and RewardTrainer settings (`nproc`,
    `parallel`: models/train/launch.py)."""

    model_config = ConfigDict(extra="forbid")

    families: list[str] = Field(default_factory=lambda: list(INSTRUCTION_FAMILIES),
                                description="General-prompt families the reward model judges.")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(n=8, temperature=1.0, top_p=1.0,
                                                                             max_tokens=32),
                                     description="Policy answers per prompt that become pair candidates.")
    prompts_per_family: int = Field(128, ge=1, description="RL-split prompts answered per family (first N).")
    pairs_per_prompt: int = Field(2, ge=1, description="Most pairs made from one prompt.")
    heldout_fraction: float = Field(0.2, gt=0, lt=1, description="Prompts whose pairs are held out for accuracy.")
    epochs: float = Field(2.0, gt=0)
    learning_rate: float = Field(1e-4, gt=0, lt=1)
    batch_size: int = Field(16, ge=1, description="Pairs per optimizer step, over all processes.")
    max_length: int = Field(256, ge=16, description="Longest prompt + response in tokens.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass instead of keeping them (TRL's / "
                           "transformers' gradient_checkpointing): less memory, about one more forward of compute.")
    seed: int = Field(0)
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine for the policy's answers.")

    @model_validator(mode="after")
    def _check(self) -> "RewardModelConfig":
        global_batch_check(self.batch_size, self)
        return self


def corrupt(row: dict, rng: random.Random, others: list[str] = ()) -> str:
    """A near miss for an instruction task that the verifier rejects. `others`: answers to other
    prompts of the family (a fact's wrong value is another entity's)."""
    fam, gold, q = row["family"], row["answer"], row["question"]
    if fam == "reverse":
        return q.split(":", 1)[1].strip()  # copied, not reversed
    if fam == "upper":
        return gold.lower()
    if fam == "copy":
        words = gold.split()
        return " ".join(words[1:] + words[:1])
    if fam == "fact":
        values = sorted(set(others) - {gold})
        return rng.choice(values) if values else gold + "s"
    raise ValueError(f"no near miss for family {fam!r}")


def preference_pairs(rows: list[dict], answers: list[list[str]], seed: int = 0, per_prompt: int = 2) -> list[dict]:
    """Up to `per_prompt` (chosen, rejected) pairs per instruction prompt from the policy's `answers`."""
    rng = random.Random(seed)

    def kind(r: dict) -> tuple[str, str]:  # a fact's alternatives are values of its attribute ("color", "city")
        return r["family"], r["question"].split()[3] if r["family"] == "fact" else ""

    others: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        others.setdefault(kind(r), []).append(r["answer"])
    pairs = []
    for row, texts in zip(rows, answers):
        uniq = list(dict.fromkeys(t.split(EOS)[0].strip() for t in texts if t.split(EOS)[0].strip()))
        good = [t for t in uniq if verify(extract_answer(t, row | {"kind": "instruction"}), row)]
        bad = [t for t in uniq if t not in good]
        rng.shuffle(good)
        rng.shuffle(bad)
        alt = others[kind(row)]
        for i in range(per_prompt):
            chosen, c_src = (good[i % len(good)], "policy") if good else (row["answer"], "world")
            rejected, r_src = (bad[i], "policy") if i < len(bad) else (corrupt(row, rng, alt), "rule")
            if rejected == chosen or verify(extract_answer(rejected, row | {"kind": "instruction"}), row):
                continue
            pairs.append({"problem_id": row["id"], "family": row["family"], "question": row["question"],
                          "chosen": chosen, "rejected": rejected, "source": f"{c_src}/{r_src}"})
            if i >= len(bad):
                break  # one rule-made near miss per prompt is enough
    return pairs


def _dataset(pairs: list[dict]):
    import datasets

    return datasets.Dataset.from_list([{
        "prompt": prompt_messages(p["question"], "instruction"),
        "chosen": [{"role": "assistant", "content": p["chosen"]}],
        "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs])


def train_reward_model(cfg: RewardModelConfig, base_dir: Path, train: list[dict], heldout: list[dict],
                       out_dir: Path, work: Path) -> dict:
    """Train a one-logit sequence classifier from the checkpoint in `base_dir` on `train` pairs; write it
    to `out_dir`. Returns the summary with held-out pair accuracy (chosen scored above rejected)."""
    cfg.check_processes("reward_model")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    from r1flow.models.rollout.engine import check_checkpoint

    if not train or not heldout:
        raise ValueError(f"reward_model: need training and held-out pairs, got {len(train)} and {len(heldout)}")
    check_checkpoint(base_dir)
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    gpu = torch.cuda.is_available()
    # The score head is new (random): seed it, so it does not depend on what ran before in this process
    # (a sampling engine, other stages) and is the same on every training process.
    set_seed(cfg.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base_dir), num_labels=1, pad_token_id=tok.pad_token_id, use_safetensors=True,
        dtype=torch.bfloat16 if gpu else torch.float32)
    args = RewardConfig(output_dir=str(work / "trainer"), num_train_epochs=cfg.epochs,
                        per_device_train_batch_size=cfg.micro_batch(cfg.batch_size),
                        gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=cfg.learning_rate,
                        lr_scheduler_type="cosine", warmup_steps=0.05, max_length=cfg.max_length,
                        logging_steps=1, save_strategy="no", report_to=tracking.report_to(), use_cpu=not gpu, bf16=gpu,
                        seed=cfg.seed, disable_tqdm=True, dataset_num_proc=None,
                        **trainer_kwargs(cfg, cfg.gradient_checkpointing))
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    trainer = RewardTrainer(model=model, args=args, train_dataset=_dataset(train), processing_class=tok)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    save_trained(trainer, tok, out_dir)
    if rank() != 0:
        return {}
    # Several processes: score with the saved model (under FSDP the trainer's weights are shards).
    scorer = RewardModelScorer(out_dir, **({} if cfg.launched else {"model": trainer.model, "tokenizer": tok}))
    acc = pair_accuracy(scorer, heldout)
    by_family = {f: pair_accuracy(scorer, [p for p in heldout if p["family"] == f])
                 for f in sorted({p["family"] for p in heldout})}
    k = max(1, len(losses) // 10)
    return {"pairs_train": len(train), "pairs_heldout": len(heldout), "steps": trainer.state.global_step,
            "loss_first_10pct": sum(losses[:k]) / k, "loss_last_10pct": sum(losses[-k:]) / k,
            "heldout_pair_accuracy": acc, **{f"heldout_pair_accuracy/{f}": v for f, v in by_family.items()}}


def pair_accuracy(scorer: "RewardModelScorer", pairs: list[dict]) -> float:
    if not pairs:
        return float("nan")
    kinds = ["instruction"] * len(pairs)
    qs = [p["question"] for p in pairs]
    chosen = scorer([p["chosen"] for p in pairs], question=qs, kind=kinds)
    rejected = scorer([p["rejected"] for p in pairs], question=qs, kind=kinds)
    return sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)


class RewardModelScorer:
    """The `helpfulness` reward: the reward model's score of (question, response) for general prompts,
    None for reasoning prompts (the rule rewards score those)."""

    __name__ = "helpfulness"

    def __init__(self, model_dir: str | Path, model=None, tokenizer=None, batch_size: int = 64):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if model is None:
            # from_pretrained would put a fresh random head on a causal LM without complaint.
            cfg = json.loads((Path(model_dir) / "config.json").read_text())
            if not any(a.endswith("ForSequenceClassification") for a in cfg.get("architectures") or []) \
                    or len(cfg.get("id2label") or {"0": ""}) != 1:
                raise ValueError(f"{model_dir}: not a reward model (a sequence classifier with one label); "
                                 f"config.json architectures: {cfg.get('architectures')}")
        self.tok = tokenizer or AutoTokenizer.from_pretrained(str(model_dir))
        self.model = model or AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), use_safetensors=True, dtype=torch.float32)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, completions: list, question: list[str], kind: list[str] | None = None,
                 **_: Any) -> list[float | None]:
        kinds = kind or ["reasoning"] * len(completions)
        texts, where = [], []
        for i, (c, q, k) in enumerate(zip(completions, question, kinds)):
            if k == "reasoning":
                continue
            c = c if isinstance(c, str) else c[-1]["content"]
            texts.append(self.tok.apply_chat_template(
                prompt_messages(q, k) + [{"role": "assistant", "content": c.split(EOS)[0].strip()}], tokenize=False))
            where.append(i)
        out: list[float | None] = [None] * len(completions)
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        for b in range(0, len(texts), self.batch_size):
            enc = self.tok(texts[b:b + self.batch_size], return_tensors="pt", padding=True,
                           add_special_tokens=False).to(device)
            scores = self.model(**enc).logits[:, 0].float().tolist()
            for j, s in zip(where[b:b + self.batch_size], scores):
                out[j] = s
        self.model.train(was_training)
        return out


def _worker(spec: dict) -> dict:
    train, heldout = (json.loads(Path(spec[k]).read_text()) for k in ("train", "heldout"))
    return train_reward_model(RewardModelConfig.model_validate(spec["config"]), Path(spec["base"]), train, heldout,
                              Path(spec["out"]), Path(spec["work"]))


if __name__ == "__main__":
    worker_main(_worker, "Reward model on several processes (torchrun; tasks/reward_model.py launches it)")
