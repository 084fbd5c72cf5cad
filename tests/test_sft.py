"""SFT with TRL's SFTTrainer: loss on completions only, EOS inside the loss, the model learns the data
and learns to stop; a killed run resumes.   pytest tests/test_sft.py"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from r1flow.data.schemas import read_rows
from r1flow.data.templates import EOS, r1_zero_messages, tagged_response
from r1flow.models.train.sft import SFTStageConfig, run_sft

pytestmark = pytest.mark.slow


def _samples(paths, n=8):
    rows = [r for r in read_rows(f"{paths['world']}/rl.parquet", "prompts") if r["notation"] == "sym"][:n]
    return [{"question": r["question"], "response": tagged_response(r["solution"], r["answer"]), "kind": "reasoning"}
            for r in rows]


def test_sft_learns_completions_and_eos(smoke_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, _, paths = smoke_run
    samples = _samples(paths)
    cfg = SFTStageConfig(epochs=20, learning_rate=5e-3, batch_size=4, warmup_ratio=0.0, checkpoint_every=1000)
    summary = run_sft(cfg, paths["pretrain"], samples, tmp_path / "out", tmp_path / "work")
    assert summary["eos_in_loss_share"] == 1.0
    assert summary["loss_last_10pct"] < 0.5 * summary["loss_first_10pct"], summary
    assert not (tmp_path / "out" / "training_args.bin").exists()
    assert pq.read_table(tmp_path / "out" / "r1flow" / "metrics.parquet").num_rows == summary["steps"]
    # Learns to stop: p(EOS | prompt + response), teacher-forced, rises several-fold over the base (the
    # smoke model is too small to reach high confidence in 80 steps; the tiny recipe is measured by evaluate).
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")

    def p_eos(path):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        ps = []
        for s in samples:
            text = tok.apply_chat_template(r1_zero_messages(s["question"]), add_generation_prompt=True,
                                           tokenize=False) + " " + s["response"]
            ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
            with torch.no_grad():
                ps.append(torch.softmax(model(ids).logits[0, -1], -1)[tok.eos_token_id].item())
        return sum(ps) / len(ps)

    before, after = p_eos(paths["pretrain"]), p_eos(tmp_path / "out")
    assert after > 5 * before, (before, after)


def test_loss_is_on_the_completion_and_its_eos_only(smoke_run, tmp_path):
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from r1flow.models.train.sft import sft_dataset

    _, _, paths = smoke_run
    tok = AutoTokenizer.from_pretrained(paths["pretrain"])
    s = _samples(paths, 1)[0]
    trainer = SFTTrainer(model=paths["pretrain"], processing_class=tok, train_dataset=sft_dataset([s]),
                         args=SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, use_cpu=True,
                                        report_to="none", max_length=512))
    ids, labels = trainer.train_dataset[0]["input_ids"], trainer.train_dataset[0]["labels"]
    assert all(lab in (t, -100) for t, lab in zip(ids, labels))
    loss_text = tok.decode([t for t, lab in zip(ids, labels) if lab != -100], skip_special_tokens=False)
    prompt_text = tok.decode([t for t, lab in zip(ids, labels) if lab == -100], skip_special_tokens=False)
    assert loss_text.strip().startswith("<think>") and s["response"] in loss_text and EOS in loss_text
    assert s["question"] in prompt_text and "<think>" not in prompt_text.split("Assistant:")[-1]


def test_gradient_checkpointing_trains_the_same_model(smoke_run, tmp_path):
    """`gradient_checkpointing: true` (TRL's, on the smoke MoE) recomputes activations in the backward pass;
    the losses and the trained weights are those of the run that keeps them."""
    from safetensors.torch import load_file

    _, _, paths = smoke_run
    samples = _samples(paths)
    runs = {}
    for gc in (False, True):
        cfg = SFTStageConfig(epochs=2, learning_rate=5e-3, batch_size=4, warmup_ratio=0.0, checkpoint_every=1000,
                             gradient_checkpointing=gc)
        out = tmp_path / f"gc{int(gc)}"
        run_sft(cfg, paths["pretrain"], samples, out, tmp_path / f"work{int(gc)}")
        runs[gc] = (pq.read_table(out / "r1flow" / "metrics.parquet").column("train/loss").to_pylist(),
                    load_file(out / "model.safetensors"))
    (loss0, w0), (loss1, w1) = runs[False], runs[True]
    assert len(loss0) == len(loss1) == 4 and max(abs(a - b) for a, b in zip(loss0, loss1)) <= 1e-5
    assert set(w0) == set(w1) and max((w0[k] - w1[k]).abs().max().item() for k in w0) <= 1e-5
    assert any((w0[k] != load_file(f"{paths['pretrain']}/model.safetensors")[k]).any() for k in w0)  # it trained
