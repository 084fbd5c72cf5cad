"""LoRA (models/train/lora.py) on the smoke MoE: only adapters train, the base stays bit for bit, the
engine samples from the merged weights, and the stages write merged checkpoints that transformers and
vLLM load.   pytest tests/test_lora.py"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from r1flow.data.schemas import read_rows
from r1flow.models.rollout.engine import EngineConfig, VLLMEngine, checkpoint_tensors
from r1flow.models.train.lora import LoraSettings
from test_grpo import _gap, _logprobs, steps_hold_the_engine

pytestmark = pytest.mark.slow


def test_adapters_train_the_base_stays_and_the_engine_holds_the_merged_weights(smoke_run, tmp_path):
    from peft import get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    _, _, paths = smoke_run
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(paths["pretrain"], dtype=torch.float32),
                           LoraSettings(r=4, alpha=8).to_peft())
    frozen = {k: v.clone() for k, v in model.named_parameters() if not v.requires_grad}
    adapters = {k: v.clone() for k, v in model.named_parameters() if v.requires_grad}
    assert adapters and all(".lora_" in k for k in adapters)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    engine = VLLMEngine(paths["pretrain"], EngineConfig(kv_cache_gib=0.25, max_model_len=256))
    try:
        steps_hold_the_engine(model, engine, opt, 3, tmp_path / "scratch")
    finally:
        engine.close()
    # The base did not move, not even by the rounding of a merge and unmerge; every adapter did.
    params = dict(model.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in frozen.items())
    assert all(not torch.equal(params[k], v) for k, v in adapters.items() if "lora_B" in k)
    # The engine got a plain checkpoint's names: what the base checkpoint file holds.
    assert set(checkpoint_tensors(model)) == set(load_file(f"{paths['pretrain']}/model.safetensors"))
    assert not (tmp_path / "scratch").exists()


def test_lora_stages_write_merged_checkpoints(smoke_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from r1flow.models.train.grpo import run_grpo
    from r1flow.models.train.sft import SFTStageConfig, run_sft

    recipe, _, paths = smoke_run
    rows = read_rows(f"{paths['world']}/rl.parquet", "prompts")
    lora = LoraSettings(r=4, alpha=8)
    cfg = recipe.r1_zero.model_copy(update={"steps": 2, "checkpoint_every": 1000, "lora": lora,
                                            "learning_rate": 1e-2})
    summary = run_grpo(cfg, paths["pretrain"], rows, tmp_path / "rl", tmp_path / "rl-work")
    assert summary["max_logprob_gap"] <= 1e-3  # the engine sampled from the merged weights at each step
    samples = [{"question": r["question"], "response": f"<think> {r['solution']} </think> <answer> {r['answer']} "
                "</answer>", "kind": "reasoning"} for r in rows[:8]]
    sft = SFTStageConfig(epochs=4, learning_rate=1e-2, batch_size=4, warmup_ratio=0.0, checkpoint_every=1000,
                         lora=lora)
    s = run_sft(sft, paths["pretrain"], samples, tmp_path / "sft", tmp_path / "sft-work")
    assert s["loss_last_10pct"] < s["loss_first_10pct"], s
    base = AutoModelForCausalLM.from_pretrained(paths["pretrain"], dtype=torch.float32)
    seqs = [[1, 5, 9, 13, 17, 21, 25, 29]]
    for out in (tmp_path / "rl", tmp_path / "sft"):
        assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").exists()
        merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)  # an ordinary checkpoint
        assert set(merged.state_dict()) == set(base.state_dict())
    # SFT trained (the smoke policy's RL rewards rarely vary, so 2 GRPO steps may not move it), and vLLM
    # loads its merged checkpoint with the trainer's numbers.
    assert (_logprobs(merged, seqs)[0] - _logprobs(base, seqs)[0]).abs().max() > 1e-4
    engine = VLLMEngine(str(tmp_path / "sft"), EngineConfig(kv_cache_gib=0.25, max_model_len=256))
    try:
        assert _gap(merged, engine, seqs) <= 1e-3
    finally:
        engine.close()
    metrics = pq.read_table(tmp_path / "rl" / "r1flow" / "metrics.parquet").to_pylist()
    assert [m["step"] for m in metrics] == [1, 2]
