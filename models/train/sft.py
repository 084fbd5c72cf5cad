"""Supervised fine-tuning with TRL's `SFTTrainer` (stages sft_cold and sft_mix of the R1 path, and
distillation into students).

Samples are prompt-completion pairs in conversational form: the prompt is the R1-Zero system message
plus the question (reasoning samples) or the question alone (instruction samples), the completion is
one assistant message. TRL renders both with the tokenizer's chat template and, with
`completion_only_loss`, puts the loss on the completion only. The project's chat template closes an
assistant message with the EOS token inside `{% generation %}`, so EOS is part of the completion and
of the loss: the model learns to stop. `sft_dataset` builds the pairs; `run_sft` trains, resumes
from TRL's last checkpoint after a crash, and writes a Hugging Face checkpoint with the loss curve.
This module does not know about Prefect or the artifact store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import ConfigDict, Field, model_validator

from r1flow.data.templates import prompt_messages
from r1flow.models.train import tracking
from r1flow.models.train.checkpoint import last_checkpoint, save_trained
from r1flow.models.train.launch import TrainerProcesses, global_batch_check, rank, trainer_kwargs, worker_main
from r1flow.models.train.lora import LoraSettings, lora_check


class SFTStageConfig(TrainerProcesses):
    """An SFT stage (names as in TRL's SFTConfig); `nproc`/`parallel` train it on several processes
    (models/train/launch.py)."""

    model_config = ConfigDict(extra="forbid")

    epochs: float = Field(2.0, gt=0, description="Passes over the data (R1's SFT on 800k samples: 2).")
    learning_rate: float = Field(1e-4, gt=0, lt=1, description="Peak learning rate (cosine decay, warmup).")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps with linear warmup (passed as "
                                                               "TrainingArguments.warmup_steps, a ratio when below 1).")
    batch_size: int = Field(16, ge=1, description="Samples per optimizer step, over all processes.")
    max_length: int = Field(512, ge=16, description="Longest prompt + completion in tokens (longer are cut).")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(100, ge=1, description="Save a resumable trainer checkpoint every N steps.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass instead of keeping them (TRL's / "
                           "transformers' gradient_checkpointing): less memory, about one more forward of compute.")
    lora: LoraSettings | None = Field(None, description="Train LoRA adapters only (PEFT); the checkpoint holds "
                                                        "the merged weights.")
    seed: int = Field(0)
    datasets: list[str] = Field(default_factory=list, description=(
        "Imported SFT sources (names in the recipe's `data:`, use: sft), added to the stage's generated data."))
    generated: bool = Field(True, description="Train on the stage's generated data (cold start, mixture, traces); "
                                              "false: on the imported `datasets` alone.")
    user_share: float | None = Field(None, gt=0, lt=1, description=(
        "Share of imported samples in the mix, reached by drawing (seeded) from the larger side; "
        "None: every sample of both."))

    @model_validator(mode="after")
    def _check(self) -> "SFTStageConfig":
        if not self.generated and not self.datasets:
            raise ValueError("generated: false needs imported `datasets` to train on")
        if self.user_share is not None and not (self.generated and self.datasets):
            raise ValueError("user_share mixes imported `datasets` with generated data: it needs both")
        global_batch_check(self.batch_size, self)
        lora_check(self)
        return self


def sft_dataset(samples: list[dict]):
    """`samples`: rows with `question`, `response` and `kind` ("reasoning" gets the R1-Zero system
    prompt, anything else is asked directly), or imported rows with `messages` (the conversation as
    written: every turn before the last assistant turn is the prompt). Returns a TRL prompt-completion
    dataset."""
    import datasets

    if not samples:
        raise ValueError("SFT needs at least one sample")
    rows = []
    for s in samples:
        if s.get("messages"):
            messages = json.loads(s["messages"])
            rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
            continue
        rows.append({"prompt": prompt_messages(s["question"], s.get("kind", "reasoning")),
                     "completion": [{"role": "assistant", "content": s["response"]}]})
    return datasets.Dataset.from_list(rows)


def mix(generated: list[dict], imported: list[dict], share: float | None, seed: int = 0) -> list[dict]:
    """Generated and imported samples; with `share`, the larger side is drawn down (seeded) so that
    imported samples make up `share` of the result."""
    import random

    if share is None or not generated or not imported:
        return generated + imported
    rng = random.Random(seed)
    if len(imported) / (len(imported) + len(generated)) > share:
        imported = rng.sample(imported, max(1, round(len(generated) * share / (1 - share))))
    else:
        generated = rng.sample(generated, max(1, round(len(imported) * (1 - share) / share)))
    return generated + imported


def run_sft(cfg: SFTStageConfig, base_dir: Path, samples: list[dict], out_dir: Path, work: Path,
            on_step: Callable[[dict], None] | None = None, stage: str = "sft") -> dict:
    """Fine-tune the checkpoint in `base_dir` on `samples`; write the checkpoint to `out_dir` with
    `r1flow/metrics.parquet` and `r1flow/loss.png`. Returns the summary."""
    cfg.check_processes(stage)
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from r1flow.models.rollout.engine import check_checkpoint
    from r1flow.models.eval.plots import plot_loss

    check_checkpoint(base_dir)
    work.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    gpu = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.bfloat16 if gpu else torch.float32,
                                                 use_safetensors=True)
    main = rank() == 0
    trainer_dir = work / "trainer"
    last = last_checkpoint(trainer_dir)
    log_file = work / "metrics.jsonl"
    if last and main:
        step0 = int(Path(last).name.split("-")[-1])
        kept = [ln for ln in log_file.read_text().splitlines() if json.loads(ln)["step"] <= step0] \
            if log_file.exists() else []
        log_file.write_text("".join(ln + "\n" for ln in kept))
        print(f"[{stage}] resuming from {last} (step {step0})", flush=True)
    elif main:
        log_file.unlink(missing_ok=True)

    class Log(TrainerCallback):  # the loss Trainer logs is already the mean over processes
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs and state.is_world_process_zero:
                m = {"step": state.global_step, "train/loss": float(logs["loss"]),
                     "train/lr": float(logs.get("learning_rate", 0.0)),
                     "train/grad_norm": float(logs.get("grad_norm", float("nan")))}
                with open(log_file, "a") as f:
                    f.write(json.dumps(m) + "\n")
                print(f"[{stage}] step {m['step']}/{state.max_steps} loss {m['train/loss']:.4f}", flush=True)
                if on_step:
                    on_step(m | {"max_steps": state.max_steps})

    args = SFTConfig(output_dir=str(trainer_dir), num_train_epochs=cfg.epochs,
                     per_device_train_batch_size=cfg.micro_batch(cfg.batch_size),
                     gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                     learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", warmup_steps=cfg.warmup_ratio,
                     weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, max_length=cfg.max_length,
                     completion_only_loss=True, packing=False, logging_steps=1, save_strategy="steps",
                     save_steps=cfg.checkpoint_every, report_to=tracking.report_to(), use_cpu=not gpu, bf16=gpu, seed=cfg.seed,
                     disable_tqdm=True, save_only_model=False, dataset_num_proc=None,
                     **trainer_kwargs(cfg, cfg.gradient_checkpointing))
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    trainer = SFTTrainer(model=model, args=args, train_dataset=sft_dataset(samples), processing_class=tok,
                         callbacks=[Log()], peft_config=cfg.lora.to_peft() if cfg.lora else None)
    # TRL drops examples whose completion truncation removed entirely (a prompt alone at max_length).
    kept = len(trainer.train_dataset)
    if kept == 0:
        raise ValueError(f"{stage}: TRL dropped all {len(samples)} samples: their prompts alone fill "
                         f"{stage}.max_length={cfg.max_length} tokens, leaving no completion to learn; raise it")
    eos_share = eos_in_loss_share(trainer, tok.eos_token_id)
    trainer.train(resume_from_checkpoint=last)
    save_trained(trainer, tok, out_dir)
    if not main:
        return {}
    extra = out_dir / "r1flow"
    extra.mkdir(exist_ok=True)
    metrics = [json.loads(ln) for ln in log_file.read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(metrics), extra / "metrics.parquet")
    plot_loss(metrics, extra / "loss.png", title=f"{stage}: training loss")
    k = max(1, len(metrics) // 10)
    return {"samples": len(samples), "samples_dropped_by_truncation": len(samples) - kept,
            "resumed_from_step": int(Path(last).name.split("-")[-1]) if last else 0,
            "steps": trainer.state.global_step, "epochs": cfg.epochs,
            "loss_first_10pct": sum(m["train/loss"] for m in metrics[:k]) / k,
            "loss_last_10pct": sum(m["train/loss"] for m in metrics[-k:]) / k,
            "eos_in_loss_share": eos_share}


def _worker(spec: dict) -> dict:
    samples = [json.loads(ln) for ln in Path(spec["samples"]).read_text().splitlines()]
    return run_sft(SFTStageConfig.model_validate(spec["config"]), Path(spec["base"]), samples, Path(spec["out"]),
                   Path(spec["work"]), stage=spec["stage"])


def eos_in_loss_share(trainer, eos_id: int) -> float:
    """Share of training examples whose loss-bearing tokens include EOS, on the tokenized data TRL
    trains on (it folds the completion mask into `labels`: -100 marks positions without loss)."""
    ds = trainer.train_dataset
    return sum(eos_id in labels for labels in ds["labels"]) / len(ds)


if __name__ == "__main__":
    worker_main(_worker, "SFT on several processes (torchrun; tasks/sft.py launches it)")
