"""SFT, GRPO and the reward model on two processes (torchrun, gloo; DDP and FSDP2 through accelerate)
train as on one: same rollouts, same losses, weights within 1e-4; each process's colocated engine holds
the trainer's weights with no checkpoint written per step; a SIGKILLed rank fails the stage cleanly and
the re-run resumes.   pytest tests/test_multiprocess.py"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from r1flow.data.schemas import read_rows
from r1flow.data.templates import tagged_response

pytestmark = pytest.mark.slow


def weights_diff(a: Path, b: Path) -> float:
    x, y = load_file(Path(a) / "model.safetensors"), load_file(Path(b) / "model.safetensors")
    assert x.keys() == y.keys()
    return max((x[k] - y[k]).abs().max().item() for k in x)


def modes_agree(one: Path, outs: dict[str, Path], base: str, moved: float) -> None:
    """DDP's and FSDP's weights equal one process's and each other's to 1e-4, and training moved them."""
    for parallel, out in outs.items():
        assert weights_diff(one, out) <= 1e-4, parallel
    assert weights_diff(outs["ddp"], outs["fsdp"]) <= 1e-4
    assert weights_diff(one, base) > moved


def _jsonl(rows: list[dict], path: Path) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _sft_samples(paths, n=8):
    rows = [r for r in read_rows(f"{paths['world']}/rl.parquet", "prompts") if r["notation"] == "sym"][:n]
    return [{"question": r["question"], "response": tagged_response(r["solution"], r["answer"]), "kind": "reasoning"}
            for r in rows]


def test_sft_on_two_processes_equals_one(smoke_run, tmp_path, worker_env):
    from r1flow.models.train.sft import SFTStageConfig, run_sft

    _, _, paths = smoke_run
    samples = _sft_samples(paths)
    kw = {"epochs": 1, "learning_rate": 5e-3, "batch_size": 4, "warmup_ratio": 0.0, "checkpoint_every": 1000}
    one = run_sft(SFTStageConfig(**kw), paths["pretrain"], samples, tmp_path / "one", tmp_path / "w1")
    data = _jsonl(samples, tmp_path / "samples.jsonl")
    outs = {}
    for parallel, accumulate in (("ddp", 2), ("fsdp", 1)):  # ddp in two micro-batches of one sample
        cfg = SFTStageConfig(**kw, nproc=2, parallel=parallel, gradient_accumulation_steps=accumulate)
        out = tmp_path / parallel
        two = worker_env("sft", cfg, {"base": str(paths["pretrain"]), "samples": data, "out": str(out)},
                         tmp_path / f"w_{parallel}")
        assert two["steps"] == one["steps"] == 2
        losses = [pq.read_table(o / "r1flow" / "metrics.parquet").column("train/loss").to_pylist()
                  for o in (tmp_path / "one", out)]
        assert losses[0][0] == pytest.approx(losses[1][0], abs=1e-5), (parallel, losses)
        outs[parallel] = out
    modes_agree(tmp_path / "one", outs, paths["pretrain"], moved=1e-3)


def test_grpo_on_two_processes_equals_one(smoke_run, tmp_path, worker_env):
    from r1flow.models.train.grpo import GRPOStageConfig, run_grpo

    recipe, _, paths = smoke_run
    rows = read_rows(f"{paths['world']}/rl.parquet", "prompts")
    kw = recipe.r1_zero.model_dump() | {"steps": 2, "learning_rate": 1e-3, "rewards": {"length": 1.0, "format": 1.0}}
    run_grpo(GRPOStageConfig(**kw), paths["pretrain"], rows, tmp_path / "one", tmp_path / "w1")
    prompts = _jsonl(rows, tmp_path / "prompts.jsonl")
    ref = pq.read_table(tmp_path / "one" / "r1flow" / "rollouts.parquet").to_pylist()
    ref_m = pq.read_table(tmp_path / "one" / "r1flow" / "metrics.parquet").to_pylist()
    outs = {}
    for parallel, accumulate in (("ddp", 2), ("fsdp", 1)):  # ddp in two micro-batches of 2 completions
        cfg = GRPOStageConfig(**kw | {"nproc": 2, "parallel": parallel, "gradient_accumulation_steps": accumulate})
        out, work = tmp_path / parallel, tmp_path / f"w_{parallel}"
        worker_env("grpo", cfg, {"base": str(paths["pretrain"]), "prompts": prompts, "reward_model": None,
                                 "out": str(out)}, work)
        got = pq.read_table(out / "r1flow" / "rollouts.parquet").to_pylist()
        # The same rollouts, rewards and advantages, gathered from both processes in the one-process order.
        assert [r["completion"] for r in got] == [r["completion"] for r in ref], parallel
        assert [r["reward"] for r in got] == pytest.approx([r["reward"] for r in ref], abs=1e-6)
        assert [r["advantage"] for r in got] == pytest.approx([r["advantage"] for r in ref], abs=1e-5)
        metrics = pq.read_table(out / "r1flow" / "metrics.parquet").to_pylist()
        for a, b in zip(ref_m, metrics):
            if a["train/loss"] is not None:
                assert b["train/loss"] == pytest.approx(a["train/loss"], abs=1e-5)
        # Each process's engine held its trainer's weights before every step, synced in memory.
        assert max(m["rl/logprob_gap"] for m in metrics) <= 1e-3, parallel
        written = [str(p.relative_to(work)) for p in work.rglob("*.safetensors")]
        assert all(w.startswith("trainer/checkpoint-") for w in written), written
        outs[parallel] = out
    modes_agree(tmp_path / "one", outs, paths["pretrain"], moved=1e-4)


def test_reward_model_on_two_processes_equals_one(smoke_run, tmp_path, worker_env):
    from r1flow.models.train.reward_model import RewardModelConfig, train_reward_model

    from test_r1_path import uppercase_pairs

    _, _, paths = smoke_run
    pairs = uppercase_pairs(40, "lime rock sun moon tree leaf river stone")
    kw = {"epochs": 1, "learning_rate": 3e-3, "batch_size": 8, "max_length": 128}
    one = train_reward_model(RewardModelConfig(**kw), paths["pretrain"], pairs[:32], pairs[32:], tmp_path / "one",
                             tmp_path / "w1")
    cfg = RewardModelConfig(**kw, nproc=2)
    spec = {"base": str(paths["pretrain"]), "out": str(tmp_path / "two")}
    for name, part in (("train", pairs[:32]), ("heldout", pairs[32:])):
        spec[name] = str(tmp_path / f"{name}.json")
        Path(spec[name]).write_text(json.dumps(part))
    two = worker_env("reward_model", cfg, spec, tmp_path / "w2")
    assert two["steps"] == one["steps"] == 4
    assert two["loss_first_10pct"] == pytest.approx(one["loss_first_10pct"], abs=1e-5)
    assert two["heldout_pair_accuracy"] == one["heldout_pair_accuracy"]
    assert weights_diff(tmp_path / "one", tmp_path / "two") <= 1e-4


def _alive(marker: str) -> list[int]:
    """Processes whose command line holds `marker`."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker in (p / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


def test_a_killed_rank_fails_the_stage_cleanly_and_the_rerun_resumes(smoke_run, tmp_path, worker_env):
    from r1flow.models.train.sft import SFTStageConfig

    _, _, paths = smoke_run
    data = _jsonl(_sft_samples(paths), tmp_path / "samples.jsonl")
    cfg = SFTStageConfig(epochs=3, learning_rate=5e-3, batch_size=4, warmup_ratio=0.0, checkpoint_every=2, nproc=2)
    work, out = tmp_path / "work", tmp_path / "out"
    spec = {"base": str(paths["pretrain"]), "samples": data, "out": str(out)}
    with pytest.raises(RuntimeError, match="torchrun exited with code"):
        worker_env("sft", cfg, spec, work, kill_at=4)  # rank 1 is SIGKILLed as step 4's checkpoint starts
    assert not _alive(str(work / "spec.json")), "a worker outlived the failed stage"
    assert not (out / "model.safetensors").exists()
    summary = worker_env("sft", cfg, spec, work)
    assert summary["resumed_from_step"] in (2, 4) and summary["steps"] == 6  # 4: rank 0 finished that save first
    steps = pq.read_table(out / "r1flow" / "metrics.parquet").column("step").to_pylist()
    assert steps == [1, 2, 3, 4, 5, 6]


def test_process_settings_are_checked_before_any_work():
    from pydantic import ValidationError

    from r1flow.models.train.grpo import GRPOStageConfig
    from r1flow.models.train.lora import LoraSettings
    from r1flow.models.train.reward_model import RewardModelConfig
    from r1flow.models.train.sft import SFTStageConfig

    with pytest.raises(ValidationError, match=r"batch_size=6 must divide by nproc\*nnodes\*gradient_accumulation_steps=4"):
        SFTStageConfig(batch_size=6, nproc=2, gradient_accumulation_steps=2)
    with pytest.raises(ValidationError, match=r"batch_size=3 must divide"):
        RewardModelConfig(batch_size=3, nproc=2)
    with pytest.raises(ValidationError, match=r"prompts_per_step=3 must divide by nproc\*nnodes=2"):
        GRPOStageConfig(prompts_per_step=3, nproc=2)
    with pytest.raises(ValidationError, match=r"prompts_per_step\*num_generations=8 must divide by .*=16"):
        GRPOStageConfig(prompts_per_step=2, num_generations=4, nproc=2, gradient_accumulation_steps=8)
    with pytest.raises(ValidationError, match="lora with parallel=fsdp is not supported"):
        SFTStageConfig(nproc=2, parallel="fsdp", lora=LoraSettings())
    with pytest.raises(ValidationError, match="engine.launch_servers with nnodes > 1"):
        GRPOStageConfig(nproc=2, nnodes=2, rdzv_endpoint="node0:29500", engine={"launch_servers": 1})
    GRPOStageConfig(nproc=2, engine={"launch_servers": 1})  # one node: the first process launches, all share
    with pytest.raises(ValidationError, match="engine.tensor_parallel_size > 1 with nproc"):
        GRPOStageConfig(nproc=2, engine={"tensor_parallel_size": 2})
    with pytest.raises(ValidationError, match="nnodes=2 needs rdzv_endpoint"):
        SFTStageConfig(nnodes=2)
    assert SFTStageConfig(nproc=2, nnodes=2, node_rank=1, rdzv_endpoint="node0:29400").world_size == 4


def test_torchrun_command_carries_the_rendezvous():
    from r1flow.models.train.launch import Processes, torchrun_command

    one_node = torchrun_command(Processes(nproc=4), "m", Path("s.json"))
    assert "--standalone" in one_node and "--nproc_per_node=4" in one_node
    two = torchrun_command(Processes(nproc=8, nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29400"), "m", Path("s"))
    assert {"--nnodes=2", "--node_rank=1", "--rdzv_backend=c10d", "--rdzv_endpoint=10.0.0.1:29400"} <= set(two)
    assert two[-4:] == ["-m", "m", "--spec", "s"]
