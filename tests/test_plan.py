"""The compute/cost planner against published budgets and exact parameter counts.

    .venv/bin/python -m pytest -q tests/test_plan.py
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from r1flow import stages
from r1flow.models import plan
from r1flow.models.arch.deepseek_v3.config import FLAVORS as MOE
from r1flow.models.arch.dense import FLAVORS as DENSE
from r1flow.models.arch.dense import DenseModelConfig

from r1flow.recipe import RecipeError, load_recipe


@pytest.mark.parametrize("ref", plan.REFERENCES, ids=lambda r: r.name.split(" ")[0])
def test_planner_reproduces_published_budgets_within_5_percent(ref):
    r = plan.reproduce(ref)
    assert abs(r["rel_error_hours"]) < 0.05, r
    if ref.published_dollars:
        assert abs(r["rel_error_dollars"]) < 0.05, r


def test_deepseek_v3_pretraining_row_is_the_reports():
    # Table 1: 2664K GPU-hours of pre-training = 14.8T tokens x 180K GPU-hours per trillion.
    r = plan.reproduce(plan.REFERENCES[0])
    assert r["phases"][0].gpu_hours == pytest.approx(2.664e6, rel=1e-3)
    # Longer sequences cost more per token (attention), so the extension phases cost more than
    # their token share: 126B tokens at 4K would be 22.6K GPU-hours.
    assert sum(p.gpu_hours for p in r["phases"][1:]) > 1.5 * 0.1258e12 * 180_000 / 1e12


def test_v3_parameter_counts():
    counts = MOE["v3_671b"].param_counts(vocab_size=129280)
    assert counts["total"] == pytest.approx(671e9, rel=0.01)
    assert counts["active"] == pytest.approx(37e9, rel=0.03)
    assert DENSE["llama3_405b"].param_counts(128256)["total"] == pytest.approx(405e9, rel=0.01)


@pytest.mark.parametrize("cfg", [DENSE["debug"], DenseModelConfig(arch="qwen2", hidden_size=64, num_hidden_layers=2,
                                                                   num_attention_heads=4, num_key_value_heads=2,
                                                                   intermediate_size=96, tie_word_embeddings=True)],
                         ids=["llama", "qwen2-tied"])
def test_dense_param_count_matches_transformers(cfg):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(cfg.to_hf(vocab_size=300, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    assert cfg.param_counts(300)["total"] == sum(p.numel() for p in model.parameters())


def test_moe_param_count_matches_transformers():
    from transformers import AutoModelForCausalLM

    cfg = MOE["debug"]
    model = AutoModelForCausalLM.from_config(cfg.to_hf(vocab_size=300, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    assert cfg.param_counts(300)["total"] == sum(p.numel() for p in model.parameters())


def test_flops_per_token_matches_a_profiled_forward():
    """6N is a count of matmul FLOPs: check the forward third of it (2N + attention / 3) against
    torch's FLOP counter on a real forward of the dense debug model."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM

    cfg, vocab, T = DENSE["debug"], 300, 128
    model = AutoModelForCausalLM.from_config(cfg.to_hf(vocab_size=vocab, bos_token_id=1, eos_token_id=2,
                                                       pad_token_id=0), attn_implementation="eager")
    with FlopCounterMode(display=False) as fc:
        model(torch.randint(3, vocab, (1, T)))
    # The eager attention computes the full T x T score matrix (no causal saving): 2x our causal count.
    causal_attn_fwd = cfg.num_hidden_layers * T * cfg.num_attention_heads * 2 * cfg.head_width
    fwd_per_token = cfg.train_flops_per_token(vocab, T) / 3 + causal_attn_fwd
    assert fc.get_total_flops() / T == pytest.approx(fwd_per_token, rel=0.02)


def test_memory_follows_each_stages_processes_sharding_lora_and_micro_batches():
    from r1flow.models.train.lora import LoraSettings

    qwen = load_recipe("configs/r1_zero_qwen_math.yaml")
    model, vocab, plan_cfg = qwen.pretrain.model, qwen.plan.vocab_size, qwen.plan
    r = qwen.r1_zero  # 8 processes, fsdp, gradient checkpointing, 64 micro-batches

    def mem(**change):
        cfg = r.model_copy(update=change)
        return plan.training_memory_gib(model, vocab, plan_cfg, plan.training_setup(cfg, 2048, 128 + 3072))

    sharded, ddp = mem(), mem(parallel="ddp")
    for k in ("weights", "grads", "optimizer"):
        assert sharded[k] == pytest.approx(ddp[k] / 8)
    assert "gathered_layer" in sharded and "gathered_layer" not in ddp
    # checkpointing keeps each layer's input instead of its 34 x hidden bytes per token (the logits stay)
    assert mem(gradient_checkpointing=False)["activations"] > sharded["activations"] + 10
    assert mem(gradient_accumulation_steps=32)["activations"] == pytest.approx(2 * sharded["activations"])
    lora = mem(parallel="ddp", lora=LoraSettings(r=16))
    assert lora["weights"] == ddp["weights"] and lora["optimizer"] < ddp["optimizer"] / 40  # 2r/hidden = 1/48
    # The recipe fits its 8 x 80 GB; on one process (one GPU) the same stage does not, and the row says what helps.
    assert "does not fit" not in plan.format_plan("q", stages.plan(qwen), qwen.plan)
    one = qwen.model_copy(update={"r1_zero": r.model_copy(update={"nproc": 1, "parallel": "ddp"})})
    text = plan.format_plan("q", stages.plan(one), one.plan)
    assert "does not fit; more processes with parallel: fsdp" in next(ln for ln in text.splitlines()
                                                                      if ln.startswith("| r1_zero"))
    # The 671B recipe's training stages do not fit as written (README: what it lacks).
    v3 = load_recipe("configs/deepseek_r1.yaml")
    assert "does not fit" in plan.format_plan("x", stages.plan(v3), v3.plan)


@pytest.mark.parametrize("name,params,stages_run", [
    # Qwen's model cards: Qwen2.5-Math-1.5B 1.54B parameters, Qwen2.5-3B 3.09B
    ("r1_zero_qwen_math", 1.54e9, ["r1_zero", "evaluate"]),
    ("r1_zero_countdown", 3.09e9, ["r1_zero", "evaluate"]),
])
def test_gpu_byod_recipes_plan_and_fit(name, params, stages_run):
    """The bring-your-own-data GPU recipes validate, plan only R1-Zero and its evaluation (stop_after:
    r1_zero; the imported base and data cost nothing to plan), size the imported model as published,
    and fit the GPUs they name."""
    recipe = load_recipe(f"configs/{name}.yaml")
    p = stages.plan(recipe)
    assert [row.stage for row in p["stages"]] == stages_run
    assert p["params_total"] == pytest.approx(params, rel=0.01)
    assert "does not fit" not in plan.format_plan(name, p, recipe.plan)
    nodes = {s.node.key for s in stages.select(recipe) if s.mode}
    assert {"data:" + b.data for b in recipe.evaluate.benchmarks} <= nodes and "cold_start" not in nodes


def test_plan_config_errors_name_the_field(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("plan: {gpu: cpu, gpus: 4}\n")
    with pytest.raises(RecipeError, match="gpu=cpu plans one machine; got gpus=4"):
        load_recipe(p)
    p.write_text("plan: {gpu: TPU}\n")
    with pytest.raises(RecipeError, match="plan.gpu"):
        load_recipe(p)


def test_plan_after_a_run_shows_estimate_next_to_measured(smoke_run):
    from r1flow.data.store import ArtifactStore
    from r1flow.stages import latest_refs
    from r1flow.tasks.plan import measured_seconds, plan_markdown

    recipe, store_root, _ = smoke_run
    recipe = recipe.model_copy(update={"plan": plan.PlanConfig(gpu="cpu", gpus=1, peak_tflops=0.2)})
    store = ArtifactStore(str(store_root))
    refs = latest_refs(store, recipe)
    assert {"pretrain", "r1_zero", "evaluate:base", "evaluate:r1_zero"} <= set(refs)
    measured = measured_seconds(store, refs)
    # evaluate's time is the sum over the checkpoints it scored, each from its own manifest.
    assert measured["evaluate"] == pytest.approx(sum(store.manifest(refs[k].id).summary["seconds"]
                                                     for k in refs if k.startswith("evaluate:")))
    assert len([k for k in refs if k.startswith("evaluate:")]) == 9  # 6 of the R1 path, 3 of the student
    assert {"student_pretrain:qwen2_s", "distill_traces", "distill:qwen2_s", "student_rl:qwen2_s"} <= set(refs)
    estimates = {e.stage: e.wall_hours * 3600 for e in stages.plan(recipe)["stages"]}
    text = plan_markdown(recipe, refs, store)
    for stage in ("pretrain", "r1_zero", "cold_start", "sft_cold", "reasoning_rl", "rejection_sampling", "sft_mix",
                  "reward_model", "final_rl", "distill_traces", "student_pretrain", "distill", "student_rl", "evaluate"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {stage} |"))
        assert "not run" not in row
        ratio = float(row.rstrip(" |").split("|")[-1])
        assert ratio == pytest.approx(estimates[stage] / measured[stage], rel=0.01), row


def test_cli_plan_prints_the_recipe_and_the_references():
    out = subprocess.run([sys.executable, "-m", "r1flow.cli", "plan", "--recipe", "configs/deepseek_r1.yaml",
                          "--references"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| pretrain |" in out.stdout and "DeepSeek-V3 (671B MoE" in out.stdout and "Llama-3.1-405B" in out.stdout
