"""The one way a TRL/transformers trainer's result becomes a checkpoint artifact's payload.

`Trainer.save_model` also pickles the TrainingArguments into `training_args.bin`; artifacts hold no
pickle (data/store.py refuses them at seal and read) and the manifest already records the stage config,
so the file is removed here, once, for every trainer (SFT, GRPO, reward model).
"""

from __future__ import annotations

from pathlib import Path


def save_trained(trainer, tokenizer, out_dir: Path) -> None:
    """Model weights (safetensors) and tokenizer of `trainer` into `out_dir`, loadable by
    `AutoModelForCausalLM.from_pretrained` and vLLM."""
    from r1flow.models.train.lora import is_peft

    out_dir.mkdir(parents=True, exist_ok=True)
    if is_peft(trainer.model):  # LoRA: the merged model, an ordinary checkpoint (models/train/lora.py)
        trainer.model.merge_and_unload().save_pretrained(str(out_dir), safe_serialization=True)
    else:
        trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "training_args.bin").unlink(missing_ok=True)
