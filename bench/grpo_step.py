"""GRPO step time: r1flow's R1-Zero step (vLLM rollouts, weight sync) vs TRL's GRPOTrainer without vLLM.

    python bench/grpo_step.py [--recipe configs/tiny.yaml] [--store artifacts] [--steps 6]

Both sides train the recipe's base checkpoint (from the store; run `make run` first) on the same RL
prompts with the same GRPOConfig (`models/train/grpo.py: grpo_args`), rewards and seed, for `--steps`
optimizer steps. r1flow is `run_grpo` itself, which records generation, weight sync, rewards and
training per step. The baseline is a plain `GRPOTrainer` with TRL's own sampling (`model.generate`,
`use_vllm=False`); its generation time is measured by wrapping `generate`, rewards by wrapping the
reward functions, and training is the rest of the step. The first step of each side is a warm-up and
is left out. Targets (issue 7): r1flow at least 3x faster per step; weight sync at most 10% of a step.
Writes bench/results/grpo_step_<device>.json. Never part of the test suite.

    python bench/grpo_step.py --sync [--shape tiny|qwen2_0.5b] [--steps 4]

Weight sync from memory (what `run_grpo` does with the in-process engine, `VLLMEngine.sync_from`) vs
through a checkpoint directory per step (`save_pretrained` + `update_weights`, what it did before and
what the server fleet still does), each a full `run_grpo` with the same seed, so rollouts, rewards and
losses must match and only the sync differs. `tiny` is the recipe's base checkpoint; `qwen2_0.5b` is a
randomly initialised policy with Qwen2-0.5B's shape (d 896, 24 layers, 14/2 heads, 151,936-token
embedding, tied) and the recipe's tokenizer, with short generations. Target (issue 21): sync at most 2%
of a step. Writes bench/results/grpo_sync_<shape>_<device>.json.

    python bench/grpo_step.py --fleet [--shape tiny|qwen2_0.5b] [--steps 4]

The same comparison on a server fleet (one `vllm serve` on loopback): the trainer broadcasts its tensors
through vLLM's weight-transfer API (`engine.weight_transfer: auto`, gloo on CPU; models/rollout/transfer.py)
vs a checkpoint directory the server reloads (`disk`). Writes bench/results/grpo_fleet_sync_<shape>_<device>.json.

    python bench/grpo_step.py --processes [--shape tiny|qwen2_0.5b] [--parallel ddp|fsdp] [--steps 4]

The same `run_grpo` on one process vs two (torchrun, DDP or FSDP2, one colocated engine each;
tasks/torchrun.py `launch`), same global batch and seed, so rollouts and rewards must match: step time
and its split, and the whole run's wall time including start-up. (Two DDP replicas of the 0.5B shape,
each with its reference model, optimizer and engine, do not fit 24 GiB, nor do two FSDP2 processes:
--lora R trains adapters only on both sides, without the reference copy.)
Writes bench/results/grpo_processes_<shape>[_fsdp][_loraR]_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import OUT, base_refs, device_name

from r1flow.data.rewards import REWARDS
from r1flow.data.schemas import read_rows
from r1flow.data.store import ArtifactStore
from r1flow.models.train.grpo import build_prompt_dataset, grpo_args, run_grpo
from r1flow.recipe import load_recipe


def trl_baseline(cfg, ckpt: str, rows: list[dict], work: Path) -> list[dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOTrainer

    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    clock = {"gen": 0.0, "reward": 0.0, "t0": 0.0}
    generate = model.generate

    def timed_generate(*a, **k):
        t = time.perf_counter()
        try:
            return generate(*a, **k)
        finally:
            clock["gen"] += time.perf_counter() - t

    model.generate = timed_generate

    def timed_reward(name):
        fn = REWARDS[name]

        def reward(completions, **columns):
            t = time.perf_counter()
            try:
                return fn(completions, **columns)
            finally:
                clock["reward"] += time.perf_counter() - t

        reward.__name__ = f"{name}_reward"
        return reward

    steps: list[dict] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            clock.update(gen=0.0, reward=0.0, t0=time.perf_counter())

        def on_step_end(self, args, state, control, **k):
            wall = time.perf_counter() - clock["t0"]
            steps.append({"step": state.global_step, "step_s": wall, "generation_s": clock["gen"],
                          "rewards_s": clock["reward"], "weight_sync_s": 0.0,
                          "training_s": wall - clock["gen"] - clock["reward"]})
            print(f"[trl] step {state.global_step}: {wall:.1f}s (generation {clock['gen']:.1f}s)", flush=True)

    args = grpo_args(cfg, work / "trl", gpu=torch.cuda.is_available())
    args.save_strategy = "no"
    trainer = GRPOTrainer(model=model, reward_funcs=[timed_reward(n) for n in cfg.rewards], args=args,
                          train_dataset=build_prompt_dataset(rows, tok, cfg), processing_class=tok, callbacks=[Clock()])
    trainer.train()
    return steps


def summarize(steps: list[dict]) -> dict:
    keep = steps[1:] or steps  # the first step is a warm-up
    out = {}
    for k in ("step_s", "generation_s", "weight_sync_s", "rewards_s", "training_s"):
        vals = [s[k] for s in keep]
        out[k] = statistics.mean(vals)
        out[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return out


QWEN2_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, max_position_embeddings=512, rope_theta=1e6,
                 tie_word_embeddings=True)


def random_policy(tokenizer_dir: str, out: Path) -> Path:
    """A randomly initialised Qwen2-0.5B-shaped checkpoint with the recipe's tokenizer (no hub here)."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN2_05B, bos_token_id=tok.bos_token_id,
                                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def sync_cfg(recipe, shape: str, steps: int, lora: int | None = None):
    # one process (tiny.yaml trains R1-Zero on 2): --processes sets its second arm's count itself
    cfg = recipe.r1_zero.model_copy(update={"steps": steps, "checkpoint_every": 10**6, "nproc": 1})
    if lora:  # adapters only: no reference copy (TRL turns the adapters off) and a small optimizer state
        from r1flow.models.train.lora import LoraSettings

        cfg = cfg.model_copy(update={"lora": LoraSettings(r=lora)})
    if shape == "qwen2_0.5b":
        cfg = cfg.model_copy(update={"prompts_per_step": 2, "num_generations": 4, "max_completion_length": 16,
                                     "engine": cfg.engine.model_copy(update={"kv_cache_gib": 1.0})})
    return cfg


def sync_arm(recipe, refs, shape: str, steps: int, policy: Path, mode: str, out: Path, lora: int | None) -> None:
    """One side of --sync: `run_grpo` with the engine synced from memory or through a checkpoint."""
    import pyarrow.parquet as pq

    from r1flow.models.rollout.engine import VLLMEngine, checkpoint_tensors
    from r1flow.models.rollout.fleet import sync_through_disk

    cfg = sync_cfg(recipe, shape, steps, lora)
    if mode == "disk":  # the sync before issue 21: a checkpoint written and re-read per step
        def disk_sync(engine, model, scratch):
            with torch.no_grad():
                sync_through_disk(engine, checkpoint_tensors(model), scratch)

        VLLMEngine.sync_from = disk_sync
    if mode.startswith("fleet"):  # one vLLM server on loopback, synced by broadcast or through a checkpoint
        transfer = "disk" if mode == "fleet_disk" else "auto"
        cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(
            update={"launch_servers": 1, "weight_transfer": transfer, "startup_timeout_s": 1800})})
    rows = read_rows(refs["world"].file("rl.parquet"), "prompts")
    with tempfile.TemporaryDirectory() as tmp:
        run_grpo(cfg, policy, rows, Path(tmp) / "out", Path(tmp) / "work")
        metrics = pq.read_table(Path(tmp) / "out" / "r1flow" / "metrics.parquet").to_pylist()
    out.write_text(json.dumps(step_rows(metrics)))


def step_rows(metrics: list[dict]) -> list[dict]:
    return [{"step": m["step"], "step_s": m["time/step_s"], "generation_s": m["time/generation_s"],
             "weight_sync_s": m["time/weight_sync_s"], "rewards_s": m["time/rewards_s"],
             "training_s": m["time/training_s"], "reward_mean": m["rl/reward_mean"],
             "loss": m["train/loss"], "logprob_gap": m["rl/logprob_gap"]} for m in metrics]


def compare_processes(recipe, refs, shape: str, steps: int, parallel: str, lora: int | None,
                      argv: list[str]) -> None:
    """--processes: one process (a child, as --sync's memory arm) vs two under torchrun."""
    import subprocess

    import pyarrow.parquet as pq

    from r1flow.tasks.torchrun import launch

    cfg = sync_cfg(recipe, shape, steps, lora)
    runs, wall = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        policy = (Path(refs["pretrain"].path) if shape == "tiny"
                  else random_policy(refs["pretrain"].path, tmp / "policy"))
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, *argv, "--arm", "memory", "--policy", str(policy),
                        "--arm-out", str(tmp / "one.json")], check=True)
        wall["1"], runs["1"] = time.perf_counter() - t, json.loads((tmp / "one.json").read_text())
        two = cfg.model_copy(update={"nproc": 2, "parallel": parallel})
        prompts = tmp / "prompts.jsonl"
        prompts.write_text("".join(json.dumps(r) + "\n" for r in read_rows(refs["world"].file("rl.parquet"),
                                                                            "prompts")))
        t = time.perf_counter()
        launch("grpo", "r1flow.models.train.grpo", two,
               {"config": two.model_dump(mode="json"), "base": str(policy), "prompts": str(prompts),
                "reward_model": None, "out": str(tmp / "out2"), "work": str(tmp / "work2"), "stage": "grpo"},
               tmp / "work2")
        wall["2"] = time.perf_counter() - t
        runs["2"] = step_rows(pq.read_table(tmp / "out2" / "r1flow" / "metrics.parquet").to_pylist())
    same = all(a["reward_mean"] == b["reward_mean"] for a, b in zip(runs["1"], runs["2"]))
    s = {n: summarize(r) for n, r in runs.items()}
    result = {"benchmark": "grpo_processes", "device": device_name(), "recipe": recipe.name, "shape": shape,
              "steps": steps, "prompts_per_step": cfg.prompts_per_step, "G": cfg.num_generations,
              "max_completion_length": cfg.max_completion_length, "parallel": parallel, "lora_r": lora,
              "one_process": s["1"], "two_processes": s["2"],
              "step_speedup": s["1"]["step_s"] / s["2"]["step_s"], "run_wall_s": wall,
              "same_rewards": same, "per_step": runs}
    OUT.mkdir(parents=True, exist_ok=True)
    tag = ("_fsdp" if parallel == "fsdp" else "") + (f"_lora{lora}" if lora else "")
    out = OUT / f"grpo_processes_{shape.replace('.', '')}{tag}_{device_name()}.json"
    out.write_text(json.dumps(result, indent=1))
    for n, label in (("1", "one process"), ("2", "two processes")):
        print(f"{label:13s} {s[n]['step_s']:.2f}s/step (gen {s[n]['generation_s']:.2f}, sync {s[n]['weight_sync_s']:.3f}, "
              f"train {s[n]['training_s']:.2f}); run {wall[n]:.0f}s with start-up")
    print(f"two processes: {result['step_speedup']:.2f}x per step; same rewards: {same}\nwrote {out}")


def compare_sync(recipe, refs, shape: str, steps: int, argv: list[str], fleet: bool = False) -> None:
    import subprocess

    cfg = sync_cfg(recipe, shape, steps)
    fast, slow = ("fleet_broadcast", "fleet_disk") if fleet else ("memory", "disk")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        policy = (Path(refs["pretrain"].path) if shape == "tiny"
                  else random_policy(refs["pretrain"].path, tmp / "policy"))
        # One process per side: two 0.5B policies, their reference models and engines do not fit 24 GiB.
        for mode in (fast, slow):
            subprocess.run([sys.executable, __file__, *argv, "--arm", mode, "--policy", str(policy),
                            "--arm-out", str(tmp / f"{mode}.json")], check=True)
            runs[mode] = json.loads((tmp / f"{mode}.json").read_text())
    same = all(a["reward_mean"] == b["reward_mean"] and a["loss"] == b["loss"]
               for a, b in zip(runs[fast], runs[slow]))
    s = {mode: summarize(r) for mode, r in runs.items()}
    result = {"benchmark": "grpo_fleet_sync" if fleet else "grpo_sync", "device": device_name(),
              "recipe": recipe.name, "shape": shape, "steps": steps,
              "prompts_per_step": cfg.prompts_per_step, "G": cfg.num_generations,
              "max_completion_length": cfg.max_completion_length, fast: s[fast], slow: s[slow],
              "sync_speedup": s[slow]["weight_sync_s"] / s[fast]["weight_sync_s"],
              "weight_sync_share": {m: s[m]["weight_sync_s"] / s[m]["step_s"] for m in s},
              "same_rewards_and_losses": same, "per_step": runs, "targets": {"weight_sync_share": 0.02}}
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"grpo_{'fleet_' if fleet else ''}sync_{shape.replace('.', '')}_{device_name()}.json"
    out.write_text(json.dumps(result, indent=1))
    for m in (fast, slow):
        print(f"{m:15s} sync {s[m]['weight_sync_s']:.3f}s of {s[m]['step_s']:.2f}s/step "
              f"({result['weight_sync_share'][m]:.1%}; gen {s[m]['generation_s']:.2f}, "
              f"train {s[m]['training_s']:.2f})")
    print(f"{fast} {result['sync_speedup']:.1f}x faster to sync; same rewards and losses: {same}\nwrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="configs/tiny.yaml")
    ap.add_argument("--store", default=None)
    ap.add_argument("--base", default=None, help="Base checkpoint directory (default: the recipe's, from the store).")
    ap.add_argument("--world", default=None, help="World artifact directory with rl.parquet (default: from the store).")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--sync", action="store_true",
                    help="Compare weight sync from memory vs a checkpoint per step.")
    ap.add_argument("--processes", action="store_true", help="Compare one training process with two (torchrun).")
    ap.add_argument("--parallel", choices=["ddp", "fsdp"], default="ddp", help="With --processes: the two's.")
    ap.add_argument("--lora", type=int, default=None, help="With --processes or --sync: LoRA rank for both sides.")
    ap.add_argument("--shape", choices=["tiny", "qwen2_0.5b"], default="tiny",
                    help="With --sync or --processes: the policy.")
    ap.add_argument("--fleet", action="store_true",
                    help="Compare a server fleet's sync by broadcast (vLLM weight transfer) vs a checkpoint per step.")
    ap.add_argument("--arm", choices=["memory", "disk", "fleet_broadcast", "fleet_disk"], help=argparse.SUPPRESS)  # --sync's child processes
    ap.add_argument("--policy", help=argparse.SUPPRESS)
    ap.add_argument("--arm-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    recipe = load_recipe(args.recipe, {"store": args.store} if args.store else None)
    store = ArtifactStore(recipe.store_root())
    refs = base_refs(store, recipe, args.base, args.world)
    if "pretrain" not in refs or "world" not in refs:
        raise SystemExit(f"no base checkpoint for {args.recipe} in {store.root}: run `make run` first")
    if args.arm:
        return sync_arm(recipe, refs, args.shape, args.steps, Path(args.policy), args.arm, Path(args.arm_out),
                        args.lora)
    if args.sync or args.fleet:
        return compare_sync(recipe, refs, args.shape, args.steps, sys.argv[1:], fleet=args.fleet)
    if args.processes:
        return compare_processes(recipe, refs, args.shape, args.steps, args.parallel, args.lora,
                                 [a for a in sys.argv[1:] if a != "--processes"])
    cfg = recipe.r1_zero.model_copy(update={"steps": args.steps, "checkpoint_every": 10**6, "nproc": 1})
    rows = read_rows(refs["world"].file("rl.parquet"), "prompts")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_grpo(cfg, Path(refs["pretrain"].path), rows, tmp / "out", tmp / "work")
        import pyarrow.parquet as pq

        ours = [{"step": m["step"], "step_s": m["time/step_s"], "generation_s": m["time/generation_s"],
                 "weight_sync_s": m["time/weight_sync_s"], "rewards_s": m["time/rewards_s"],
                 "training_s": m["time/training_s"]}
                for m in pq.read_table(tmp / "out" / "r1flow" / "metrics.parquet").to_pylist()]
        base = trl_baseline(cfg, refs["pretrain"].path, rows, tmp)
    r, t = summarize(ours), summarize(base)
    ratios = [b["step_s"] / o["step_s"] for o, b in zip(ours[1:], base[1:])]
    result = {"benchmark": "grpo_step", "device": device_name(), "recipe": recipe.name, "steps": args.steps,
              "prompts_per_step": cfg.prompts_per_step, "G": cfg.num_generations,
              "max_completion_length": cfg.max_completion_length, "r1flow": r, "trl_no_vllm": t,
              "speedup": statistics.mean(ratios), "speedup_std": statistics.stdev(ratios) if len(ratios) > 1 else 0.0,
              "weight_sync_share": r["weight_sync_s"] / r["step_s"], "per_step": {"r1flow": ours, "trl_no_vllm": base},
              "targets": {"speedup": 3.0, "weight_sync_share": 0.10}}
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"grpo_step_{device_name()}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"r1flow {r['step_s']:.2f}s/step (gen {r['generation_s']:.2f}, sync {r['weight_sync_s']:.2f}, "
          f"rewards {r['rewards_s']:.2f}, train {r['training_s']:.2f}); TRL without vLLM {t['step_s']:.2f}s/step "
          f"(gen {t['generation_s']:.2f}) -> {result['speedup']:.2f}x; sync share {result['weight_sync_share']:.1%}\n"
          f"wrote {out}")


if __name__ == "__main__":
    main()
