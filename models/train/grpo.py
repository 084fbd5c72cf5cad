"""GRPO with TRL's `GRPOTrainer` for the loss and vLLM for every rollout (stage 2, R1-Zero; reused by
the later RL stages).

TRL owns the objective: group-relative advantages, the clipped ratio, the k3 KL to the reference
model (DeepSeekMath, arXiv 2402.03300, eqs. 3-4). r1flow plugs in through TRL's `rollout_func`: each
step the vLLM engine first receives the trainer's current weights (`sync_from`: in memory in-process), then
samples G completions per prompt, and the rollout-vs-trainer log-prob gap is measured on a few of
them. A callback writes per-step metrics and every rollout (Parquet), times each phase (generation,
weight sync, rewards, training) and checkpoints are TRL's own (`save_steps`), resumed after a crash.
Under torchrun (`nproc` > 1, models/train/launch.py) each process samples its share of the step's
prompts, with the request seeds one process would give them, and the first process gathers and writes
the rollouts and metrics. This module does not know about Prefect or the artifact store.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pydantic import Field, model_validator

from r1flow.data.notation import dominant_notation
from r1flow.data.rewards import LEARNED_REWARDS, REWARDS, RewardFn, RewardTimer, with_timeout
from r1flow.data.sources import PromptSources
from r1flow.data.templates import render_prompt
from r1flow.data.verify import reasoning_text
from r1flow.data.world import INSTRUCTION_FAMILIES, REASONING_FAMILIES
from r1flow.models.rollout.engine import EngineConfig, SamplingConfig, check_checkpoint
from r1flow.models.rollout.fleet import make_engine
from r1flow.models.train import tracking
from r1flow.models.train.checkpoint import last_checkpoint, save_trained
from r1flow.models.train.launch import TrainerProcesses, global_batch_check, rank, trainer_kwargs, worker_main
from r1flow.models.train.lora import LoraSettings, lora_check


class GRPOStageConfig(PromptSources, TrainerProcesses):
    """An RL stage: GRPO hyper-parameters (names as in TRL's GRPOConfig), rewards, rollouts, and where
    its prompts come from (`datasets`, `template`: data/sources.py). `nproc`/`parallel` train it on
    several processes (models/train/launch.py), each sampling its share of the prompts on its own
    colocated engine or on the server fleet they share."""

    steps: int = Field(60, ge=1, description="Optimizer steps (one generation batch each).")
    prompts_per_step: int = Field(8, ge=1, description="Distinct prompts per step, over all processes (each "
                                                       "process samples and trains on an equal share).")
    num_generations: int = Field(8, ge=2, description="G, completions per prompt (R1: 16).")
    learning_rate: float = Field(2e-5, gt=0, lt=1, description="Constant learning rate (R1: 3e-6).")
    beta: float = Field(0.001, ge=0, description="KL coefficient to the reference model (R1: 0.001).")
    epsilon: float = Field(0.2, gt=0, description="Lower clip range of the ratio (DeepSeekMath: 0.2).")
    epsilon_high: float | None = Field(None, gt=0, description="Upper clip range (DAPO); None = epsilon.")
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field(
        "grpo", description="TRL loss aggregation; 'grpo' is DeepSeekMath's per-sequence mean.")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide advantages by the group std ('group', GRPO), the batch std, or not.")
    mask_truncated_completions: bool = Field(False, description="Leave completions cut at max length out of the loss.")
    max_completion_length: int = Field(96, ge=1, description="Longest completion in tokens.")
    temperature: float = Field(1.0, gt=0, description="Rollout temperature (R1: 1.0).")
    top_p: float = Field(1.0, gt=0, le=1, description="Rollout nucleus mass.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping.")
    rewards: dict[str, float] = Field(default_factory=lambda: {"accuracy": 1.0, "format": 1.0},
                                      description="Reward name -> weight; names from data/rewards.py.")
    reward_timeout_s: float = Field(10.0, gt=0, description="Per reward call; a timed-out call scores None.")
    reward_timeout_patience: int = Field(
        3, ge=1, description="A reward that times out on this many steps in a row stops the stage with an error "
                             "(a verifier that always hangs would otherwise train on no signal).")
    families: list[str] = Field(default_factory=lambda: ["add", "arith", "countdown"],
                                description="Task families whose RL prompts are used.")
    checkpoint_every: int = Field(20, ge=1, description="Save a resumable trainer checkpoint every N steps.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass instead of keeping them (TRL's / "
                           "transformers' gradient_checkpointing): less memory, about one more forward of compute.")
    lora: LoraSettings | None = Field(None, description="Train LoRA adapters only (PEFT); the engine samples "
                                                        "and the checkpoint holds the merged weights.")
    gap_samples: int = Field(8, ge=1, description="Completions per step on which the rollout-vs-trainer gap is measured.")
    seed: int = Field(0)
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine for rollouts.")

    @model_validator(mode="after")
    def _check(self) -> "GRPOStageConfig":
        known = set(REWARDS) | set(LEARNED_REWARDS)
        unknown = set(self.rewards) - known
        if unknown:
            raise ValueError(f"rewards: unknown reward(s) {sorted(unknown)}; known: {sorted(known)}")
        if not self.rewards:
            raise ValueError("rewards: at least one reward is needed")
        bad = set(self.families) - set(REASONING_FAMILIES + INSTRUCTION_FAMILIES)
        if bad or (not self.families and self.uses_world()):
            raise ValueError(f"families: unknown or empty {sorted(bad) or self.families}; "
                             f"known: {list(REASONING_FAMILIES + INSTRUCTION_FAMILIES)}")
        if self.max_completion_length >= self.engine.max_model_len:
            raise ValueError(f"max_completion_length ({self.max_completion_length}) leaves no room for the prompt "
                             f"in engine.max_model_len ({self.engine.max_model_len})")
        if self.prompts_per_step % self.world_size:
            raise ValueError(f"prompts_per_step={self.prompts_per_step} must divide by nproc*nnodes="
                             f"{self.world_size} (each process samples whole groups of its own prompts)")
        global_batch_check(self.prompts_per_step * self.num_generations, self, "prompts_per_step*num_generations")
        if self.launched and self.engine.tensor_parallel_size > 1:
            raise ValueError("engine.tensor_parallel_size > 1 with nproc*nnodes > 1 is not supported yet: each "
                             "process's colocated engine serves its own prompts on its own GPU")
        if self.nnodes > 1 and self.engine.launch_servers:
            raise ValueError("engine.launch_servers with nnodes > 1: the servers start on node 0's loopback, which "
                             "other nodes cannot reach; start them and list them in engine.servers")
        lora_check(self)
        return self


def grpo_args(cfg: GRPOStageConfig, output_dir: Path, gpu: bool):
    """TRL's GRPOConfig for a stage config: one generation batch (prompts_per_step x G) per optimizer step."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(output_dir), max_steps=cfg.steps,
        # TRL generates one batch of prompts_per_step x G per optimizer step (steps_per_generation defaults to
        # gradient_accumulation_steps) and trains on it in micro-batches.
        per_device_train_batch_size=cfg.micro_batch(cfg.prompts_per_step * cfg.num_generations),
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, num_generations=cfg.num_generations, learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant", warmup_steps=0, beta=cfg.beta, epsilon=cfg.epsilon,
        epsilon_high=cfg.epsilon_high, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards,
        mask_truncated_completions=cfg.mask_truncated_completions, max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature, top_p=cfg.top_p, max_grad_norm=cfg.max_grad_norm,
        reward_weights=list(cfg.rewards.values()), logging_steps=1, save_strategy="steps",
        save_steps=cfg.checkpoint_every, report_to=tracking.report_to(), use_cpu=not gpu, bf16=gpu, seed=cfg.seed,
        disable_tqdm=True, log_completions=False, save_only_model=False,
        **trainer_kwargs(cfg, cfg.gradient_checkpointing))


def build_prompt_dataset(rows: list[dict], tokenizer, cfg: GRPOStageConfig):
    import datasets

    keep = [r for r in rows if r["family"] in cfg.families or r["split"] == "import"]  # imported: chosen upstream
    if not keep:
        raise ValueError(f"no RL prompts for families {cfg.families}")
    return datasets.Dataset.from_list([{
        "prompt": render_prompt(r["question"], r["kind"], tokenizer, cfg.template),
        "id": r["id"], "family": r["family"], "answer": r["answer"], "meta": r["meta"], "kind": r["kind"],
        "notation": r["notation"], "question": r["question"]} for r in keep])


def group_advantages(total: np.ndarray, g: int, scale: str) -> np.ndarray:
    """TRL's advantage: reward minus its group mean, divided by the group (or batch) std + 1e-4."""
    grouped = total.reshape(-1, g)
    adv = grouped - np.nanmean(grouped, axis=1, keepdims=True)
    if scale == "group":
        adv = adv / (np.nanstd(grouped, axis=1, ddof=1, keepdims=True) + 1e-4)
    elif scale == "batch":
        adv = adv / (np.nanstd(total, ddof=1) + 1e-4)
    return adv.reshape(-1)


class _Recorder:
    """Per-step state shared by the rollout function, the reward wrappers and the callback."""

    def __init__(self, work: Path):
        self.work = work
        self.prompts: list[str] = []
        self.completions: list[str] = []
        self.lengths: list[int] = []
        self.truncated: list[bool] = []
        self.row_ids: list[str] = []
        self.notations: list[str] = []
        self.scores: dict[str, list] = {}
        self.gen_s = self.sync_s = self.gap = 0.0
        self.step_t0 = 0.0

    def jsonl(self, name: str) -> Path:
        return self.work / f"{name}.jsonl"

    def append(self, name: str, rows: list[dict]) -> None:
        if rank():  # several processes: the first writes (rows are gathered to it)
            return
        with open(self.jsonl(name), "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")

    def load(self, name: str, upto_step: int) -> list[dict]:
        """Rows written by an earlier (crashed) attempt, up to the checkpoint we resume from."""
        p = self.jsonl(name)
        if not p.exists():
            return []
        rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r["step"] <= upto_step]
        if not rank():
            p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return rows


@torch.no_grad()
def trainer_logprobs(model, prompt_ids: list[int], completion_ids: list[int]) -> torch.Tensor:
    """log p(completion token | prefix) under the trainer's model (float32, eval mode, no temperature)."""
    ids = torch.tensor([prompt_ids + completion_ids], device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
    model.train(was_training)
    return torch.log_softmax(logits, -1).gather(-1, ids[0, len(prompt_ids):, None]).squeeze(-1).cpu()


def run_grpo(cfg: GRPOStageConfig, base_dir: Path, prompt_rows: list[dict], out_dir: Path, work: Path,
             on_step: Callable[[dict], None] | None = None, stage: str = "grpo",
             learned_rewards: dict[str, RewardFn] | None = None) -> dict:
    """Train with GRPO from the checkpoint in `base_dir`; write a Hugging Face checkpoint to `out_dir`
    with `r1flow/metrics.parquet`, `r1flow/rollouts.parquet` and the curves. Returns the summary.
    `learned_rewards` supplies the rewards named in LEARNED_REWARDS (e.g. the reward model's scorer)."""
    cfg.check_processes(stage)
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOTrainer

    from r1flow.models.eval.plots import plot_rl_curves

    fns = {n: (learned_rewards or {}).get(n) or REWARDS.get(n) for n in cfg.rewards}
    missing = [n for n, f in fns.items() if f is None]
    if missing:
        raise ValueError(f"{stage}: reward(s) {missing} need a reward model input; this stage has none")
    work.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    dataset = build_prompt_dataset(prompt_rows, tok, cfg)
    gpu = torch.cuda.is_available()
    check_checkpoint(base_dir)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.bfloat16 if gpu else torch.float32,
                                                 use_safetensors=True)
    trainer_dir = work / "trainer"
    last = last_checkpoint(trainer_dir)
    resume_step = int(Path(last).name.split("-")[-1]) if last else 0
    rec = _Recorder(work)
    metrics = rec.load("metrics", resume_step)
    rec.load("rollouts", resume_step)  # drop rows past the checkpoint we resume from
    if last:
        print(f"[{stage}] resuming from {last} (step {resume_step})", flush=True)

    # One process: the engine starts before the trainer, as it always has (vLLM seeds torch's generator at
    # start-up, so the order is part of the run's numbers). Several: after it, because the colocated
    # engine joins the process group that the trainer's accelerate state starts (engine.py: VLLMEngine).
    engine = None if cfg.launched else make_engine(str(base_dir), cfg.engine, log_dir=work / "vllm-servers")
    world, me = cfg.world_size, rank()
    share = cfg.prompts_per_step // world  # this process's prompts: the global batch's me-th share
    sampling = SamplingConfig(n=cfg.num_generations, temperature=cfg.temperature, top_p=cfg.top_p,
                              max_tokens=cfg.max_completion_length, seed=cfg.seed)
    timer = RewardTimer()
    state = {"synced_step": 0 if not last else -1}
    sync_dir = work / "sync"

    def rollout(prompts: list[str], trainer) -> dict:
        step = trainer.state.global_step
        t0 = time.perf_counter()
        if state["synced_step"] != step:
            # The engine must hold exactly the trainer's weights before it samples: in memory for the
            # in-process engine, through `sync_dir` for a server fleet (models/rollout/fleet.py).
            engine.sync_from(trainer.model, sync_dir)
            state["synced_step"] = step
        rec.sync_s = time.perf_counter() - t0
        # TRL hands us each prompt G times in a row; sample the group in one request (shared prefix).
        uniq, counts = [], []
        for p in prompts:
            if uniq and uniq[-1] == p and counts[-1] < cfg.num_generations:
                counts[-1] += 1
            else:
                uniq.append(p)
                counts.append(1)
        t1 = time.perf_counter()
        # Request i of the global batch has seed + i however many processes share the batch, so the
        # rollouts do not depend on the process count.
        outs = engine.generate(uniq, sampling.model_copy(update={"seed": cfg.seed + 7919 * step + me * share}),
                               n=counts, logprobs=True)
        rec.gen_s = time.perf_counter() - t1
        prompt_ids, completion_ids, logprobs = [], [], []
        rec.prompts, rec.completions, rec.lengths, rec.truncated = [], [], [], []
        for p, group in zip(uniq, outs):
            for c in group:
                prompt_ids.append(c.prompt_token_ids)
                completion_ids.append(c.token_ids)
                logprobs.append(c.logprobs)
                rec.prompts.append(p)
                rec.completions.append(c.text)
                rec.lengths.append(len(c.token_ids))
                rec.truncated.append(c.finish_reason == "length")
        # Every process runs the same number of trainer forwards (under FSDP each one is a collective).
        picks = range(0, len(prompt_ids), max(1, len(prompt_ids) // cfg.gap_samples))[: cfg.gap_samples]
        gaps = [(trainer_logprobs(trainer.model, prompt_ids[i], completion_ids[i]) - torch.tensor(logprobs[i])).abs()
                for i in picks]
        gaps = [g.max() for g in gaps if g.numel()]
        rec.gap = float(torch.stack(gaps).max()) if gaps else float("nan")
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs}

    def recorded(name: str):
        fn = with_timeout(fns[name], cfg.reward_timeout_s, timer, name=name)
        streak = [0]

        def reward(completions, **columns):
            before = timer.timeouts
            out = fn(completions, **columns)
            streak[0] = streak[0] + 1 if timer.timeouts > before else 0
            if streak[0] >= cfg.reward_timeout_patience:
                raise RuntimeError(f"{stage}: reward {name!r} timed out ({cfg.reward_timeout_s}s) on {streak[0]} steps "
                                   f"in a row; fix its verifier or raise {stage}.reward_timeout_s")
            rec.scores[name] = out
            rec.row_ids, rec.notations = columns["id"], columns["notation"]
            return out

        reward.__name__ = f"{name}_reward"
        return reward

    names = list(cfg.rewards)

    class Recorder(TrainerCallback):
        """on_step_end gathers the step's rollouts and timings; the Trainer logs the step's loss, KL, clip
        ratio and entropy after it (on_log), so the step's row is written there."""

        def __init__(self):
            self.pending: dict | None = None

        def on_step_begin(self, args, state_, control, **kw):
            rec.step_t0 = time.perf_counter()

        def on_step_end(self, args, state_, control, **kw):
            step = state_.global_step
            wall = time.perf_counter() - rec.step_t0
            reward_s, timeouts = timer.take()
            local = {"scores": {n: rec.scores[n] for n in names}, "row_ids": list(rec.row_ids),
                     "prompts": rec.prompts, "completions": rec.completions, "lengths": rec.lengths,
                     "truncated": rec.truncated, "notations": list(rec.notations), "gap": rec.gap,
                     "gen_s": rec.gen_s, "sync_s": rec.sync_s, "reward_s": reward_s, "timeouts": timeouts}
            if world > 1:  # the global batch, in process order (= the one-process order), on the first process
                parts = [None] * world if me == 0 else None
                torch.distributed.gather_object(local, parts, dst=0)
                if me:
                    return
                g = {k: [x for p in parts for x in p[k]] for k in ("row_ids", "prompts", "completions", "lengths",
                                                                  "truncated", "notations")}
                g["scores"] = {n: [x for p in parts for x in p["scores"][n]] for n in names}
                # the slowest process sets the step's pace
                g |= {k: max(p[k] for p in parts) for k in ("gen_s", "sync_s", "reward_s")}
                g["timeouts"] = sum(p["timeouts"] for p in parts)
                g["gap"] = float(np.nanmax([p["gap"] for p in parts]))
                local = g
            gen_s, sync_s, reward_s, gap = local["gen_s"], local["sync_s"], local["reward_s"], local["gap"]
            comps = {n: np.array([np.nan if v is None else v for v in local["scores"][n]], dtype=float) for n in names}
            total = np.nansum(np.stack([cfg.rewards[n] * comps[n] for n in names]), axis=0)
            adv = group_advantages(total, cfg.num_generations, cfg.scale_rewards)
            completions, lengths, truncated = local["completions"], local["lengths"], local["truncated"]
            rows = [{"step": step, "problem_id": local["row_ids"][i], "prompt": local["prompts"][i],
                     "completion": completions[i], **{f"reward/{n}": _none(comps[n][i]) for n in names},
                     "reward": float(total[i]), "advantage": float(adv[i]), "length": lengths[i],
                     "truncated": truncated[i], "target_notation": local["notations"][i],
                     "reasoning_notation": dominant_notation(reasoning_text(completions[i]))}
                    for i in range(len(completions))]
            rec.append("rollouts", rows)
            m = {"step": step, "rl/reward_mean": float(np.mean(total)), "rl/reward_std": float(np.std(total)),
                 **{f"rl/reward/{n}_mean": float(np.nanmean(comps[n])) for n in names},
                 "rl/accuracy": float(np.nanmean(comps["accuracy"])) if "accuracy" in comps else None,
                 "rl/format_rate": float(np.nanmean(comps["format"])) if "format" in comps else None,
                 "rl/completion_length": float(np.mean(lengths)),
                 "rl/truncated_rate": float(np.mean(truncated)),
                 "rl/logprob_gap": gap, "rl/reward_timeouts": local["timeouts"],
                 "time/generation_s": gen_s, "time/weight_sync_s": sync_s, "time/rewards_s": reward_s,
                 "time/training_s": max(0.0, wall - gen_s - sync_s - reward_s), "time/step_s": wall}
            self.pending = m

        def on_log(self, args, state_, control, logs=None, **kw):
            m, lg = self.pending, logs or {}
            if m is None or m["step"] != state_.global_step or "loss" not in lg:
                return  # another process, or the end-of-training summary
            self.pending = None
            m |= {"rl/frac_reward_zero_std": lg.get("frac_reward_zero_std"), "rl/kl": lg.get("kl"),
                  "rl/clip_ratio": lg.get("clip_ratio/region_mean"), "rl/entropy": lg.get("entropy"),
                  "train/loss": lg.get("loss"), "train/grad_norm": lg.get("grad_norm")}
            step, gen_s, sync_s = m["step"], m["time/generation_s"], m["time/weight_sync_s"]
            gap, reward_s, wall = m["rl/logprob_gap"], m["time/rewards_s"], m["time/step_s"]
            rec.append("metrics", [m])
            metrics.append(m)
            tracking.log(m, step)
            print(f"[{stage}] step {step}/{cfg.steps} reward {m['rl/reward_mean']:.3f} acc {_fmt(m['rl/accuracy'])} "
                  f"format {_fmt(m['rl/format_rate'])} len {m['rl/completion_length']:.1f} kl {_fmt(m['rl/kl'])} "
                  f"gap {gap:.1e} | gen {gen_s:.1f}s sync {sync_s:.2f}s reward {reward_s:.2f}s "
                  f"step {wall:.1f}s", flush=True)
            if on_step:
                on_step(m)

    args = grpo_args(cfg, trainer_dir, gpu)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    trainer = GRPOTrainer(model=model, reward_funcs=[recorded(n) for n in names], args=args, train_dataset=dataset,
                          processing_class=tok, rollout_func=rollout, callbacks=[Recorder()],
                          peft_config=cfg.lora.to_peft() if cfg.lora else None)
    try:
        if engine is None:
            engine = make_engine(str(base_dir), cfg.engine, log_dir=work / "vllm-servers")
            torch.distributed.barrier()  # every engine is up (a shared fleet holds the base) before any samples
        trainer.train(resume_from_checkpoint=last)
        save_trained(trainer, tok, out_dir)  # before the engine closes: a colocated one ends the process group
    finally:
        if engine is not None:
            engine.close()
    if me:
        return {}
    extra = out_dir / "r1flow"
    extra.mkdir(exist_ok=True)
    rollouts = [json.loads(line) for line in rec.jsonl("rollouts").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(metrics), extra / "metrics.parquet")
    pq.write_table(pa.Table.from_pylist(rollouts), extra / "rollouts.parquet")
    plot_rl_curves(metrics, extra / "curves.png", title=stage)
    first, last_m = metrics[: max(1, len(metrics) // 10)], metrics[-max(1, len(metrics) // 10):]

    def avg(rows, k):
        vals = [r[k] for r in rows if r.get(k) is not None and not math.isnan(r[k])]
        return float(np.mean(vals)) if vals else None

    times = {k: avg(metrics, k) for k in ("time/generation_s", "time/weight_sync_s", "time/rewards_s",
                                          "time/training_s", "time/step_s")}
    return {"steps": cfg.steps, "rollouts": len(rollouts), "resumed_from_step": resume_step,
            "accuracy_first_10pct": avg(first, "rl/accuracy"), "accuracy_last_10pct": avg(last_m, "rl/accuracy"),
            "format_rate_first_10pct": avg(first, "rl/format_rate"), "format_rate_last_10pct": avg(last_m, "rl/format_rate"),
            "length_first_10pct": avg(first, "rl/completion_length"), "length_last_10pct": avg(last_m, "rl/completion_length"),
            "max_logprob_gap": float(np.nanmax([m["rl/logprob_gap"] for m in metrics])),
            **({"rollout_server_requests": engine.requests} if hasattr(engine, "requests") else {}),
            **{f"mean_{k.replace('/', '_')}": v for k, v in times.items()}}


def _none(x: float):
    return None if math.isnan(x) else float(x)


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _worker(spec: dict) -> dict:
    learned = {}
    if spec.get("reward_model"):
        from r1flow.models.train.reward_model import RewardModelScorer

        learned["helpfulness"] = RewardModelScorer(spec["reward_model"])
    rows = [json.loads(ln) for ln in Path(spec["prompts"]).read_text().splitlines()]
    return run_grpo(GRPOStageConfig.model_validate(spec["config"]), Path(spec["base"]), rows, Path(spec["out"]),
                    Path(spec["work"]), stage=spec["stage"], learned_rewards=learned)


if __name__ == "__main__":
    worker_main(_worker, "GRPO on several processes (torchrun; tasks/rl.py launches it)")
