"""Recipes: shipped ones validate; bad ones fail before any work, naming file and field.
    pytest tests/test_recipe.py"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from r1flow.recipe import RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["tiny", "smoke", "deepseek_r1", "byod_smoke"])
def test_shipped_recipes_validate(name):
    r = load_recipe(ROOT / "configs" / f"{name}.yaml")
    assert r.name == name


def test_real_scale_recipe_matches_deepseek_v3_size():
    m = load_recipe(ROOT / "configs" / "deepseek_r1.yaml").pretrain.model
    counts = m.param_counts(vocab_size=129280)  # V3's vocabulary
    assert counts["total"] == pytest.approx(671e9, rel=0.01)
    assert counts["active"] == pytest.approx(37e9, rel=0.03)


@pytest.mark.parametrize("text,fragment", [
    ("world: {corpus_docs: 100\n", "not valid YAML"),
    ("world: {bogus_field: 1}", "world.bogus_field: Extra inputs are not permitted"),
    ("pretrain: {steps: many}", "pretrain.steps: Input should be a valid integer"),
    ("pretrain: {model: {hidden_size: -8}}", "pretrain.model.hidden_size: Input should be greater than or equal to 16"),
    ("pretrain: {steps: 10, warmup_steps: 20}", "warmup_steps=20 must be below steps=10"),
    ("pretrain: {model: {n_routed_experts: 6, n_group: 4}}", "n_routed_experts=6 is not divisible by n_group=4"),
    ("evaluate: {sampling: {top_p: 1.5}}", "evaluate.sampling.top_p"),
    ("pretrain: {import_from: ./no/such/model}", "pretrain.import_from: no such file or directory"),
    ("- just\n- a list", "a recipe is a mapping"),
    ("r1_zero: {rewards: {accuracy: 1, helpful: 1}}", "r1_zero: Value error, rewards: unknown reward(s) ['helpful']"),
    ("r1_zero: {families: [add, ad]}", "r1_zero: Value error, families: unknown or empty ['ad']"),
    ("r1_zero: {max_completion_length: 600}", "leaves no room for the prompt in engine.max_model_len (512)"),
    ("pretrain: {parallel: fsdp, precision: fp8}", "parallel=fsdp with precision=fp8 is not supported yet"),
    ("pretrain: {parallel: zero3}", "pretrain.parallel: Input should be 'ddp' or 'fsdp'"),
    # Stage 9: students are dense, named once, and fit the engines that serve them.
    ("distill: {students: [{name: s, pretrain: {model: {hidden_size: 64}}}]}",
     "student 's': pretrain.model must be dense"),
    ("distill: {students: [{name: s, pretrain: {model: {arch: llama}}}]}",
     "mtp_depth=1: Multi-Token Prediction is built from DeepSeek-V3 blocks"),
    ("distill: {students: [{name: s, pretrain: {model: {arch: llama}, mtp_depth: 0}},"
     " {name: s, pretrain: {model: {arch: qwen2}, mtp_depth: 0}}]}", "students: duplicate names ['s']"),
    ("distill: {students: [{name: Big-One, pretrain: {model: {arch: llama}, mtp_depth: 0}}]}",
     "distill.students.0.name: String should match pattern"),
    ("distill: {students: [{name: s, pretrain: {model: {arch: llama, max_position_embeddings: 256}, mtp_depth: 0}}]}",
     "distill.traces.engine.max_model_len=512 exceeds distill.students.0.pretrain.model.max_position_embeddings=256"),
    ("distill: {students: [{name: s, pretrain: {import_from: ./no/such/student}}]}",
     "distill.students.0.pretrain.import_from: no such file or directory"),
    ("distill: {teacher_from: ./no/such/teacher}", "distill.teacher_from: no such file or directory"),
    ("distill: {students: [{name: s, pretrain: {model: {arch: llama}, mtp_depth: 0, precision: fp8}}]}",
     "precision=fp8 needs the MoE model"),
])
def test_bad_recipes_name_file_and_field(tmp_path, text, fragment):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert str(p) in str(e.value) and fragment in str(e.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_cli_exits_nonzero_on_invalid_recipe_before_any_work(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("pretrain:\n  lr: -1\n")
    store = tmp_path / "store"
    out = subprocess.run([sys.executable, "-m", "r1flow.cli", "run", "--recipe", str(p), "--store", str(store)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert "pretrain.lr: Input should be greater than 0" in out.stderr and str(p) in out.stderr
    assert not store.exists()  # nothing was started, not even the store
    out = subprocess.run([sys.executable, "-m", "r1flow.cli", "run", "--recipe", "configs/smoke.yaml",
                          "--from", "nonsense", "--store", str(store)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "unknown stage 'nonsense'" in out.stderr


def test_model_errors_name_the_yaml_field_once(tmp_path):
    """`model` is the MoE or, with `arch`, a dense student: an error is reported once, for the one meant."""
    p = tmp_path / "bad.yaml"
    p.write_text("pretrain: {model: {arch: llama, hidden_size: -8}}")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert str(e.value).splitlines()[1:] == ["  pretrain.model.hidden_size: Input should be greater than or equal "
                                             "to 16 (got -8)"]
