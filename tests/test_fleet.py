"""Rollouts from 2 vLLM servers on loopback (models/rollout/fleet.py): prompts spread over both, the
returned tokens and log-probs are the trainer's, weights stay in sync after optimizer steps (broadcast over
vLLM's weight-transfer API with nothing written, or through a checkpoint directory), and a GRPO run samples
from the fleet.   pytest tests/test_fleet.py"""

from __future__ import annotations

import subprocess

import pytest
import torch

from r1flow.data.schemas import read_rows
from r1flow.models.rollout.engine import EngineConfig, SamplingConfig
from r1flow.models.rollout.fleet import ServerLaunchError, VLLMServerFleet
from r1flow.models.train.grpo import run_grpo, trainer_logprobs

pytestmark = pytest.mark.slow
ENGINE = EngineConfig(kv_cache_gib=0.25, max_model_len=256, startup_timeout_s=900)


@pytest.fixture(scope="module")
def fleet(smoke_run, tmp_path_factory):
    _, _, paths = smoke_run
    f = VLLMServerFleet(paths["pretrain"], ENGINE.model_copy(update={"launch_servers": 2}),
                        log_dir=tmp_path_factory.mktemp("vllm-servers"))
    yield f
    procs = list(f.procs)
    f.close()
    assert all(p.poll() is not None for p in procs), "a vLLM server outlived close()"


def _prompts(paths, k):
    from transformers import AutoTokenizer

    from r1flow.data.templates import r1_zero_messages

    tok = AutoTokenizer.from_pretrained(paths["pretrain"])
    rows = read_rows(f"{paths['world']}/rl.parquet", "prompts")[:k]
    return [tok.apply_chat_template(r1_zero_messages(r["question"]), add_generation_prompt=True, tokenize=False)
            for r in rows]


def test_two_servers_share_rollouts_and_hold_trainer_weights(fleet, smoke_run, tmp_path):
    from transformers import AutoModelForCausalLM

    _, _, paths = smoke_run
    assert len(fleet.urls) == 2
    model = AutoModelForCausalLM.from_pretrained(paths["pretrain"], dtype=torch.float32)
    before = list(fleet.requests)
    prompts = _prompts(paths, 4)
    outs = fleet.generate(prompts, SamplingConfig(n=3, temperature=1.0, top_p=1.0, max_tokens=24, seed=5),
                          logprobs=True)
    assert [b - a for a, b in zip(before, fleet.requests)] == [2, 2], "4 prompt groups not split 2 + 2"
    assert [len(g) for g in outs] == [3, 3, 3, 3]
    for g in outs:
        for c in g:  # token ids and sampled-token log-probs come back exactly as the trainer sees them
            assert c.token_ids and len(c.logprobs) == len(c.token_ids)
            gap = (trainer_logprobs(model, c.prompt_token_ids, c.token_ids) - torch.tensor(c.logprobs)).abs().max()
            assert gap <= 1e-3
    again = fleet.generate(prompts, SamplingConfig(n=3, temperature=1.0, top_p=1.0, max_tokens=24, seed=5))
    assert [[c.token_ids for c in g] for g in again] == [[c.token_ids for c in g] for g in outs], "seeded draw changed"

    seqs = [outs[0][0].prompt_token_ids + outs[0][0].token_ids, outs[1][0].prompt_token_ids + outs[1][0].token_ids]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.tensor([seqs[0][:32]] * 4)
    assert fleet.transfer == "gloo"  # auto on CPU
    for step, mode in enumerate(["disk", "gloo", "gloo"]):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
        fleet.transfer = mode
        fleet.sync_from(model, tmp_path / f"sync{step}")
        # disk: a checkpoint directory the servers read; gloo: broadcast to both servers, nothing written
        assert (tmp_path / f"sync{step}").exists() == (mode == "disk")
        ref = [trainer_logprobs(model, s[:1], s[1:]) for s in seqs]
        got = fleet.prompt_logprobs(seqs)  # one sequence per server
        gap = max((r - torch.tensor(g)).abs().max().item() for r, g in zip(ref, got))
        assert gap <= 1e-3, f"step {step} ({mode}): fleet vs trainer log-prob gap {gap:.2e}"
    assert fleet.broadcaster.init_s < 60
    fleet.broadcaster.close()  # the next tests' trainers open their own groups with these servers
    fleet.broadcaster = None


def test_grpo_samples_from_the_fleet(fleet, smoke_run, tmp_path):
    recipe, _, paths = smoke_run
    rows = read_rows(f"{paths['world']}/rl.parquet", "prompts")
    cfg = recipe.r1_zero.model_copy(update={"steps": 2, "engine": ENGINE.model_copy(update={"servers": fleet.urls})})
    summary = run_grpo(cfg, paths["pretrain"], rows, tmp_path / "out", tmp_path / "work")
    assert summary["max_logprob_gap"] <= 1e-3  # servers got the trainer's weights at connect and each step
    assert not (tmp_path / "work" / "sync").exists()  # broadcast: no checkpoint written to sync them
    per_server = summary["rollout_server_requests"]
    assert len(per_server) == 2 and min(per_server) >= cfg.steps * cfg.prompts_per_step // 2


def _api_servers() -> set[int]:
    from pathlib import Path

    return {int(p.parent.name) for p in Path("/proc").glob("[0-9]*/cmdline")
            if b"vllm.entrypoints.openai.api_server" in p.read_bytes()}


def test_two_training_processes_share_the_fleet(fleet, smoke_run, tmp_path, worker_env):
    """GRPO on 2 processes (DDP) samples from servers they share as 1 process does from the fixture's, with one
    sync per step: the same rollouts, the servers on the trainer's weights at every step, the same weights
    after the run. The 2 processes launch their own server (`launch_servers: 1`): the first starts it, both
    use it, and it is gone after the stage."""
    import json

    import pyarrow.parquet as pq

    from r1flow.models.train.grpo import GRPOStageConfig
    from test_multiprocess import weights_diff

    recipe, _, paths = smoke_run
    rows = read_rows(f"{paths['world']}/rl.parquet", "prompts")
    kw = recipe.r1_zero.model_dump() | {"steps": 2, "learning_rate": 1e-3, "rewards": {"length": 1.0, "format": 1.0},
                                        "engine": ENGINE.model_copy(update={"servers": fleet.urls}).model_dump()}
    run_grpo(GRPOStageConfig(**kw), paths["pretrain"], rows, tmp_path / "one", tmp_path / "w1")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = _api_servers()
    launched = ENGINE.model_copy(update={"launch_servers": 1}).model_dump()
    worker_env("grpo", GRPOStageConfig(**kw | {"nproc": 2, "engine": launched}),
               {"base": str(paths["pretrain"]), "prompts": str(prompts), "reward_model": None,
                "out": str(tmp_path / "two")}, tmp_path / "w2")
    one, two = (pq.read_table(tmp_path / d / "r1flow" / "rollouts.parquet").to_pylist() for d in ("one", "two"))
    assert [r["completion"] for r in one] == [r["completion"] for r in two]
    metrics = pq.read_table(tmp_path / "two" / "r1flow" / "metrics.parquet").to_pylist()
    assert max(m["rl/logprob_gap"] for m in metrics) <= 1e-3
    assert weights_diff(tmp_path / "one", tmp_path / "two") <= 1e-4
    assert not any(p.name == "sync" for p in tmp_path.rglob("sync"))  # neither run wrote weights to sync
    assert len(list((tmp_path / "w2" / "vllm-servers").glob("vllm-server-*.log"))) == 1  # one server, not one each
    assert _api_servers() <= before  # the first process stopped the server it launched


@pytest.mark.skipif(torch.cuda.is_available(), reason="the workaround is for vLLM's CPU platform")
def test_a_dense_model_server_serves_seeded_batches_over_the_token_budget(smoke_run, tmp_path):
    """vLLM on CPU keeps chunked prefill on for non-MLA models, and a split prompt's seeded generator
    is then rewound with an offset a CPU generator lacks. The fleet's servers get chunked prefill off
    (models/rollout/fleet.py), as the in-process engine (models/rollout/engine.py); a dense student served with a
    batch far over the token budget shows it, and the dev-mode /server_info reports the setting."""
    _, _, paths = smoke_run
    f = VLLMServerFleet(paths["student_pretrain:qwen2_s"], ENGINE.model_copy(update={"launch_servers": 1}),
                        log_dir=tmp_path / "logs")
    try:
        info = f.http.get(f"{f.urls[0]}/server_info", params={"config_format": "json"}, timeout=300)
        assert info.raise_for_status().json()["vllm_config"]["scheduler_config"]["enable_chunked_prefill"] is False
        prompts = _prompts(paths, 64)  # the smoke world's RL split: 56 prompts, ~6k tokens in one batch
        out = f.generate(prompts, SamplingConfig(n=4, max_tokens=8, temperature=1.0))
    finally:
        f.close()
    assert len(out) == len(prompts) > 40 and all(len(c) == 4 for c in out)


def test_a_server_that_cannot_start_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ServerLaunchError, match="vllm-server-0.log"):
        VLLMServerFleet(str(tmp_path), ENGINE.model_copy(update={"launch_servers": 1}), log_dir=tmp_path / "logs")
    out = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert not out.stdout.strip(), "a failed server left processes behind"


def test_servers_get_the_in_process_engines_vllm_settings():
    """One settings dict (models/rollout/engine.py: vllm_args) for both back ends: `vllm serve` parses the
    fleet's flags into the same engine arguments the in-process `LLM(**vllm_args(cfg))` gets."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from r1flow.models.rollout.engine import vllm_args
    from r1flow.models.rollout.fleet import server_flags

    cfg = ENGINE.model_copy(update={"trust_remote_code": False, "enforce_eager": True})
    kwargs = vllm_args(cfg)
    parsed = EngineArgs.from_cli_args(make_arg_parser(FlexibleArgumentParser()).parse_args(
        ["--model", "m", *server_flags(kwargs)]))
    direct = EngineArgs(model="m", **kwargs)
    for name in kwargs:
        got, want = getattr(parsed, name), getattr(direct, name)
        if name == "compilation_config":
            got, want = got.custom_ops, want.custom_ops
        assert got == want, name
    assert parsed.enable_chunked_prefill is False and parsed.kv_cache_memory_bytes == 2**28  # CPU settings
